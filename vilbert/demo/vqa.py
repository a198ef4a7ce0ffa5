"""VQA v2 questions and annotations about demo scenes, in the official JSON layout.

Official layout (what the VQA API and the originals' preprocessing read):
  questions file   {"info", "task_type", "data_type", "license", "data_subtype",
                    "questions": [{"image_id", "question", "question_id"}]}
  annotations file {"info", "license", "data_subtype", "data_type",
                    "annotations": [{"question_type", "multiple_choice_answer", "answers", "image_id",
                                     "answer_type", "question_id"}]}
  answers          10 x {"answer", "answer_confidence" (yes/maybe/no), "answer_id" (1..10)}
Question ids follow COCO's scheme: image_id * 1000 + k.

Question kinds: yes/no questions of existence ("Is there a red circle?"), of spatial relation ("Is
the star above the blue square?") and of an object's colour or shape ("Is the circle red?", "Is
the red object a square?"); open questions of colour, shape, count (number) and "what is left of /
above". A model without the picture can learn no more than each question template's answer prior
(the template is the question with its colour, shape and size words masked), so the answers are
balanced per template over each split (`AnswerBalancer`): yes and no equally often, every colour,
shape or count about as often as the scenes allow. Then the text-only model stays at the
majority answer on yes/no questions, and gains over it only 1/K of the open questions with K
answers (plus a little partial credit), so open questions are kept to a fifth of the mix.

Ten "human" answers per question disagree the way people do: another wording of the true answer
("dark blue", "rectangle"; the normalisation keeps them apart), a similar colour, a neighbouring
count, the other shape of a look-alike pair, now and then a raw spelling ("Two", "a circle",
"yes.") that the standard answer normalisation maps back. The true answer always has at least 3
votes and more than any other answer (so it is `multiple_choice_answer`), and its soft score is
usually 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .text import (
    NAMINGS_ANY, NAMINGS_WITH_COLOUR, NAMINGS_WITHOUT_COLOUR, NAMINGS_WITHOUT_SHAPE,
    above, article, left_of, matches, naming, phrase, question_template,
)
from .world import COLOURS, SHAPE_PLURALS, SHAPES, SIMILAR_COLOURS, SIMILAR_SHAPES, Scene, SceneObject

QUESTION_KINDS = ("exist", "relation", "verify", "colour", "shape", "count", "spatial")
KIND_PROBS = (0.24, 0.22, 0.32, 0.08, 0.05, 0.05, 0.04)
# How many of the 10 humans give the true answer (before the plurality rule may raise it). People
# agree more on yes/no questions, as in VQA v2.
TRUE_VOTES = (10, 9, 8, 7, 6, 5, 4, 3)
TRUE_VOTE_PROBS = (0.3, 0.22, 0.15, 0.11, 0.08, 0.06, 0.05, 0.03)
TRUE_VOTE_PROBS_YES_NO = (0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
# Most wrong votes of an open question are another wording of the true answer (more or less precise
# than the canonical one; the official normalisation keeps them apart, and none is a canonical
# answer), the others a real mistake (a similar colour, a look-alike shape, another object of the
# scene, a count off by one). Real mistakes give a fixed guess partial credit, rewordings do not.
VARIANT_VOTE_PROB = 0.7
ANSWER_VARIANTS = {
    **{c: (f"light {c}", f"dark {c}") for c in COLOURS},
    "circle": ("round", "oval"), "square": ("rectangle", "box"), "triangle": ("triangular", "pyramid"),
    "diamond": ("rhombus", "kite"), "star": ("star shape", "starfish"), "cross": ("plus", "plus sign"),
    "0": ("nothing", "no objects"), "1": ("only 1", "just 1"), "2": ("pair", "couple"), "3": ("few", "several"),
    "4": ("several", "many"), "5": ("many", "lots"),
}

INFO = {
    "description": "ViLBERT demo world: synthetic questions in the VQA v2 format (not the VQA data set)",
    "url": "https://visualqa.org/download.html",
    "version": "2.0",
    "year": 2019,
    "contributor": "vilbert.demo make-world",
    "date_created": "2019-01-01 00:00:00",
}
LICENSE = {"name": "Generated data, free to use", "url": "https://creativecommons.org/licenses/by/4.0/"}


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # canonical (already normalised) answer
    question_type: str  # the official prefix-style type, e.g. "what color is the"
    answer_type: str  # "yes/no", "number" or "other"
    confusions: tuple[str, ...]  # plausible wrong answers for the noisy human votes
    template: str  # the text with its colour, shape and size words masked (see question_template)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _question(text: str, answer: str, question_type: str, answer_type: str, confusions) -> Question:
    confusions = tuple(c for c in dict.fromkeys(confusions) if c != answer)
    return Question(text, answer, question_type, answer_type, confusions, question_template(text))


def _others(scene: Scene, index: int, attribute: str, names) -> tuple[str, ...]:
    return tuple(sorted({names[o.attribute(attribute)] for k, o in enumerate(scene.objects) if k != index}))


def _colour_confusions(scene: Scene, index: int) -> tuple[str, ...]:
    return SIMILAR_COLOURS[scene.objects[index].colour_name] + _others(scene, index, "colour", COLOURS)


def _shape_confusions(scene: Scene, index: int) -> tuple[str, ...]:
    return SIMILAR_SHAPES[scene.objects[index].shape_name] + _others(scene, index, "shape", SHAPES)


# Each kind lists candidate questions about a scene (every question of that kind the scene allows,
# except for absent objects and wrong attributes, of which a few are drawn); the balancer then
# picks one of them.

def _exist_candidates(rng, scene: Scene) -> list[Question]:
    attributes = ("colour", "shape") if rng.random() < 0.7 else ("size", "colour", "shape")
    present = {phrase(o, attributes) for o in scene.objects}
    absent = set()
    for _ in range(3):
        # A probe from random attributes; it is absent if nothing in the scene matches it.
        shape, colour, size = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(2))
        probe = SceneObject(shape, colour, size, 0, 0, (0, 0, 0, 0), (), (0, 0, 0))
        if not any(matches(o, probe, attributes) for o in scene.objects):
            absent.add(phrase(probe, attributes))
    return [
        _question(f"Is there {article(name)}?", _yes_no(truth), "is there a", "yes/no", (_yes_no(not truth),))
        for names, truth in ((present, True), (absent, False))
        for name in sorted(names)
    ]


def _relation_candidates(rng, scene: Scene) -> list[Question]:
    names = [phrase(o, naming(scene, k, NAMINGS_ANY)) for k, o in enumerate(scene.objects)]
    out = []
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i == j:
                continue
            if a.col != b.col:
                truth = _yes_no(left_of(a, b))
                out.append(_question(f"Is the {names[i]} to the left of the {names[j]}?", truth, "is the", "yes/no",
                                     (_yes_no(truth == "no"),)))
            if a.row != b.row:
                truth = _yes_no(above(a, b))
                out.append(_question(f"Is the {names[i]} above the {names[j]}?", truth, "is the", "yes/no",
                                     (_yes_no(truth == "no"),)))
    return out


def _verify_candidates(rng, scene: Scene) -> list[Question]:
    """'Is the circle red?' / 'Is the red object a square?': the asked colour (shape) is the
    object's own or a random other one."""
    out = []
    colour_first = rng.random() < 0.5
    for i, obj in enumerate(scene.objects):
        if colour_first:
            attributes = naming(scene, i, NAMINGS_WITHOUT_COLOUR)
            if attributes is None:
                continue
            other = int(rng.integers(len(COLOURS) - 1))
            for asked in (obj.colour, other + (other >= obj.colour)):
                truth = _yes_no(asked == obj.colour)
                out.append(_question(f"Is the {phrase(obj, attributes)} {COLOURS[asked]}?", truth, "is the", "yes/no",
                                     (_yes_no(truth == "no"),)))
        else:
            attributes = naming(scene, i, NAMINGS_WITHOUT_SHAPE)
            if attributes is None:
                continue
            other = int(rng.integers(len(SHAPES) - 1))
            for asked in (obj.shape, other + (other >= obj.shape)):
                truth = _yes_no(asked == obj.shape)
                out.append(_question(f"Is the {phrase(obj, attributes)} {article(SHAPES[asked])}?", truth, "is the",
                                     "yes/no", (_yes_no(truth == "no"),)))
    return out


