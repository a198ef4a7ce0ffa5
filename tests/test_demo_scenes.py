"""Scenes, questions and chance rates of the demo world, without pictures on disk (fast)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from vilbert.demo.chance import question_template, vqa_rates
from vilbert.demo.text import caption_templates, naming, phrase
from vilbert.demo.vqa import QUESTION_KINDS, build_vqa_split, soft_scores
from vilbert.demo.world import (
    GRID, NUM_CLASSES, SHAPE_PLURALS, SHAPES, box_iou, detections, ground_truth_posteriors, render, sample_scene,
)


def test_scene_invariants():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng)
        objs = scene.objects
        assert 2 <= len(objs) <= 5
        assert len({(o.row, o.col) for o in objs}) == len(objs)  # one object per grid cell
        assert len({(o.colour, o.shape, o.size) for o in objs}) == len(objs)  # always nameable
        for o in objs:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            # the box stays in its grid cell, so "left of" by column is also left by pixels
            assert x1 >= o.col * scene.width / GRID - 1 and x2 <= (o.col + 1) * scene.width / GRID + 1
        for i in range(len(objs)):
            attributes = naming(scene, i)
            assert attributes is not None and phrase(objs[i], attributes).split()[-1] in ("object", objs[i].shape_name)
    for _ in range(100):
        scene = sample_scene(rng, unique_shapes=True)
        assert len({o.shape for o in scene.objects}) == len(scene.objects)


def test_render_draws_each_object_in_its_colour():
    rng = np.random.default_rng(1)
    scene = sample_scene(rng)
    pixels = np.asarray(render(scene))
    assert pixels.shape == (scene.height, scene.width, 3)
    for o in scene.objects:
        cx, cy = np.mean(np.array(o.polygon), axis=0)
        if o.shape_name in ("circle", "square", "diamond", "cross"):  # centre is inside these shapes
            assert np.abs(pixels[int(cy), int(cx)].astype(int) - np.array(o.rgb)).max() <= 1


def test_class_posteriors_and_detections():
    rng = np.random.default_rng(2)
    right = total = 0
    for _ in range(200):
        scene = sample_scene(rng)
        probs = ground_truth_posteriors(rng, scene)
        assert probs.shape == (len(scene.objects), NUM_CLASSES) and np.allclose(probs.sum(1), 1)
        right += int((probs.argmax(1) == [o.class_id for o in scene.objects]).sum())
        total += len(scene.objects)
        boxes, det_probs = detections(rng, scene)
        assert np.allclose(det_probs.sum(1), 1) and len(boxes) >= len(scene.objects) + 2
        assert (box_iou(boxes, scene.boxes()).max(axis=0) >= 0.6).all()
    assert right / total > 0.97  # peaked on the truth, as a good detector


def test_human_answers_disagree_but_keep_the_truth_on_top():
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng) for _ in range(200)]
    _, annotations, _ = build_vqa_split(rng, scenes, list(range(1, 201)), 5)
    unanimous = 0
    for a in annotations:
        scores = soft_scores(a["answers"])
        assert scores[a["multiple_choice_answer"]] >= 0.9
        unanimous += len(scores) == 1
    assert 0.1 < unanimous / len(annotations) < 0.6  # realistic disagreement


def test_captions_are_different_and_name_the_scene():
    rng = np.random.default_rng(4)
    for _ in range(100):
        scene = sample_scene(rng)
        captions = caption_templates(rng, scene)
        assert len(captions) == 5 and len(set(captions)) == 5
        assert all(o.shape_name in captions[0] and o.colour_name in captions[0] for o in scene.objects)


def _resolve(objects, name: str) -> dict:
    """The one object a noun phrase of the questions names: '[size] [colour] shape|object'."""
    *attributes, noun = name.split()
    hits = [o for o in objects
            if (noun == "object" or o["shape"] == noun)
            and all(w in (o["color"], o["size"]) for w in attributes)]
    assert len(hits) == 1, (name, objects)
    return hits[0]


def _solve(question: str, objects: list[dict]) -> str:
    """Answer a demo question from the scene alone (an independent reading of every template)."""
    yes_no = lambda flag: "yes" if flag else "no"  # noqa: E731
    rules = [
        (r"Is there an? (.+)\?", lambda m: yes_no(any(
            all(w in (o["color"], o["size"], o["shape"]) for w in m[1].split()) for o in objects))),
        (r"Is the (.+) to the left of the (.+)\?",
         lambda m: yes_no(_resolve(objects, m[1])["grid_col"] < _resolve(objects, m[2])["grid_col"])),
        (r"Is the (.+) above the (.+)\?",
         lambda m: yes_no(_resolve(objects, m[1])["grid_row"] < _resolve(objects, m[2])["grid_row"])),
        (r"Is the (.+ object) an? (\w+)\?", lambda m: yes_no(_resolve(objects, m[1])["shape"] == m[2])),
        (r"Is the (.+) (\w+)\?", lambda m: yes_no(_resolve(objects, m[1])["color"] == m[2])),
        (r"What color is the object above the (.+)\?", lambda m: _only(
            objects, lambda o: o["grid_row"] < _resolve(objects, m[1])["grid_row"])["color"]),
        (r"What shape is to the left of the (.+)\?", lambda m: _only(
            objects, lambda o: o["grid_col"] < _resolve(objects, m[1])["grid_col"])["shape"]),
        (r"What color is the (.+)\?", lambda m: _resolve(objects, m[1])["color"]),
        (r"What is the shape of the (.+)\?", lambda m: _resolve(objects, m[1])["shape"]),
        (r"How many objects are there\?", lambda m: str(len(objects))),
        (r"How many (\w+) objects are there\?", lambda m: str(sum(o["color"] == m[1] for o in objects))),
        (r"How many (\w+) are there\?",
         lambda m: str(sum(SHAPE_PLURALS[SHAPES.index(o["shape"])] == m[1] for o in objects))),
    ]
    for pattern, answer in rules:
        match = re.fullmatch(pattern, question)
        if match:
            return answer(match)
    raise AssertionError(f"no rule reads {question!r}")


def _only(objects, condition) -> dict:
    hits = [o for o in objects if condition(o)]
    assert len(hits) == 1
    return hits[0]


def test_every_question_is_answered_by_the_picture():
    """An independent reader of the templates answers every question from the scene alone, and
    gets the generator's answer; every question kind occurs."""
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng) for _ in range(300)]
    questions, annotations, kinds = build_vqa_split(rng, scenes, list(range(1, 301)), 5)
    for q, a in zip(questions, annotations):
        objects = scenes[q["image_id"] - 1].to_json()["objects"]
        assert _solve(q["question"], objects) == a["multiple_choice_answer"], q["question"]
    assert set(kinds) == set(QUESTION_KINDS)
    assert len(questions) == 5 * len(scenes)


