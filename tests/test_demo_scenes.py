"""Scenes, questions and chance rates of the demo world, without pictures on disk (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from vilbert.demo.chance import question_template, vqa_rates
from vilbert.demo.text import caption_templates, naming, phrase
from vilbert.demo.vqa import build_vqa_split, human_answers, soft_scores
from vilbert.demo.world import (
    GRID, NUM_CLASSES, box_iou, detections, ground_truth_posteriors, render, sample_scene,
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


@pytest.mark.parametrize("seed", [0])
def test_questions_need_the_picture(seed):
    """A model that reads only the question cannot beat the best answer per question template
    (what the form of the question tells) and stays far below what the picture allows."""
    rng = np.random.default_rng(seed)
    train = [sample_scene(rng) for _ in range(1200)]
    val = [sample_scene(rng) for _ in range(300)]
    train_q, train_a, _ = build_vqa_split(rng, train, list(range(1, 1201)), 5)
    val_q, val_a, _ = build_vqa_split(rng, val, list(range(2001, 2301)), 5)
    rates = vqa_rates((train_q, train_a), (val_q, val_a))
    assert rates["oracle"] > 99
    assert rates["text_only_bag_of_words"] <= rates["best_answer_per_question_template"] + 2.0, rates
    assert rates["text_only_bag_of_words"] < 50 and rates["accuracy"] < 30, rates


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