def _colour_candidates(rng, scene: Scene) -> list[Question]:
    out = []
    for i, obj in enumerate(scene.objects):
        attributes = naming(scene, i, NAMINGS_WITHOUT_COLOUR)
        if attributes is not None:
            out.append(_question(f"What color is the {phrase(obj, attributes)}?", obj.colour_name, "what color is the",
                                 "other", _colour_confusions(scene, i)))
    return out


def _shape_candidates(rng, scene: Scene) -> list[Question]:
    out = []
    for i, obj in enumerate(scene.objects):
        attributes = naming(scene, i, NAMINGS_WITHOUT_SHAPE)
        if attributes is not None:
            out.append(_question(f"What is the shape of the {phrase(obj, attributes)}?", obj.shape_name, "what is the",
                                 "other", _shape_confusions(scene, i)))
    return out


def _count_question(text: str, count: int) -> Question:
    neighbours = tuple(str(c) for c in (count + 1, count - 1) if 0 <= c <= 5)
    return _question(text, str(count), "how many", "number", neighbours)


def _count_candidates(rng, scene: Scene) -> list[Question]:
    objs = scene.objects
    if rng.random() < 0.5:
        return [_count_question("How many objects are there?", len(objs))]
    out = [_count_question(f"How many {COLOURS[c]} objects are there?", sum(o.colour == c for o in objs))
           for c in range(len(COLOURS))]
    out += [_count_question(f"How many {SHAPE_PLURALS[s]} are there?", sum(o.shape == s for o in objs))
            for s in range(len(SHAPES))]
    return out


