"""Records of 12-in-1's added data sets about demo scenes, each in its official layout.

Every builder takes scenes (vilbert.demo.world.Scene) and a numpy Generator and returns plain
JSON-able records; vilbert.demo.twelve writes them to the official file names. Answers are decided
by the scene, never drawn at random:
  NLVR2          a statement about two pictures (counts, existence, "more ... than"), True or False
                 half of the time each.
  SNLI-VE        per picture an entailed hypothesis ("There is a red circle."), a neutral one about
                 an object present ("The red circle is the artist's favourite.": the picture cannot
                 say) and a contradicted one (either form, about an object absent).
  GQA            VQA-style questions (vilbert.demo.vqa, balanced per template) and a GQA-only kind,
                 "On which side is the ...?" (left / right); one answer each, and a full answer.
  Visual Genome  open questions only (colour, shape, count, "what is left of"), answers as the
                 release writes them ("Red.").
  FOIL           per picture a caption naming two objects, and the same caption with one shape word
                 swapped for one no object of that colour has.
  RefCOCO        appearance and place ("the red circle in the top left"); RefCOCOg a longer
                 expression with a relation to another object.
  Flickr30k Entities  captions whose noun phrases are marked with phrase ids and boxed.
  Visual7W       "Which one is the <name>?" over the picture's 4 objects.
  GuessWhat?!    yes/no questions about a hidden object until it is the only one that fits.
  VisDial        a caption and 10 rounds of questions, each with 100 answer options.
"""

from __future__ import annotations


from .text import NAMINGS_ANY, NAMINGS_WITH_COLOUR, article, caption_templates, naming, phrase
from .vqa import CANDIDATES, AnswerBalancer, _question, ask_questions
from .world import COLOURS, GRID, QUADRANTS, SHAPE_PLURALS, SHAPES, Scene, SceneObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _name(scene: Scene, index: int, namings=NAMINGS_ANY) -> str:
    """The shortest phrase that picks out object `index` ('red circle', 'small star')."""
    return phrase(scene.objects[index], naming(scene, index, namings))


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


# NLVR2 ------------------------------------------------------------------------------------------

def _count(scene: Scene, shape=None, colour=None) -> int:
    return sum((shape is None or o.shape == shape) and (colour is None or o.colour == colour) for o in scene.objects)


def _nlvr2_candidates(rng, left: Scene, right: Scene) -> list[tuple[str, bool]]:
    """Statements about a pair of pictures with their truth."""
    shape, colour = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS)))
    # Prefer a shape or colour one of the pictures holds, so that "true" statements exist.
    if rng.random() < 0.7:
        obj = _pick(rng, left.objects + right.objects)
        shape, colour = obj.shape, obj.colour
    total = _count(left, shape) + _count(right, shape)
    n = int(rng.integers(1, 4))
    plural = SHAPE_PLURALS[shape] if n > 1 else SHAPES[shape]
    noun = f"{COLOURS[colour]} {SHAPES[shape]}"
    in_left, in_right = _count(left, shape, colour) > 0, _count(right, shape, colour) > 0
    more_left = _count(left, colour=colour) > _count(right, colour=colour)
    return [
        (f"There are exactly {NUMBER_WORDS[n]} {plural} in the two pictures.", total == n),
        (f"There are exactly {NUMBER_WORDS[total]} {SHAPE_PLURALS[shape] if total != 1 else SHAPES[shape]} in the "
         "two pictures.", True),
        (f"Both pictures contain {article(noun)}.", in_left and in_right),
        (f"Exactly one picture contains {article(noun)}.", in_left != in_right),
        (f"The left picture has more {COLOURS[colour]} shapes than the right picture.", more_left),
        ("The right picture has more objects than the left picture.", len(right.objects) > len(left.objects)),
    ]


def nlvr2_statements(rng, left: Scene, right: Scene, count: int, balance: dict) -> list[tuple[str, bool]]:
    """`count` different statements about a pair, each True or False as `balance` (counts of
    labels given so far in the split, updated) is behind on."""
    out = []
    for _ in range(count * 20):
        want = balance[True] <= balance[False]
        pool = [(s, t) for s, t in _nlvr2_candidates(rng, left, right) if t == want and s not in dict(out)]
        if pool:
            out.append(_pick(rng, pool))
            balance[want] += 1
        if len(out) == count:
            break
    return out


# SNLI-VE ----------------------------------------------------------------------------------------

def _absent_noun(rng, scene: Scene) -> str:
    for _ in range(50):
        shape, colour = int(rng.integers(len(SHAPES))), int(rng.integers(len(COLOURS)))
        if _count(scene, shape, colour) == 0:
            return f"{COLOURS[colour]} {SHAPES[shape]}"
    raise RuntimeError("no absent colour/shape pair")  # 48 pairs, at most 5 objects