def test_answers_are_balanced_per_template():
    """Within each question template the answers are about equally common (as far as the scenes
    allow), so the question's form tells little about its answer."""
    rng = np.random.default_rng(6)
    scenes = [sample_scene(rng) for _ in range(1000)]
    questions, annotations, _ = build_vqa_split(rng, scenes, list(range(1, 1001)), 5)
    by_template: dict[str, Counter] = {}
    for q, a in zip(questions, annotations):
        by_template.setdefault(question_template(q["question"]), Counter())[a["multiple_choice_answer"]] += 1
    checked = 0
    for template, answers in by_template.items():
        total = sum(answers.values())
        if total < 100 or template.startswith(("what shape is to the left", "what color is the object above")):
            continue  # "what is left of / above": a scene offers one or two, so only as even as chance
        checked += 1
        if answers.keys() <= {"yes", "no"}:
            assert abs(answers["yes"] - answers["no"]) <= 1, (template, answers)
        elif not template.startswith("how many"):  # colours, shapes: as the objects in the scenes allow
            assert max(answers.values()) <= 1.15 * total / len(answers) + 1, (template, answers)
        else:  # counts (some scarce, as 3 objects of a colour): the commonest still near 1/4
            assert max(answers.values()) <= 1.5 * total / 4, (template, answers)
    assert checked >= 8


def test_text_only_stays_near_the_majority_answer():
    """On a larger draw than the small world: without the picture, a bag-of-words model gains at
    most a few points over always answering the commonest answer, gains nothing on yes/no
    questions, and stays far below what the picture allows."""
    rng = np.random.default_rng(0)
    train = [sample_scene(rng) for _ in range(1200)]
    val = [sample_scene(rng) for _ in range(300)]
    train_q, train_a, _ = build_vqa_split(rng, train, list(range(1, 1201)), 5)
    val_q, val_a, _ = build_vqa_split(rng, val, list(range(2001, 2301)), 5)
    rates = vqa_rates((train_q, train_a), (val_q, val_a))
    assert rates["oracle"] > 99
    assert rates["text_only_bag_of_words"] <= rates["accuracy"] + 6.0, rates
    yes_no = rates["by_answer_type"]["yes/no"]
    assert yes_no["text_only"] <= yes_no["majority"] + 3.0, rates
    assert rates["text_only_bag_of_words"] < 62, rates


def test_small_world_text_only_baseline():
    """The figures of docs/DEMO.md: the small world (seed 0) without its pictures."""
    from vilbert.demo.make import SMALL, vqa_splits, world_ids

    splits = {subtype: files for subtype, *_, files in vqa_splits(0, SMALL, world_ids(0, SMALL)[0])}
    rates = vqa_rates(splits["train2014"], splits["val2014"])
    assert rates["text_only_bag_of_words"] <= rates["accuracy"] + 6.0, rates
    assert rates["oracle"] > 99 and 45 < rates["accuracy"] < 60, rates


def test_question_template_masks_attributes():
    assert question_template("Is the small red circle to the left of the stars?") == \
        "is the <size> <color> <shape> to the left of the <shape>"


def test_cli_dispatches_run_to_the_pipeline(monkeypatch):
    import sys
    import types

    from vilbert.demo.__main__ import main

    seen = []
    fake = types.ModuleType("vilbert.demo.pipeline")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "vilbert.demo.pipeline", fake)
    assert main(["run", "--data", "x", "--output", "y"]) == 0
    assert seen == [["--data", "x", "--output", "y"]]


def test_cli_make_world_errors_are_one_line(tmp_path, capsys):
    from vilbert.demo.__main__ import main

    (tmp_path / "CHANCE.json").write_text("{}")
    assert main(["make-world", "--output", str(tmp_path), "--no-features"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--overwrite" in err and "\n" not in err