def _spatial_candidates(rng, scene: Scene) -> list[Question]:
    out = []
    for j, b in enumerate(scene.objects):
        # Named with its colour: a name by shape alone would say the answer is not that shape.
        name_b = phrase(b, naming(scene, j, NAMINGS_WITH_COLOUR))
        for relation, holds in (("left", left_of), ("above", above)):
            hits = [k for k, o in enumerate(scene.objects) if holds(o, b)]
            if len(hits) != 1:
                continue
            a = scene.objects[hits[0]]
            if relation == "left":
                out.append(_question(f"What shape is to the left of the {name_b}?", a.shape_name, "what", "other",
                                     _shape_confusions(scene, hits[0])))
            else:
                out.append(_question(f"What color is the object above the {name_b}?", a.colour_name,
                                     "what color is the", "other", _colour_confusions(scene, hits[0])))
    return out


CANDIDATES = {
    "exist": _exist_candidates,
    "relation": _relation_candidates,
    "verify": _verify_candidates,
    "colour": _colour_candidates,
    "shape": _shape_candidates,
    "count": _count_candidates,
    "spatial": _spatial_candidates,
}


class AnswerBalancer:
    """Keeps each question template's answers evenly spread over a split.

    A model that reads only the question can learn no more than the answer distribution of each
    template (the question with its colour, shape and size words masked), so the balancer makes
    that distribution as flat as the scenes allow: it draws a template as the scenes offer it
    (the template of a random candidate), then, among that template's candidates in this scene,
    takes an answer given least often so far for the template (ties broken at random). An answer
    that scenes rarely allow (three objects of one colour) is then taken whenever one does."""

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}

    def pick(self, rng: np.random.Generator, candidates: list[Question]) -> Question:
        template = candidates[int(rng.integers(len(candidates)))].template
        given = self.counts.setdefault(template, {})
        pool = [q for q in candidates if q.template == template]
        fewest = min(given.get(q.answer, 0) for q in pool)
        pool = [q for q in pool if given.get(q.answer, 0) == fewest]
        choice = pool[int(rng.integers(len(pool)))]
        given[choice.answer] = fewest + 1
        return choice


def ask_questions(rng: np.random.Generator, scene: Scene, count: int,
                  balancer: AnswerBalancer | None = None) -> list[tuple[str, Question]]:
    """`count` different questions about a scene -> [(kind, question)]. Pass one balancer for a
    whole split so that each template's answers are spread evenly over it."""
    balancer = balancer or AnswerBalancer()
    out, seen = [], set()
    for _ in range(count * 10):
        kind = QUESTION_KINDS[int(rng.choice(len(QUESTION_KINDS), p=KIND_PROBS))]
        candidates = [q for q in CANDIDATES[kind](rng, scene) if q.text not in seen]
        if not candidates:
            continue
        question = balancer.pick(rng, candidates)
        seen.add(question.text)
        out.append((kind, question))
        if len(out) == count:
            break
    return out


