"""Scenes of the demo world: coloured shapes on a plain background, their pictures and their boxes.

A scene holds 2-5 objects, each one of 6 shapes x 8 colours (48 classes) in one of two sizes. The
picture is cut into a 4 x 4 grid and every object sits in its own cell, so "left of" (a smaller grid
column), "above" (a smaller grid row) and the picture quadrant of an object are never ambiguous.
Pictures are small (96-128 pixels a side, varying, so readers must use each image's own size).

Everything random is drawn from the numpy Generator handed in, so a scene is a pure function of the
generator's state, and its picture a pure function of the scene.

Class ids: 0 is background, then 1 + colour * 6 + shape. `cls_prob` rows have NUM_CLASSES = 49
columns in that order; they stand in for a detector's class posterior (REFERENCE 4: the originals
store 1601 Visual Genome classes per box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SHAPE_PLURALS = ("circles", "squares", "triangles", "diamonds", "stars", "crosses")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
# Base RGB of each colour; each object gets its own jitter around it.
COLOUR_RGB = (
    (205, 35, 35),
    (240, 135, 25),
    (235, 215, 45),
    (45, 160, 60),
    (40, 80, 210),
    (125, 55, 175),
    (240, 130, 185),
    (115, 70, 30),
)
SIZES = ("small", "large")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
NUM_CLASSES = 1 + len(COLOURS) * len(SHAPES)  # 49: background + 48 object classes
GRID = 4  # the picture is a GRID x GRID board of cells, one object per cell at most
IMAGE_SIDES = (96, 112, 128)

# Colours and shapes a human (or a detector) tends to mix up; used for noisy answers and cls_prob.
SIMILAR_COLOURS = {
    "red": ("orange", "pink", "brown"),
    "orange": ("red", "yellow", "brown"),
    "yellow": ("orange", "green"),
    "green": ("yellow", "blue"),
    "blue": ("purple", "green"),
    "purple": ("blue", "pink"),
    "pink": ("purple", "red"),
    "brown": ("orange", "red"),
}
SIMILAR_SHAPES = {
    "circle": ("square", "diamond"),
    "square": ("diamond", "circle"),
    "triangle": ("diamond", "star"),
    "diamond": ("square", "triangle"),
    "star": ("cross", "triangle"),
    "cross": ("star", "square"),
}


def class_id(colour: int, shape: int) -> int:
    """Class id (cls_prob column) of a colour/shape pair; 0 is background."""
    return 1 + colour * len(SHAPES) + shape


def class_names() -> list[str]:
    """Names of the NUM_CLASSES cls_prob columns: 'background', 'red circle', 'red square', ..."""
    return ["background"] + [f"{c} {s}" for c in COLOURS for s in SHAPES]


def _unit_polygon(shape: str) -> np.ndarray:
    """Outline of a shape in a unit box centred on 0 (y grows downwards), as (k, 2) points."""
    if shape == "circle":
        t = np.arange(32) * (2 * math.pi / 32)
        return 0.5 * np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "square":
        return np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    if shape == "triangle":
        return np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    if shape == "diamond":
        return np.array([[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]])
    if shape == "star":
        t = -math.pi / 2 + np.arange(10) * (math.pi / 5)
        radius = np.where(np.arange(10) % 2 == 0, 0.5, 0.21)
        return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    if shape == "cross":
        a, b = 1 / 6, 0.5
        return np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]]
        )
    raise ValueError(f"unknown shape {shape!r}")


UNIT_POLYGONS = {name: _unit_polygon(name) for name in SHAPES}


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene. `box` is the tight box of its outline, x1, y1, x2, y2 in pixels."""

    shape: int
    colour: int
    size: int  # 0 small, 1 large
    row: int  # grid cell, 0 = top row
    col: int  # grid cell, 0 = leftmost column
    box: tuple[float, float, float, float]
    polygon: tuple[tuple[float, float], ...]
    rgb: tuple[int, int, int]

    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape]

    @property
    def colour_name(self) -> str:
        return COLOURS[self.colour]

    @property
    def size_name(self) -> str:
        return SIZES[self.size]

    @property
    def class_id(self) -> int:
        return class_id(self.colour, self.shape)

    @property
    def class_name(self) -> str:
        return f"{self.colour_name} {self.shape_name}"

    @property
    def quadrant(self) -> int:
        """Index into QUADRANTS: which 2 x 2 block of the grid holds the object."""
        return 2 * int(self.row >= GRID // 2) + int(self.col >= GRID // 2)

    def attribute(self, name: str) -> int:
        return {"shape": self.shape, "colour": self.colour, "size": self.size}[name]


@dataclass(frozen=True)
class Scene:
    """A picture's content: its size, background and objects (in a fixed order, the box order)."""

    width: int
    height: int
    background: tuple[int, int, int]
    objects: tuple[SceneObject, ...]

    def boxes(self) -> np.ndarray:
        """(n, 4) float32 ground-truth boxes in pixels, in object order."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def to_json(self) -> dict:
        """The scene as plain JSON data (the world's ground truth, written beside each data set)."""
        return {
            "width": self.width,
            "height": self.height,
            "objects": [
                {
                    "shape": o.shape_name,
                    "color": o.colour_name,
                    "size": o.size_name,
                    "class_id": o.class_id,
                    "grid_row": o.row,
                    "grid_col": o.col,
                    "box": [round(v, 2) for v in o.box],
                }
                for o in self.objects
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Scene":
        """A scene back from its `to_json` form (scenes.json); polygons and colours are not kept
        there, so it serves the text builders, not rendering."""
        objects = tuple(
            SceneObject(SHAPES.index(o["shape"]), COLOURS.index(o["color"]), SIZES.index(o["size"]), o["grid_row"],
                        o["grid_col"], tuple(o["box"]), (), (0, 0, 0))
            for o in data["objects"]
        )
        return cls(data["width"], data["height"], (0, 0, 0), objects)


def sample_scene(
    rng: np.random.Generator,
    min_objects: int = 2,
    max_objects: int = 5,
    unique_shapes: bool = False,
    repeat_prob: float = 0.3,
) -> Scene:
    """Draw a scene. No two objects share (colour, shape, size), so every object has a description
    that picks it out. With `repeat_prob` a new object reuses the shape or the colour of one already
    placed, so counts above one and same-shape/same-colour distractors are common. With
    `unique_shapes` every shape occurs at most once (VCR-style scenes, where an object is named by
    its class)."""
    width, height = (int(v) for v in rng.choice(IMAGE_SIDES, size=2))
    cell_w, cell_h = width / GRID, height / GRID
    cell = min(cell_w, cell_h)
    n = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    background = tuple(int(v) for v in rng.integers(185, 226) + rng.integers(-8, 9, size=3))

    taken: set[tuple[int, int, int]] = set()
    objects = []
    for cell_index in cells:
        while True:
            if objects and rng.random() < repeat_prob:
                other = objects[int(rng.integers(len(objects)))]
                shape = int(rng.integers(len(SHAPES))) if rng.random() < 0.5 else other.shape
                colour = other.colour if shape != other.shape else int(rng.integers(len(COLOURS)))
            else:
                shape, colour = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS)))
            size = int(rng.integers(2))
            if unique_shapes and any(o.shape == shape for o in objects):
                continue
            if (colour, shape, size) not in taken:
                break
        taken.add((colour, shape, size))
        row, col = divmod(int(cell_index), GRID)
        side = cell * (rng.uniform(0.72, 0.86) if size else rng.uniform(0.42, 0.52))
        # Centre jittered inside the cell so the object never leaves it.
        slack_x, slack_y = (cell_w - side) / 2, (cell_h - side) / 2
        cx = (col + 0.5) * cell_w + rng.uniform(-0.8, 0.8) * slack_x
        cy = (row + 0.5) * cell_h + rng.uniform(-0.8, 0.8) * slack_y
        points = UNIT_POLYGONS[SHAPES[shape]] * side + np.array([cx, cy])
        points = np.round(points, 2)
        box = (
            float(np.floor(points[:, 0].min())),
            float(np.floor(points[:, 1].min())),
            float(np.ceil(points[:, 0].max())),
            float(np.ceil(points[:, 1].max())),
        )
        rgb = tuple(int(np.clip(c + rng.integers(-14, 15), 0, 255)) for c in COLOUR_RGB[colour])
        objects.append(
            SceneObject(shape, colour, size, row, col, box, tuple(map(tuple, points.tolist())), rgb)
        )
    return Scene(width, height, background, tuple(objects))


def render(scene: Scene) -> Image.Image:
    """Draw the scene: a plain background, then each shape as a filled polygon. (No pixel noise:
    colours already vary per object and per picture, and flat pictures make small, fast PNGs.)"""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw.polygon(obj.polygon, fill=obj.rgb)
    return image


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in (n, 4) against every box in (m, 4), x1 y1 x2 y2 pixels -> (n, m)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(1, -1, 4)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def class_posterior(rng: np.random.Generator, classes: list[tuple[int, float]], sharpness: float) -> np.ndarray:
    """A detector-like class distribution over the NUM_CLASSES columns.

    `classes` lists (class id, weight) of what the box holds (weights sum to 1; background is id 0).
    The true classes get `sharpness` added to their logits, scaled by weight; every column gets a
    little noise and a confusable class (same shape in a similar colour) gets a smaller bump, so the
    posterior is peaked on the truth but never one-hot, as a real detector's."""
    logits = rng.normal(0.0, 0.5, size=NUM_CLASSES)
    for cid, weight in classes:
        logits[cid] += sharpness * weight
        if cid > 0:
            colour, shape = divmod(cid - 1, len(SHAPES))
            similar = SIMILAR_COLOURS[COLOURS[colour]]
            confusable = class_id(COLOURS.index(similar[int(rng.integers(len(similar)))]), shape)
            logits[confusable] += rng.uniform(1.0, 2.5) * weight
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


def ground_truth_posteriors(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """(n, NUM_CLASSES) cls_prob of the ground-truth boxes: confident on each object's class."""
    rows = [class_posterior(rng, [(o.class_id, 1.0)], rng.uniform(4.5, 6.5)) for o in scene.objects]
    return np.array(rows, dtype=np.float64).reshape(-1, NUM_CLASSES)


def _jitter_box(rng, box, scale, width, height) -> np.ndarray:
    """Move each edge of `box` by a normal step of `scale` times the box side; stays in the picture."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.normal(0.0, scale, size=4) * np.array([w, h, w, h])
    out = np.array([x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3]])
    out = np.clip(out, 0, [width, height, width, height])
    if out[2] - out[0] < 2 or out[3] - out[1] < 2:
        return np.array(box, dtype=np.float64)
    return np.round(out, 1)


def detections(rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and cls_prob of an imperfect detector on the scene -> (k, 4) pixels, (k, NUM_CLASSES).

    Each object gets a well-placed box (IoU >= 0.6 with its true box) and, half of the time, a poor
    one (IoU 0.15-0.45: a shifted or partial box); the picture also gets 2-4 distractor boxes
    (empty background patches and boxes spanning two objects). The order is shuffled, so the box
    index says nothing; with the ground-truth boxes and IoU > 0.5 as the bar, picking a box needs
    both the right object and a well-placed box."""
    W, H = scene.width, scene.height
    truth = scene.boxes().astype(np.float64)
    boxes, posteriors = [], []
    for i, obj in enumerate(scene.objects):
        for _ in range(20):
            good = _jitter_box(rng, obj.box, 0.07, W, H)
            if box_iou(good[None], truth[i : i + 1])[0, 0] >= 0.6:
                break
        else:
            good = np.array(obj.box, dtype=np.float64)
        boxes.append(good)
        posteriors.append(class_posterior(rng, [(obj.class_id, 1.0)], rng.uniform(3.0, 5.5)))
        if rng.random() < 0.5:
            for _ in range(20):
                poor = _jitter_box(rng, obj.box, 0.3, W, H)
                if 0.15 <= box_iou(poor[None], truth[i : i + 1])[0, 0] <= 0.45:
                    boxes.append(poor)
                    posteriors.append(class_posterior(rng, [(obj.class_id, 0.5), (0, 0.5)], rng.uniform(3.0, 5.0)))
                    break
    for _ in range(int(rng.integers(2, 5))):
        if len(scene.objects) >= 2 and rng.random() < 0.4:
            # A box around two objects: both classes in view, neither well covered.
            i, j = rng.choice(len(scene.objects), size=2, replace=False)
            corner_min = np.minimum(truth[i, :2], truth[j, :2])
            corner_max = np.maximum(truth[i, 2:], truth[j, 2:])
            boxes.append(np.round(np.concatenate([corner_min, corner_max]), 1))
            cids = [(scene.objects[i].class_id, 0.4), (scene.objects[j].class_id, 0.4), (0, 0.2)]
            posteriors.append(class_posterior(rng, cids, rng.uniform(3.0, 5.0)))
        else:
            # A patch of background (it may graze an object, as real false positives do).
            side_w, side_h = rng.uniform(0.1, 0.3) * W, rng.uniform(0.1, 0.3) * H
            x1, y1 = rng.uniform(0, W - side_w), rng.uniform(0, H - side_h)
            boxes.append(np.round(np.array([x1, y1, x1 + side_w, y1 + side_h]), 1))
            posteriors.append(class_posterior(rng, [(0, 1.0)], rng.uniform(3.0, 5.0)))
    order = rng.permutation(len(boxes))
    return np.array(boxes)[order], np.array(posteriors)[order]
