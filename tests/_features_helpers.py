"""Small generated data for the feature tests: random records, and images of coloured shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
}
SHAPES = ("square", "circle", "triangle")


def random_record(rng, n=None, dim=16, classes=None, image_h=None, image_w=None):
    """dict(image_h, image_w, boxes (n,4) valid pixel boxes, features (n,dim) f32, cls_prob or None)."""
    n = int(rng.integers(1, 8)) if n is None else n
    image_h = int(rng.integers(20, 400)) if image_h is None else image_h
    image_w = int(rng.integers(20, 400)) if image_w is None else image_w
    x1 = rng.uniform(0, image_w / 2, n)
    y1 = rng.uniform(0, image_h / 2, n)
    x2 = x1 + rng.uniform(1, image_w / 2, n)
    y2 = y1 + rng.uniform(1, image_h / 2, n)
    boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    cls_prob = None
    if classes:
        logits = rng.standard_normal((n, classes))
        cls_prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return dict(image_h=image_h, image_w=image_w, boxes=boxes, features=features, cls_prob=cls_prob)


def write_store(path, records: dict, **writer_kwargs):
    from vilbert.features import FeatureWriter

    with FeatureWriter(path, **writer_kwargs) as writer:
        for image_id, record in records.items():
            writer.put(image_id, **record)
    return Path(path)


def draw_shape(pixels, shape, colour, x1, y1, x2, y2):
    """Paint a filled shape into the HxWx3 uint8 array inside box (x1, y1, x2, y2) (ints, exclusive)."""
    yy, xx = np.mgrid[y1:y2, x1:x2]
    cx, cy = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2
    rx, ry = (x2 - x1) / 2, (y2 - y1) / 2
    if shape == "square":
        inside = np.ones_like(xx, dtype=bool)
    elif shape == "circle":
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    else:  # triangle, apex at the top
        inside = np.abs(xx - cx) <= rx * (yy - y1 + 1) / (y2 - y1)
    region = pixels[y1:y2, x1:x2]
    region[inside] = colour


def make_shape_images(folder, count, rng, size=64, objects=(1, 3), background=(235, 235, 235)):
    """Write `count` PNG images of coloured shapes; return {image id: [(shape, colour, box), ...]}."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for index in range(count):
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[:] = background
        objs = []
        slots = rng.permutation(4)[: int(rng.integers(objects[0], objects[1] + 1))]
        for slot in slots.tolist():  # four quadrants, so objects never overlap
            side = int(rng.integers(size // 6, size // 2 - 4))
            ox = (slot % 2) * size // 2 + int(rng.integers(1, size // 2 - side))
            oy = (slot // 2) * size // 2 + int(rng.integers(1, size // 2 - side))
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            draw_shape(pixels, shape, COLOURS[colour], ox, oy, ox + side, oy + side)
            objs.append((shape, colour, [int(ox), int(oy), int(ox + side), int(oy + side)]))
        Image.fromarray(pixels).save(folder / f"{1000 + index}.png")
        scenes[str(1000 + index)] = objs
    return scenes


def write_boxes_json(path, scenes, with_cls_prob=False):
    """boxes.json for --boxes gt; cls_prob (optional) = one-hot over shape x colour classes."""
    classes = [(s, c) for s in SHAPES for c in COLOURS]
    data = {}
    for image_id, objs in scenes.items():
        entry = {"boxes": [box for _, _, box in objs]}
        if with_cls_prob:
            entry["cls_prob"] = [[1.0 if (s, c) == k else 0.0 for k in classes] for s, c, _ in objs]
        data[image_id] = entry
    Path(path).write_text(json.dumps(data))
    return Path(path)