def _raw_spelling(rng, answer: str) -> str:
    """A spelling a person might type that normalises back to `answer`."""
    if answer.isdigit():
        word = NUMBER_WORDS[int(answer)]
        return (word, word.capitalize(), answer + ".")[int(rng.integers(3))]
    options = [answer.capitalize(), answer + "."]
    if answer in SHAPES:
        options.append(article(answer))
    return options[int(rng.integers(len(options)))]


def human_answers(rng: np.random.Generator, question: Question) -> list[dict]:
    """Ten noisy human answers. The true answer gets at least 3 votes and strictly more than any
    other answer; a wrong vote is another wording of the true answer (open questions, half the
    time) or one of the question's confusions."""
    confusions = list(question.confusions) or ["not sure"]
    variants = [] if question.answer_type == "yes/no" else list(ANSWER_VARIANTS.get(question.answer, ()))
    probs = TRUE_VOTE_PROBS_YES_NO if question.answer_type == "yes/no" else TRUE_VOTE_PROBS
    true_votes = int(rng.choice(TRUE_VOTES, p=probs))
    # Raise the true votes until the wrong ones fit under it (a yes/no question needs 6+).
    while len(confusions + variants) * (true_votes - 1) < 10 - true_votes:
        true_votes += 1
    votes = [question.answer] * true_votes
    counts = dict.fromkeys(confusions + variants, 0)
    for _ in range(10 - true_votes):
        pool = variants if variants and rng.random() < VARIANT_VOTE_PROB else confusions
        if all(counts[c] >= true_votes - 1 for c in pool):
            pool = list(counts)
        weights = np.array([0.0 if counts[c] >= true_votes - 1 else 1.0 for c in pool])
        wrong = pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
        counts[wrong] += 1
        votes.append(wrong)
    answers = []
    for k, vote_index in enumerate(rng.permutation(10)):
        answer = votes[int(vote_index)]
        is_true = answer == question.answer
        if rng.random() < 0.1:
            answer = _raw_spelling(rng, answer)
        confidence_p = (0.85, 0.12, 0.03) if is_true else (0.4, 0.4, 0.2)
        confidence = ("yes", "maybe", "no")[int(rng.choice(3, p=confidence_p))]
        answers.append({"answer": answer, "answer_confidence": confidence, "answer_id": k + 1})
    return answers


def build_vqa_split(rng: np.random.Generator, scenes: list[Scene], image_ids: list[int], per_image: int):
    """Questions and annotations (official dicts) for one split's scenes -> (questions, annotations,
    kinds) where kinds[k] is the question kind of questions[k]."""
    questions, annotations, kinds = [], [], []
    balancer = AnswerBalancer()
    for scene, image_id in zip(scenes, image_ids):
        for k, (kind, q) in enumerate(ask_questions(rng, scene, per_image, balancer)):
            question_id = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": q.text, "question_id": question_id})
            annotations.append(
                {
                    "question_type": q.question_type,
                    "multiple_choice_answer": q.answer,
                    "answers": human_answers(rng, q),
                    "image_id": image_id,
                    "answer_type": q.answer_type,
                    "question_id": question_id,
                }
            )
            kinds.append(kind)
    return questions, annotations, kinds


def questions_file(questions: list[dict], data_subtype: str) -> dict:
    return {
        "info": INFO,
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "license": LICENSE,
        "data_subtype": data_subtype,
        "questions": questions,
    }


def annotations_file(annotations: list[dict], data_subtype: str) -> dict:
    return {
        "info": INFO,
        "license": LICENSE,
        "data_subtype": data_subtype,
        "annotations": annotations,
        "data_type": "mscoco",
    }


_PUNCTUATION = str.maketrans("", "", ".,!?;:'\"")
_ARTICLES = {"a", "an", "the"}


def normalize_answer(answer: str) -> str:
    """The parts of the standard VQA answer normalisation the demo's raw spellings need (lower
    case, punctuation, articles, number words). The readers implement the full rules."""
    words = answer.lower().translate(_PUNCTUATION).split()
    words = [str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS else w for w in words if w not in _ARTICLES]
    return " ".join(words)


def soft_scores(answers: list[dict]) -> dict[str, float]:
    """Soft target per normalised answer, as the originals' preprocessing: 1 vote 0.3, 2 0.6,
    3 0.9, 4 or more 1.0."""
    counts: dict[str, int] = {}
    for a in answers:
        key = normalize_answer(a["answer"])
        counts[key] = counts.get(key, 0) + 1
    return {k: min(1.0, round(0.3 * c, 1)) for k, c in counts.items()}
