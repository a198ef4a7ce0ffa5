"""extract with the fixed `pixels` backbone: gt and grid boxes, cls_prob, resume, bad images."""

import json

import numpy as np
import pytest

from _features_helpers import COLOURS, SHAPES, make_shape_images, write_boxes_json
from vilbert.features import FeatureReader
from vilbert.features.__main__ import main
from vilbert.features.extract import grid_boxes, run_extraction


def test_gt_boxes_with_cls_prob_and_a_broken_image(tmp_path, capsys):
    scenes = make_shape_images(tmp_path / "images", 4, np.random.default_rng(0))
    (tmp_path / "images" / "999.jpg").write_bytes(b"not an image at all")
    scenes["999"] = [("square", "red", [0, 0, 5, 5])]
    write_boxes_json(tmp_path / "boxes.json", scenes, with_cls_prob=True)
    code = main(["extract", "--images", str(tmp_path / "images"), "--output", str(tmp_path / "store"),
                 "--boxes", "gt", "--boxes-file", str(tmp_path / "boxes.json"), "--backbone", "pixels",
                 "--num-workers", "0", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "could not be decoded" in err and "999.jpg" in err
    reader = FeatureReader(tmp_path / "store")
    assert sorted(reader.image_ids()) == sorted(i for i in scenes if i != "999")
    boxes = json.loads((tmp_path / "boxes.json").read_text())
    for image_id in reader.image_ids():
        item = reader[image_id]
        assert item.features.shape == (len(scenes[image_id]) + 1, 2048)
        assert (item.image_h, item.image_w) == (64, 64)
        np.testing.assert_array_equal(item.boxes, np.array(boxes[image_id]["boxes"], np.float32))
        np.testing.assert_array_equal(item.cls_prob, np.array(boxes[image_id]["cls_prob"], np.float32))


def test_grid_boxes_cover_the_image(tmp_path):
    make_shape_images(tmp_path / "images", 2, np.random.default_rng(1))
    result = run_extraction(tmp_path / "images", tmp_path / "store", boxes="grid", grid=3, backbone="pixels",
                            progress=False)
    assert result.written == 2
    item = FeatureReader(tmp_path / "store")["1000"]
    np.testing.assert_array_equal(item.boxes, grid_boxes(64, 64, 3))
    assert item.num_boxes == 10 and item.cls_prob is None
    np.testing.assert_allclose(item.locations[1:, 4].sum(), 1.0, rtol=1e-5)  # the cells tile the image


def test_rerun_skips_what_is_there_and_images_without_boxes_are_listed(tmp_path, capsys):
    scenes = make_shape_images(tmp_path / "images", 5, np.random.default_rng(2))
    write_boxes_json(tmp_path / "boxes.json", {k: v for k, v in scenes.items() if k != "1004"})
    first = run_extraction(tmp_path / "images", tmp_path / "s", boxes_file=tmp_path / "boxes.json", progress=False)
    assert first.written == 4 and first.without_boxes == ["1004"]
    assert "1004" in capsys.readouterr().err
    again = run_extraction(tmp_path / "images", tmp_path / "s", boxes_file=tmp_path / "boxes.json", progress=False)
    assert again.written == 0 and again.already_done == 4


def test_pixel_features_make_colour_and_shape_linearly_recoverable(tmp_path):
    scenes = make_shape_images(tmp_path / "images", 60, np.random.default_rng(3), objects=(2, 4))
    write_boxes_json(tmp_path / "boxes.json", scenes)
    run_extraction(tmp_path / "images", tmp_path / "s", boxes_file=tmp_path / "boxes.json", progress=False)
    reader = FeatureReader(tmp_path / "s")
    X, colour, shape = [], [], []
    for image_id, objs in scenes.items():
        X.append(reader[image_id].features[1:])
        colour += [list(COLOURS).index(c) for _, c, _ in objs]
        shape += [SHAPES.index(s) for s, _, _ in objs]
    X = np.concatenate(X).astype(np.float64)
    X = np.concatenate([X, np.ones((len(X), 1))], 1)
    half = len(X) // 2
    for labels, classes in ((np.array(colour), len(COLOURS)), (np.array(shape), len(SHAPES))):
        # Linear probe: ridge regression onto one-hot targets, trained on one half, tested on the other.
        Y = np.eye(classes)[labels]
        W = np.linalg.solve(X[:half].T @ X[:half] + 1e-1 * np.eye(X.shape[1]), X[:half].T @ Y[:half])
        accuracy = ((X[half:] @ W).argmax(1) == labels[half:]).mean()
        assert accuracy >= 0.95, accuracy


def test_bad_boxes_file_and_missing_weights_are_one_line_errors(tmp_path, capsys):
    make_shape_images(tmp_path / "images", 1, np.random.default_rng(4))
    (tmp_path / "boxes.json").write_text(json.dumps({"1000": {"boxes": [[5, 5, 2, 9]]}}))
    args = ["extract", "--images", str(tmp_path / "images"), "--output", str(tmp_path / "s"), "--no-progress"]
    assert main(args + ["--boxes", "gt", "--boxes-file", str(tmp_path / "boxes.json"), "--backbone", "pixels"]) == 2
    assert "image 1000: box 0" in capsys.readouterr().err
    assert main(args + ["--boxes", "grid", "--backbone", "resnet50"]) == 2
    assert "--random-weights" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a directory"):
        run_extraction(tmp_path / "nowhere", tmp_path / "s", boxes="grid")
