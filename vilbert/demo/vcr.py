"""VCR-style records about demo scenes, in the layout of VCR's train.jsonl / val.jsonl.

Fields as VCR 1.0 (the ones its readers use, plus the descriptive ones): `movie`, `objects` (a class
name per ground-truth box, in box order), `img_fn`, `metadata_fn`, `img_id` ("train-12"),
`annot_id`, `question_number`, `question`, `answer_choices` (4), `answer_label`,
`rationale_choices` (4), `rationale_label`, `question_orig`, `answer_orig`, `rationale_orig`,
`answer_likelihood`, `interesting_scores`. Texts are token lists mixing words and object references,
a reference being a list of indices into `objects` (`["What", "color", "is", [2], "?"]`). The
metadata file beside each picture holds `boxes` ([x1, y1, x2, y2, score]), `segms`, `names`,
`width`, `height`, as VCR's.

VCR names the objects by their detector class ("person", "car"); here the class name of an object is
its shape, and a VCR scene has each shape at most once, so a reference names one object without
saying its colour, size or place. Two kinds of question, each with 4 answers and 4 rationales whose
distractors differ only in what the picture decides:
  colour:   "What color is [i] ?"  answers "[i] is <colour> ." (the true colour and 3 others);
            rationales "The <true colour> shape in the <quadrant> is [i] ." (the 4 quadrants).
  position: "Where is [i] ?"  answers "[i] is in the <quadrant> ." (the 4 quadrants);
            rationales "The <colour> shape in the <true quadrant> is [i] ." (4 colours).
Without the picture every choice is equally likely (25%).
"""

from __future__ import annotations

import numpy as np

from .world import COLOURS, QUADRANTS, Scene

MOVIE = "demo_world"
# Feature-store keys of VCR images, as the originals' readers compute them from img_id.
SPLIT_OFFSETS = {"train": 0, "val": 1000000, "test": 2000000}


def feature_id(img_id: str) -> int:
    """'train-12' -> 12, 'val-3' -> 1000003, 'test-5' -> 2000005 (the originals' store keys)."""
    split, number = img_id.rsplit("-", 1)
    return SPLIT_OFFSETS[split] + int(number)


def _colour_choices(rng, true_colour: int) -> tuple[list[int], int]:
    others = [c for c in range(len(COLOURS)) if c != true_colour]
    choices = [true_colour] + [others[int(k)] for k in rng.choice(len(others), size=3, replace=False)]
    order = rng.permutation(4)
    return [choices[int(k)] for k in order], int(np.flatnonzero(order == 0)[0])


def _quadrant_choices(rng, true_quadrant: int) -> tuple[list[int], int]:
    order = [int(k) for k in rng.permutation(4)]
    return order, order.index(true_quadrant)


def _words(text: str) -> list:
    return text.split()


def _rationale(colour: int, quadrant: int, ref: int) -> list:
    return ["The", COLOURS[colour], "shape", "in", "the", *_words(QUADRANTS[quadrant]), "is", [ref], "."]


def _detokenize(tokens: list, names: list[str]) -> str:
    words = [" and ".join(f"the {names[i]}" for i in t) if isinstance(t, list) else t for t in tokens]
    return " ".join(words).replace(" .", ".").replace(" ?", "?")


def build_vcr_split(rng: np.random.Generator, scenes: list[Scene], split: str, per_image: int = 2) -> list[dict]:
    """Records for one split; scene k is picture `<split>-k`. Annotation ids count up from 0."""
    records = []
    for number, scene in enumerate(scenes):
        img_id = f"{split}-{number}"
        key = feature_id(img_id)
        names = [o.shape_name for o in scene.objects]
        refs = [int(i) for i in rng.permutation(len(scene.objects))]
        for q in range(per_image):
            i = refs[q % len(refs)]
            obj = scene.objects[i]
            kind = ("colour", "position")[(q + int(rng.integers(2))) % 2]
            if kind == "colour":
                question = ["What", "color", "is", [i], "?"]
                colours, answer_label = _colour_choices(rng, obj.colour)
                answers = [[[i], "is", COLOURS[c], "."] for c in colours]
                quadrants, rationale_label = _quadrant_choices(rng, obj.quadrant)
                rationales = [_rationale(obj.colour, quad, i) for quad in quadrants]
            else:
                question = ["Where", "is", [i], "?"]
                quadrants, answer_label = _quadrant_choices(rng, obj.quadrant)
                answers = [[[i], "is", "in", "the", *_words(QUADRANTS[quad]), "."] for quad in quadrants]
                colours, rationale_label = _colour_choices(rng, obj.colour)
                rationales = [_rationale(c, obj.quadrant, i) for c in colours]
            records.append(
                {
                    "movie": MOVIE,
                    "objects": names,
                    "interesting_scores": [],
                    "answer_likelihood": "likely",
                    "img_fn": f"{MOVIE}/{key}.png",
                    "metadata_fn": f"{MOVIE}/{key}.json",
                    "answer_orig": _detokenize(answers[answer_label], names),
                    "question_orig": _detokenize(question, names),
                    "rationale_orig": _detokenize(rationales[rationale_label], names),
                    "question": question,
                    "answer_choices": answers,
                    "answer_label": answer_label,
                    "rationale_choices": rationales,
                    "rationale_label": rationale_label,
                    "img_id": img_id,
                    "question_number": q,
                    "annot_id": f"{split}-{len(records)}",
                }
            )
    return records


def metadata(scene: Scene, detector_scores: np.ndarray) -> dict:
    """The per-picture metadata file of VCR (boxes with a score, polygons, names, size)."""
    return {
        "boxes": [[*o.box, round(float(s), 4)] for o, s in zip(scene.objects, detector_scores)],
        "segms": [[[list(p) for p in o.polygon]] for o in scene.objects],
        "names": [o.shape_name for o in scene.objects],
        "width": scene.width,
        "height": scene.height,
    }
