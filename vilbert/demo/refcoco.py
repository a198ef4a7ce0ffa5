"""RefCOCO+-style referring expressions about demo scenes, in the refer toolkit's layout.

`refcoco+/refs(unc).p`: a pickle (protocol 2, as the toolkit's file) of a list of refs
  {"ref_id", "ann_id", "image_id", "category_id", "split" (train/val/testA/testB), "sent_ids",
   "file_name", "sentences": [{"tokens", "raw", "sent_id", "sent"}]}
`refcoco+/instances.json`: COCO-style {"info", "licenses", "images": [{"id", "file_name", "height", "width"}],
  "annotations": [{"id", "image_id", "category_id", "bbox" [x, y, w, h], "area", "iscrowd",
  "segmentation"}], "categories": [{"id", "name", "supercategory"}]}

As in RefCOCO+, expressions describe appearance only (no location words): colour, shape, size.
Every referred object has a look-alike in its picture (same shape in another colour, or same colour
in another shape), so the words that single it out matter. Category ids are the world's class ids
(1..48, the cls_prob columns).
"""

from __future__ import annotations

import numpy as np

from .text import NAMINGS_ANY, naming
from .world import COLOURS, SHAPES, Scene, class_names

SIZE_WORDS = (("small", "little", "tiny"), ("large", "big"))


def has_lookalike(scene: Scene, index: int) -> bool:
    obj = scene.objects[index]
    return any(
        k != index and (o.shape == obj.shape or o.colour == obj.colour) for k, o in enumerate(scene.objects)
    )


def expressions(rng: np.random.Generator, scene: Scene, index: int, count: int) -> list[str]:
    """`count` different expressions (lower case) that pick out object `index`."""
    obj = scene.objects[index]
    minimal = naming(scene, index, NAMINGS_ANY)
    # Forms in order of preference: the minimal naming, then with more attributes, then "one"
    # in place of the shape where colour (and size) alone suffice.
    forms = [minimal] + [a for a in NAMINGS_ANY if set(minimal) < set(a)]
    without_shape = naming(scene, index, (("colour",), ("size", "colour")))
    out: list[str] = []
    for _ in range(count * 10):
        if without_shape is not None and rng.random() < 0.25:
            attributes, noun = without_shape, ("one", "shape", "thing")[int(rng.integers(3))]
        else:
            attributes = forms[0] if rng.random() < 0.6 else forms[int(rng.integers(len(forms)))]
            noun = SHAPES[obj.shape]
        words = []
        if "size" in attributes:
            options = SIZE_WORDS[obj.size]
            words.append(options[int(rng.integers(len(options)))])
        if "colour" in attributes:
            words.append(COLOURS[obj.colour])
        words.append(noun)
        text = ("the " if rng.random() < 0.4 else "") + " ".join(words)
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def _polygon_area(points) -> float:
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def build_refcoco(rng: np.random.Generator, scenes_by_split: dict, image_ids_by_split: dict,
                  refs_per_image: int = 2, sentences_per_ref: int = 2) -> tuple[list[dict], dict]:
    """Refs and instances for all splits -> (refs list, instances dict)."""
    images, annotations, refs = [], [], []
    ann_id, ref_id, sent_id = 1, 0, 0
    for split, scenes in scenes_by_split.items():
        for scene, image_id in zip(scenes, image_ids_by_split[split]):
            images.append({"id": image_id, "file_name": f"{image_id}.png", "height": scene.height, "width": scene.width})
            ann_ids = []
            for obj in scene.objects:
                x1, y1, x2, y2 = obj.box
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": obj.class_id,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": round(_polygon_area(obj.polygon), 2),
                        "iscrowd": 0,
                        "segmentation": [[v for p in obj.polygon for v in p]],
                    }
                )
                ann_ids.append(ann_id)
                ann_id += 1
            candidates = [i for i in range(len(scene.objects)) if has_lookalike(scene, i)]
            candidates = candidates or list(range(len(scene.objects)))
            chosen = rng.choice(len(candidates), size=min(refs_per_image, len(candidates)), replace=False)
            for k in sorted(int(c) for c in chosen):
                index = candidates[k]
                sentences = []
                for text in expressions(rng, scene, index, sentences_per_ref):
                    raw = text[0].upper() + text[1:] if rng.random() < 0.3 else text
                    sentences.append({"tokens": text.split(), "raw": raw, "sent_id": sent_id, "sent": text})
                    sent_id += 1
                refs.append(
                    {
                        "sent_ids": [s["sent_id"] for s in sentences],
                        "file_name": f"{image_id}_{ann_ids[index]}.png",
                        "ann_id": ann_ids[index],
                        "ref_id": ref_id,
                        "image_id": image_id,
                        "split": split,
                        "sentences": sentences,
                        "category_id": scene.objects[index].class_id,
                    }
                )
                ref_id += 1
    names = class_names()
    categories = [
        {"id": cid, "name": names[cid], "supercategory": names[cid].split()[1]} for cid in range(1, len(names))
    ]
    info = {"description": "ViLBERT demo world: synthetic RefCOCO+-format expressions (not RefCOCO+)",
            "version": "1.0", "year": 2019, "date_created": "2019-01-01 00:00:00"}
    instances = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    return refs, instances