def entailment_hypotheses(rng, scene: Scene) -> list[tuple[str, str]]:
    """(hypothesis, gold label) x 3 for a premise picture: entailment, neutral, contradiction."""
    first, second = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=len(scene.objects) < 2))
    there = f"There is {article(_name(scene, first, NAMINGS_WITH_COLOUR))}."
    neutral = f"The {_name(scene, second, NAMINGS_WITH_COLOUR)} is the artist's favourite."
    absent = _absent_noun(rng, scene)
    contradiction = f"There is {article(absent)}." if rng.random() < 0.5 else f"The {absent} is the artist's favourite."
    return [(there, "entailment"), (neutral, "neutral"), (contradiction, "contradiction")]


# GQA and Visual Genome --------------------------------------------------------------------------

def _side_candidates(rng, scene: Scene):
    out = []
    for i, obj in enumerate(scene.objects):
        side = "left" if obj.col < GRID // 2 else "right"
        out.append(_question(f"On which side is the {_name(scene, i)}?", side, "which side", "other",
                             ("right" if side == "left" else "left",)))
    return out


def gqa_questions(rng, scene: Scene, count: int, balancer: AnswerBalancer) -> list:
    """`count` questions (vilbert.demo.vqa.Question) for a GQA picture: VQA's kinds, and a side
    question a third of the time."""
    out = [q for _, q in ask_questions(rng, scene, count, balancer)]
    for k in range(len(out)):
        if rng.random() < 0.3:
            candidates = [q for q in _side_candidates(rng, scene) if q.text not in {x.text for x in out}]
            if candidates:
                out[k] = balancer.pick(rng, candidates)
    return out


GENOME_KINDS = ("colour", "shape", "count", "spatial")


def genome_questions(rng, scene: Scene, count: int, balancer: AnswerBalancer) -> list:
    """`count` open questions (Visual Genome asks no yes/no questions) about a scene."""
    out, seen = [], set()
    for _ in range(count * 10):
        candidates = [q for q in CANDIDATES[_pick(rng, GENOME_KINDS)](rng, scene) if q.text not in seen]
        if candidates:
            question = balancer.pick(rng, candidates)
            seen.add(question.text)
            out.append(question)
        if len(out) == count:
            break
    return out


def full_answer(question) -> str:
    """GQA's `fullAnswer`, a sentence around the short answer."""
    return f"The answer is {question.answer}."


# FOIL -------------------------------------------------------------------------------------------

def foil_captions(rng, scene: Scene) -> list[dict]:
    """A true caption naming two objects and its foil (one shape word swapped): [{caption, foil,
    foil_word, target_word}]."""
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    target = a if rng.random() < 0.5 else b
    foil_shape = _pick(rng, [s for s in range(len(SHAPES)) if _count(scene, s, target.colour) == 0])

    def describe(obj: SceneObject, swap: bool) -> str:
        index = scene.objects.index(obj)
        words = phrase(obj, naming(scene, index, NAMINGS_WITH_COLOUR)).split()
        if swap:
            words[-1] = SHAPES[foil_shape]
        return article(" ".join(words))

    caption = f"{describe(a, False)} and {describe(b, False)}"
    foiled = f"{describe(a, target is a)} and {describe(b, target is b)}"
    return [
        {"caption": caption, "foil": False, "foil_word": "ORIG", "target_word": "ORIG"},
        {"caption": foiled, "foil": True, "foil_word": SHAPES[foil_shape], "target_word": target.shape_name},
    ]


# RefCOCO, RefCOCOg, Flickr30k Entities ---------------------------------------------------------

def refcoco_expression(rng, scene: Scene, index: int) -> str:
    """RefCOCO allows places: the object's naming, half of the time with its quadrant."""
    text = _name(scene, index)
    if rng.random() < 0.5:
        text += f" in the {QUADRANTS[scene.objects[index].quadrant]}"
    return ("the " if rng.random() < 0.5 else "") + text


def refcocog_expression(rng, scene: Scene, index: int) -> str:
    """RefCOCOg's longer expressions: the object, with its colour, and a relation to another one."""
    obj = scene.objects[index]
    others = [k for k, o in enumerate(scene.objects) if k != index and (o.col != obj.col or o.row != obj.row)]
    head = f"the {phrase(obj, naming(scene, index, NAMINGS_WITH_COLOUR))}"
    if not others:
        return head
    k = _pick(rng, others)
    other = scene.objects[k]
    if other.col != obj.col:
        relation = "to the left of" if obj.col < other.col else "to the right of"
    else:
        relation = "above" if obj.row < other.row else "below"
    return f"{head} that is {relation} the {_name(scene, k)}"


