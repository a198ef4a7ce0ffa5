"""Words for the demo world: descriptions that pick out one object, captions of whole scenes.

All data sets share one small vocabulary (6 shapes, 8 colours, 2 sizes, "left", "above", counts),
so what a model learns from captions in pretraining carries over to questions and expressions.
"""

from __future__ import annotations

import re

import numpy as np

from .world import COLOURS, QUADRANTS, SHAPE_PLURALS, SHAPES, SIZES, Scene, SceneObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")

# Attribute sets tried, smallest first, when naming one object among the others.
NAMINGS_ANY = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))
NAMINGS_WITH_COLOUR = (("colour", "shape"), ("size", "colour", "shape"))
NAMINGS_WITHOUT_COLOUR = (("shape",), ("size", "shape"))
NAMINGS_WITHOUT_SHAPE = (("colour",), ("size", "colour"))


def phrase(obj: SceneObject, attributes, size_words=("small", "large")) -> str:
    """Noun phrase for `obj` using the named attributes: 'large red circle', 'red object'."""
    words = []
    if "size" in attributes:
        words.append(size_words[obj.size])
    if "colour" in attributes:
        words.append(obj.colour_name)
    words.append(obj.shape_name if "shape" in attributes else "object")
    return " ".join(words)


def matches(obj: SceneObject, target: SceneObject, attributes) -> bool:
    return all(obj.attribute(a) == target.attribute(a) for a in attributes)


def naming(scene: Scene, index: int, candidates=NAMINGS_ANY):
    """The first attribute set in `candidates` that picks out object `index` alone, or None."""
    target = scene.objects[index]
    for attributes in candidates:
        if sum(matches(o, target, attributes) for o in scene.objects) == 1:
            return attributes
    return None


def question_words(question: str) -> list[str]:
    """Lower-case words and numbers of a question, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", question.lower())


_MASKS = {**{c: "<color>" for c in COLOURS}, **{w: "<shape>" for w in SHAPES + SHAPE_PLURALS},
          **{z: "<size>" for z in SIZES}}


def question_template(question: str) -> str:
    """The question with its colour, shape and size words masked: 'what color is the <size> <shape>'.
    All a model can learn from a question without the picture is its template's answer prior."""
    return " ".join(_MASKS.get(w, w) for w in question_words(question))


def left_of(a: SceneObject, b: SceneObject) -> bool:
    return a.col < b.col


def above(a: SceneObject, b: SceneObject) -> bool:
    return a.row < b.row


def join_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def caption_templates(rng: np.random.Generator, scene: Scene) -> list[str]:
    """Several different lower-case captions of a scene (no final period), in a fixed order:
    every object; a relation between two objects; a count of shapes; an object and its place;
    colours only. Retrieval needs most captions to fit one picture among a hundred, so each names
    two or more things where the scene allows it."""
    objs = list(scene.objects)
    size_words = ("small", "big") if rng.random() < 0.5 else ("small", "large")
    order = rng.permutation(len(objs))
    with_size = rng.random() < 0.5
    everything = join_list(
        [article(phrase(objs[i], ("size", "colour", "shape") if with_size else ("colour", "shape"), size_words)) for i in order]
    )
    lead = ("", "there is ", "a picture of ", "a drawing of ")[int(rng.integers(4))]
    captions = [lead + everything]

    i, j = (int(v) for v in rng.choice(len(objs), size=2, replace=False))
    a, b = objs[i], objs[j]
    if a.col != b.col and (a.row == b.row or rng.random() < 0.5):
        if not left_of(a, b):
            a, b = b, a
        relation = "to the left of"
    else:  # same column, so different rows (one object per grid cell)
        if not above(a, b):
            a, b = b, a
        relation = "above"
    captions.append(f"{article(phrase(a, ('colour', 'shape')))} {relation} {article(phrase(b, ('colour', 'shape')))}")

    counts = np.bincount([o.shape for o in objs], minlength=len(SHAPES))
    parts = [
        f"{NUMBER_WORDS[c]} {SHAPE_PLURALS[s] if c > 1 else SHAPES[s]}" for s, c in enumerate(counts) if c > 0
    ]
    captions.append(f"{NUMBER_WORDS[len(objs)]} shapes: {join_list(parts)}")

    k = int(rng.integers(len(objs)))
    captions.append(f"{article(phrase(objs[k], ('size', 'colour', 'shape'), size_words))} in the {QUADRANTS[objs[k].quadrant]}")

    colours = [COLOURS[c] for c in sorted({o.colour for o in objs})]
    captions.append(f"{join_list(colours)} shapes on a gray background")
    return captions


def to_sentence(caption: str) -> str:
    """'a red circle' -> 'A red circle.' (Flickr30k captions are sentences; CC's are lower case)."""
    return caption[0].upper() + caption[1:] + "."

