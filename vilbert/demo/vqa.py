"""VQA v2 questions and annotations about demo scenes, in the official JSON layout.

Official layout (what the VQA API and the originals' preprocessing read):
  questions file   {"info", "task_type", "data_type", "license", "data_subtype",
                    "questions": [{"image_id", "question", "question_id"}]}
  annotations file {"info", "license", "data_subtype", "data_type",
                    "annotations": [{"question_type", "multiple_choice_answer", "answers", "image_id",
                                     "answer_type", "question_id"}]}
  answers          10 x {"answer", "answer_confidence" (yes/maybe/no), "answer_id" (1..10)}
Question ids follow COCO's scheme: image_id * 1000 + k.

Question kinds: existence and spatial relation (yes/no), colour, shape, count (number) and "what is
left of / above" questions. Each question is drawn so that its wording says nothing about the
answer (a present or an absent object is asked about with the same odds, relation pairs are asked
in a random order), so a model without the picture can only learn each kind's answer prior.

Ten "human" answers per question disagree the way people do: a similar colour, a neighbouring
count, the other shape of a look-alike pair, now and then a raw spelling ("Two", "a circle",
"yes.") that the standard answer normalisation maps back. The true answer always has at least 3
votes and more than any other answer (so it is `multiple_choice_answer`), and its soft score is
usually 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .text import NAMINGS_ANY, NAMINGS_WITHOUT_COLOUR, NAMINGS_WITHOUT_SHAPE, above, article, left_of, matches, naming, phrase
from .world import COLOURS, SHAPE_PLURALS, SHAPES, SIMILAR_COLOURS, SIMILAR_SHAPES, Scene, SceneObject

QUESTION_KINDS = ("exist", "relation", "colour", "shape", "count", "spatial")
KIND_PROBS = (0.2, 0.15, 0.2, 0.15, 0.15, 0.15)
# How many of the 10 humans give the true answer (before the plurality rule may raise it). People
# agree more on yes/no questions, as in VQA v2.
TRUE_VOTES = (10, 9, 8, 7, 6, 5, 4, 3)
TRUE_VOTE_PROBS = (0.3, 0.22, 0.15, 0.11, 0.08, 0.06, 0.05, 0.03)
TRUE_VOTE_PROBS_YES_NO = (0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")

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


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _ask_exist(rng, scene: Scene):
    attributes = ("colour", "shape") if rng.random() < 0.7 else ("size", "colour", "shape")
    if rng.random() < 0.5:
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        present = True
    else:
        for _ in range(50):
            # Build a probe object from random attributes; it is absent if nothing matches it.
            shape, colour, size = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS))), int(rng.integers(2))
            probe = SceneObject(shape, colour, size, 0, 0, (0, 0, 0, 0), (), (0, 0, 0))
            if not any(matches(o, probe, attributes) for o in scene.objects):
                break
        else:
            return None
        target, present = probe, False
    text = f"Is there {article(phrase(target, attributes))}?"
    return Question(text, _yes_no(present), "is there a", "yes/no", (_yes_no(not present),))


def _ask_relation(rng, scene: Scene):
    n = len(scene.objects)
    if n < 2:
        return None
    i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    options = [r for r, ok in (("left", a.col != b.col), ("above", a.row != b.row)) if ok]
    relation = options[int(rng.integers(len(options)))]
    truth = left_of(a, b) if relation == "left" else above(a, b)
    name_a = phrase(a, naming(scene, i, NAMINGS_ANY))
    name_b = phrase(b, naming(scene, j, NAMINGS_ANY))
    words = "to the left of" if relation == "left" else "above"
    text = f"Is the {name_a} {words} the {name_b}?"
    return Question(text, _yes_no(truth), "is the", "yes/no", (_yes_no(not truth),))


def _others(scene: Scene, index: int, attribute: str, names) -> list[str]:
    return sorted({names[o.attribute(attribute)] for k, o in enumerate(scene.objects) if k != index})


def _ask_colour(rng, scene: Scene):
    for i in rng.permutation(len(scene.objects)):
        attributes = naming(scene, int(i), NAMINGS_WITHOUT_COLOUR)
        if attributes is None:
            continue
        obj = scene.objects[int(i)]
        confusions = SIMILAR_COLOURS[obj.colour_name] + tuple(_others(scene, int(i), "colour", COLOURS))
        confusions = tuple(c for c in dict.fromkeys(confusions) if c != obj.colour_name)
        return Question(f"What color is the {phrase(obj, attributes)}?", obj.colour_name, "what color is the", "other", confusions)
    return None


def _ask_shape(rng, scene: Scene):
    for i in rng.permutation(len(scene.objects)):
        attributes = naming(scene, int(i), NAMINGS_WITHOUT_SHAPE)
        if attributes is None:
            continue
        obj = scene.objects[int(i)]
        confusions = SIMILAR_SHAPES[obj.shape_name] + tuple(_others(scene, int(i), "shape", SHAPES))
        confusions = tuple(c for c in dict.fromkeys(confusions) if c != obj.shape_name)
        return Question(f"What is the shape of the {phrase(obj, attributes)}?", obj.shape_name, "what is the", "other", confusions)
    return None


def _ask_count(rng, scene: Scene):
    objs = scene.objects
    if rng.random() < 0.3:
        text, count = "How many objects are there?", len(objs)
    else:
        queries = []
        for c in range(len(COLOURS)):
            queries.append((f"How many {COLOURS[c]} objects are there?", sum(o.colour == c for o in objs)))
        for s in range(len(SHAPES)):
            queries.append((f"How many {SHAPE_PLURALS[s]} are there?", sum(o.shape == s for o in objs)))
        # Pick the count first, evenly among those the scene offers, so zeros do not swamp the answers.
        available = sorted({c for _, c in queries})
        wanted = available[int(rng.integers(len(available)))]
        hits = [q for q in queries if q[1] == wanted]
        text, count = hits[int(rng.integers(len(hits)))]
    confusions = tuple(str(c) for c in (count + 1, count - 1) if 0 <= c <= 5)
    return Question(text, str(count), "how many", "number", confusions)


def _ask_spatial(rng, scene: Scene):
    for j in rng.permutation(len(scene.objects)):
        b = scene.objects[int(j)]
        relation = "left" if rng.random() < 0.5 else "above"
        holds = left_of if relation == "left" else above
        hits = [k for k, o in enumerate(scene.objects) if holds(o, b)]
        if len(hits) != 1:
            continue
        a = scene.objects[hits[0]]
        name_b = phrase(b, naming(scene, int(j), NAMINGS_ANY))
        if relation == "left":
            confusions = SIMILAR_SHAPES[a.shape_name] + tuple(_others(scene, hits[0], "shape", SHAPES))
            confusions = tuple(c for c in dict.fromkeys(confusions) if c != a.shape_name)
            return Question(f"What shape is to the left of the {name_b}?", a.shape_name, "what", "other", confusions)
        confusions = SIMILAR_COLOURS[a.colour_name] + tuple(_others(scene, hits[0], "colour", COLOURS))
        confusions = tuple(c for c in dict.fromkeys(confusions) if c != a.colour_name)
        return Question(f"What color is the object above the {name_b}?", a.colour_name, "what color is the", "other", confusions)
    return None


ASK = {
    "exist": _ask_exist,
    "relation": _ask_relation,
    "colour": _ask_colour,
    "shape": _ask_shape,
    "count": _ask_count,
    "spatial": _ask_spatial,
}


def ask_questions(rng: np.random.Generator, scene: Scene, count: int) -> list[tuple[str, Question]]:
    """`count` different questions about a scene -> [(kind, question)]."""
    out, seen = [], set()
    for _ in range(count * 10):
        kind = QUESTION_KINDS[int(rng.choice(len(QUESTION_KINDS), p=KIND_PROBS))]
        question = ASK[kind](rng, scene)
        if question is None or question.text in seen:
            continue
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
    other answer; wrong votes come from the question's confusions."""
    confusions = list(question.confusions) or ["not sure"]
    probs = TRUE_VOTE_PROBS_YES_NO if question.answer_type == "yes/no" else TRUE_VOTE_PROBS
    true_votes = int(rng.choice(TRUE_VOTES, p=probs))
    # Raise the true votes until the wrong ones fit under it (a yes/no question needs 6+).
    while len(confusions) * (true_votes - 1) < 10 - true_votes:
        true_votes += 1
    votes = [question.answer] * true_votes
    counts = dict.fromkeys(confusions, 0)
    for _ in range(10 - true_votes):
        weights = np.array([0.0 if counts[c] >= true_votes - 1 else 1.0 for c in confusions])
        wrong = confusions[int(rng.choice(len(confusions), p=weights / weights.sum()))]
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
    for scene, image_id in zip(scenes, image_ids):
        for k, (kind, q) in enumerate(ask_questions(rng, scene, per_image)):
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