def entities_sentences(rng, scene: Scene, phrase_ids: list[int], scene_id: int) -> list[str]:
    """Five Flickr30k Entities captions of a scene: each names objects as marked phrases
    "[/EN#<id>/other a red circle]" (phrase_ids[k] for object k), with an unboxed scene phrase
    and now and then a notvisual one."""
    def mark(k: int) -> str:
        return f"[/EN#{phrase_ids[k]}/other {article(_name(scene, k))}]"

    n = len(scene.objects)
    lines = []
    for _ in range(5):
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        a, b = scene.objects[i], scene.objects[j]
        if a.col != b.col:
            relation = "to the left of" if a.col < b.col else "to the right of"
        else:
            relation = "above" if a.row < b.row else "below"
        form = int(rng.integers(3))
        if form == 0:
            text = f"{mark(i)} is {relation} {mark(j)} on [/EN#{scene_id}/scene a gray background] ."
        elif form == 1:
            text = f"[/EN#0/notvisual Someone] drew {mark(i)} and {mark(j)} ."
        else:
            text = f"{mark(i)} sits in the {QUADRANTS[a.quadrant]} of [/EN#{scene_id}/scene the picture] ."
        lines.append(text[0].upper() + text[1:] if text[0] != "[" else text)
    return lines


def entities_xml(scene: Scene, filename: str, phrase_ids: list[int], scene_id: int) -> str:
    """The Annotations/<id>.xml of a scene: one boxed object per phrase id (1-based pixels, as the
    release), and the scene phrase without a box."""
    parts = [f"<annotation><filename>{filename}</filename><size><width>{scene.width}</width>"
             f"<height>{scene.height}</height><depth>3</depth></size>"]
    for obj, pid in zip(scene.objects, phrase_ids):
        x1, y1, x2, y2 = (int(round(v)) + 1 for v in obj.box)
        parts.append(f"<object><name>{pid}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                     f"<ymax>{y2}</ymax></bndbox></object>")
    parts.append(f"<object><name>{scene_id}</name><nobndbox>1</nobndbox><scene>1</scene></object>")
    return "\n".join(parts) + "\n</annotation>\n"


# Visual7W and GuessWhat?! ----------------------------------------------------------------------

def pointing_question(rng, scene: Scene, index: int) -> str:
    return f"Which one is the {_name(scene, index)}?"


def _guesswhat_probes(scene: Scene) -> list[tuple[str, callable]]:
    probes = [(f"is it a {s}", lambda o, s=k: o.shape == s) for k, s in enumerate(SHAPES)]
    probes += [(f"is it {c}", lambda o, c=k: o.colour == c) for k, c in enumerate(COLOURS)]
    probes += [("is it on the left", lambda o: o.col < GRID // 2), ("is it at the top", lambda o: o.row < GRID // 2),
               ("is it big", lambda o: o.size == 1)]
    return probes


def guesswhat_dialog(rng, scene: Scene, target: int, max_questions: int = 6) -> list[tuple[str, str]]:
    """(question, "Yes" | "No" | "N/A") until the target is the only object that fits the answers
    (each question splits the objects still in play); now and then a question the picture cannot
    answer ("N/A")."""
    remaining = list(range(len(scene.objects)))
    qas = []
    probes = _guesswhat_probes(scene)
    while len(remaining) > 1 and len(qas) < max_questions:
        if rng.random() < 0.1:
            qas.append((_pick(rng, ("is it alive", "is it moving", "is it made of wood")), "N/A"))
            continue
        useful = [(q, f) for q, f in probes if 0 < sum(f(scene.objects[k]) for k in remaining) < len(remaining)]
        question, fits = _pick(rng, useful)
        answer = bool(fits(scene.objects[target]))
        remaining = [k for k in remaining if bool(fits(scene.objects[k])) == answer]
        qas.append((question, "Yes" if answer else "No"))
    return qas


# VisDial ----------------------------------------------------------------------------------------

def answer_phrasings(answer: str) -> list[str]:
    """Ways a VisDial answerer says a canonical answer (the first is the plain one)."""
    if answer in ("yes", "no"):
        return [answer, f"{answer} it is" if answer == "yes" else "no it is not", f"{answer}, i think so"
                if answer == "yes" else "no, i don't think so", f"{answer} i believe", f"{answer} definitely"]
    if answer.isdigit():
        word = NUMBER_WORDS[int(answer)]
        return [answer, word, f"there are {word}", f"i see {word}", f"{word} i think"]
    return [answer, f"it is {answer}", f"it's {answer}", f"{answer} i think", f"looks {answer}"]


def dialog_questions(rng, scene: Scene, rounds: int, balancer: AnswerBalancer) -> list:
    """`rounds` questions (vilbert.demo.vqa.Question) for a dialog; repeats when the scene runs out."""
    asked = [q for _, q in ask_questions(rng, scene, rounds, balancer)]
    while len(asked) < rounds:
        asked.append(_pick(rng, asked))
    return asked


def dialog_caption(rng, scene: Scene) -> str:
    return caption_templates(rng, scene)[0]
