"""12-in-1's detector (vilbert/features/vmb.py): config reader, checkpoint keys, the pieces of its
numerics pinned by hand, 12-in-1's selection, and extraction through the real CLI on CPU.

The checkpoint here is written key by key in maskrcnn-benchmark's layout
(`_features_helpers.maskrcnn_state_dict`), not taken from our module's state_dict(), so that the
layout is checked against an independent description of it.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _features_helpers import TINY_YAML, make_shape_images, maskrcnn_state_dict, write_tiny_detector
from vilbert.features import FeatureReader
from vilbert.features.__main__ import main
from vilbert.features.extract import run_extraction
from vilbert.features.vmb import (
    BBOX_XFORM_CLIP,
    FPN2MLPFeatureExtractor,
    VmbConfig,
    VmbExtractor,
    cell_anchors,
    config_from_dict,
    decode_boxes,
    grid_anchors,
    nms_plus_one,
    per_class_nms,
    read_checkpoint,
    read_config,
    resize_like_opencv,
    resize_scale,
    select_detections,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def detector_files(tmp_path_factory):
    return write_tiny_detector(tmp_path_factory.mktemp("vmb"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vmb_images")
    scenes = make_shape_images(folder / "images", 4, np.random.default_rng(0), size=80)
    return folder / "images", scenes


def test_config_reader_fills_defaults_lists_unused_keys_and_refuses_what_it_cannot_build(tmp_path):
    config, unused = config_from_dict(yaml.safe_load(TINY_YAML))
    assert config.body == "R-50-FPN" and config.blocks == (3, 4, 6, 3)
    assert (config.num_groups, config.width_per_group, config.stride_in_1x1) == (2, 2, False)
    assert config.anchor_strides == (4, 8, 16, 32, 64)  # "(4, 8, ...)" strings read as yacs reads them
    assert config.pooler_scales == (0.25, 0.125, 0.0625, 0.03125)
    # absent keys take maskrcnn-benchmark's defaults
    assert config.anchor_sizes == (32.0, 64.0, 128.0, 256.0, 512.0) and config.aspect_ratios == (0.5, 1.0, 2.0)
    assert config.rpn_nms_threshold == 0.7 and config.pixel_mean == (102.9801, 115.9465, 122.7717)
    assert config.to_bgr255 is True and config.size_divisibility == 32
    assert unused == ["DATASETS.TEST", "MODEL.ROI_BOX_HEAD.RETURN_FC_FEATS", "SOLVER.BASE_LR"]

    # upstream maskrcnn-benchmark's name for the FPN width reads the same
    upstream = yaml.safe_load(TINY_YAML)
    del upstream["MODEL"]["BACKBONE"]["OUT_CHANNELS"]
    upstream["MODEL"]["RESNETS"]["BACKBONE_OUT_CHANNELS"] = 8
    assert config_from_dict(upstream)[0] == config

    def error(change, path=tmp_path / "c.yaml"):
        tree = yaml.safe_load(TINY_YAML)
        change(tree)
        path.write_text(yaml.safe_dump(tree))
        with pytest.raises(ValueError) as caught:
            read_config(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message
        return message

    assert "MODEL.BACKBONE.CONV_BODY 'R-50-C4' is not supported (supported: R-50-FPN, R-101-FPN, R-152-FPN)" in \
        error(lambda t: t["MODEL"]["BACKBONE"].pop("CONV_BODY"))
    assert "'X-152-FPN' is not supported" in error(lambda t: t["MODEL"]["BACKBONE"].update(CONV_BODY="X-152-FPN"))
    assert "MODEL.RPN.USE_FPN is False" in error(lambda t: t["MODEL"]["RPN"].pop("USE_FPN"))
    assert "MODEL.RESNETS.NUM_GROUPS must be an integer, got 'many'" in \
        error(lambda t: t["MODEL"]["RESNETS"].update(NUM_GROUPS="many"))
    assert "FEATURE_EXTRACTOR is 'ResNet50Conv5ROIFeatureExtractor'" in \
        error(lambda t: t["MODEL"]["ROI_BOX_HEAD"].update(FEATURE_EXTRACTOR="ResNet50Conv5ROIFeatureExtractor"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        read_config(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml: no such file"):
        read_config(tmp_path / "nowhere.yaml")


def test_every_checkpoint_key_is_loaded_or_named_unused(detector_files):
    checkpoint, config_path = detector_files
    state = read_checkpoint(checkpoint)  # the {"model": ...} wrapper and "module." prefix are gone
    assert "backbone.body.stem.conv1.weight" in state and not any(k.startswith("module.") for k in state)
    state["roi_heads.mask.feature_extractor.mask_fcn1.weight"] = torch.zeros(4, 8, 3, 3)  # a Mask R-CNN's head
    state["roi_heads.box.predictor.attr_linear1.weight"] = torch.zeros(512, 272)  # the VG attribute head
    config, _ = read_config(config_path)
    extractor = VmbExtractor.from_state(config, state, device="cpu")
    loaded = extractor.model.state_dict()
    unused = {"roi_heads.box.predictor.bbox_pred.weight", "roi_heads.box.predictor.bbox_pred.bias",
              "roi_heads.mask.feature_extractor.mask_fcn1.weight", "roi_heads.box.predictor.attr_linear1.weight"}
    assert set(loaded) == set(state) - unused  # every other key has a place in the model ...
    for key, value in loaded.items():  # ... and is loaded there
        assert torch.equal(value, state[key]), key
    notes = "\n".join(extractor.notes)
    assert "roi_heads.box.predictor.bbox_pred.* (2 keys)" in notes
    assert "roi_heads.mask.* (1 keys): mask head" in notes and "attribute head" in notes


def test_missing_misshapen_and_unexpected_keys_are_one_line_errors(detector_files, tmp_path, images, capsys):
    _, config_path = detector_files
    config, _ = read_config(config_path)
    state = maskrcnn_state_dict()

    def refused(changed):
        with pytest.raises(ValueError) as caught:
            VmbExtractor.from_state(config, changed, device="cpu")
        assert "\n" not in str(caught.value)
        return str(caught.value)

    missing = {k: v for k, v in state.items() if k != "backbone.body.layer2.1.conv2.weight"}
    assert ("missing key backbone.body.layer2.1.conv2.weight (shape [8, 4, 3, 3] for a R-50-FPN with this "
            "config); 1 key(s) missing in all") in refused(missing)
    misshapen = dict(state, **{"roi_heads.box.feature_extractor.fc6.weight": torch.zeros(16, 50)})
    assert ("key roi_heads.box.feature_extractor.fc6.weight has shape [16, 50] in the checkpoint but [16, 72] "
            "for a R-50-FPN with this config") in refused(misshapen)
    # a deeper body than the config says (an R-101 checkpoint with an R-50 config)
    extra = dict(state, **{"backbone.body.layer3.6.conv1.weight": torch.zeros(16, 64, 1, 1)})
    assert "unexpected key backbone.body.layer3.6.conv1.weight [16, 64, 1, 1]: not part of a R-50-FPN" in refused(extra)
    # the anchors follow from the config: a checkpoint may lack them; when present they are used
    without_anchors = {k: v for k, v in state.items() if "cell_anchors" not in k}
    VmbExtractor.from_state(config, without_anchors, device="cpu")
    moved = dict(state, **{"rpn.anchor_generator.cell_anchors.0": state["rpn.anchor_generator.cell_anchors.0"] + 1})
    assert torch.equal(VmbExtractor.from_state(config, moved, device="cpu").model.rpn.anchor_generator.levels()[0],
                       state["rpn.anchor_generator.cell_anchors.0"] + 1)

    # through the command line: exit code 2 and the message, no traceback
    torch.save({"model": misshapen}, tmp_path / "bad.pth")
    folder, _ = images
    code = main(["extract", "--images", str(folder), "--output", str(tmp_path / "s"), "--boxes", "detector",
                 "--detector", str(tmp_path / "bad.pth"), "--detector-config", str(config_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --detector ") and "fc6.weight has shape [16, 50]" in err
    assert err.count("\n") == 1


def test_anchors_of_one_level_by_hand():
    # stride 16, size 32: the 16 x 16 cell centred at 7.5; ratio 0.5 -> w round(sqrt(512)) = 23,
    # h round(11.5) = 12 (half to even), both x2; ratio 1 -> 16 x 16 x2; ratio 2 -> w 11, h 22, x2
    expected = torch.tensor([[-15.0, -4.0, 30.0, 19.0], [-8.0, -8.0, 23.0, 23.0], [-3.0, -14.0, 18.0, 29.0]])
    cells = cell_anchors(16, 32, (0.5, 1.0, 2.0))
    assert torch.equal(cells, expected)
    # py-faster-rcnn's classic anchor for stride 16, size 128, ratio 0.5
    assert cell_anchors(16, 128, (0.5,)).tolist() == [[-84.0, -40.0, 99.0, 55.0]]
    grid = grid_anchors(cells, 16, height=2, width=3)  # position-major (y, then x), anchor-minor
    assert grid.shape == (2 * 3 * 3, 4)
    shift = torch.tensor([16.0 * 2, 16.0 * 1] * 2)  # position y = 1, x = 2 -> index (1 * 3 + 2) * 3 + a
    assert torch.equal(grid[15:18], expected + shift)


def test_box_decoding_uses_the_plus_one_width_and_clips_dw():
    reference = torch.tensor([[0.0, 0.0, 9.0, 19.0]])  # 10 wide, 20 high, centre (5, 10)
    assert torch.equal(decode_boxes(torch.zeros(1, 4), reference), reference)
    # dx 0.1 -> centre x 6, width x2 -> 20: x1 = 6 - 10, x2 = 6 + 10 - 1; dy -0.2 -> centre y 6
    moved = decode_boxes(torch.tensor([[0.1, -0.2, math.log(2.0), 0.0]]), reference)
    torch.testing.assert_close(moved, torch.tensor([[-4.0, -4.0, 15.0, 15.0]]))
    huge = decode_boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), reference)  # dw capped at log(1000 / 16)
    width = huge[0, 2] - huge[0, 0] + 1
    torch.testing.assert_close(width, torch.tensor(10.0 * math.exp(BBOX_XFORM_CLIP)))
    torch.testing.assert_close(width, torch.tensor(625.0))


def test_nms_counts_the_last_pixel():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])
    scores = torch.tensor([0.9, 0.8])
    # "+1" IoU: 5 x 10 / (100 + 100 - 50) = 1/3; torchvision's would be 4 x 9 / (81 + 81 - 36) = 0.286
    assert nms_plus_one(boxes, scores, 0.3).tolist() == [0]
    assert nms_plus_one(boxes, scores, 0.34).tolist() == [0, 1]
    classes = torch.tensor([0, 1])  # per class: different classes never suppress each other
    assert sorted(per_class_nms(boxes, scores, classes, 0.3).tolist()) == [0, 1]
    assert per_class_nms(boxes, scores, torch.tensor([1, 1]), 0.3).tolist() == [0]


def test_level_mapper_follows_fpn_equation_one():
    config = VmbConfig(body="R-50-FPN", anchor_strides=(4, 8, 16, 32, 64), pooler_scales=(0.25, 0.125, 0.0625, 0.03125),
                       fpn_channels=8, pooler_resolution=3, mlp_head_dim=16)
    extractor = FPN2MLPFeatureExtractor(config)
    sides = [224, 112, 111, 448, 447, 10, 5000]  # "+1" sides: box (0, 0, side - 1, side - 1)
    rois = torch.tensor([[0.0, 0.0, 0.0, side - 1.0, side - 1.0] for side in sides])
    # level = floor(4 + log2(side / 224 + 1e-6)), clamped to 2..5, as an index from level 2
    assert extractor.levels(rois).tolist() == [2, 1, 0, 3, 2, 0, 3]


def test_resize_is_opencv_linear_with_the_scale_as_given():
    row = torch.tensor([[[0.0, 10.0]]])  # (C=1, H=1, W=2), doubled: samples at -0.25, 0.25, 0.75, 1.25
    assert resize_like_opencv(row, 2.0)[0, 0].tolist() == [0.0, 2.5, 7.5, 10.0]
    # the source position comes from the scale (1 / 1.25 per pixel), not from 3 -> 4 pixels (0.75)
    ramp = torch.arange(3.0).view(1, 1, 3)
    assert resize_like_opencv(ramp, 1.25).shape == (1, 1, 4)  # round(3.75) = 4
    torch.testing.assert_close(resize_like_opencv(ramp, 1.25)[0, 0], torch.tensor([0.0, 0.7, 1.5, 2.0]))
    assert resize_scale(480, 640, 800, 1333) == 800 / 480
    assert resize_scale(333, 1000, 800, 1333) == 1333 / 1000  # 1000 * 800 / 333 = 2402 > 1333


def brute_force_selection(boxes, scores, threshold):
    """The script's loop: one NMS per foreground class over every box; max_conf per box."""
    max_conf = torch.zeros(len(boxes))
    for cls in range(1, scores.shape[1]):
        keep = nms_plus_one(boxes, scores[:, cls], 0.5)
        better = (scores[keep, cls] > max_conf[keep]) & (scores[keep, cls] > threshold)
        max_conf[keep] = torch.where(better, scores[keep, cls], max_conf[keep])
    return max_conf


def test_selection_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([[0.3, 0.6, 0.1], [0.1, 0.5, 0.4], [0.6, 0.1, 0.3]])  # background in column 0
    # class 1 keeps box 0 (0.6) and suppresses box 1; class 2 keeps box 1 (0.4), suppresses box 0, keeps box 2
    keep, max_conf = select_detections(boxes, scores, num_features=100, min_boxes=1)
    assert keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(max_conf, torch.tensor([0.6, 0.4, 0.3]))
    assert select_detections(boxes, scores, num_features=2, min_boxes=1)[0].tolist() == [0, 1]
    assert select_detections(boxes, scores, num_features=100, min_boxes=1, threshold=0.35)[0].tolist() == [0, 1]
    # too few above the threshold: topped up to min_boxes in ranking order
    assert select_detections(boxes, scores, num_features=100, min_boxes=3, threshold=0.35)[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("threshold", [0.0, 0.02])
def test_pruned_selection_equals_the_scripts_loop(threshold):
    generator = torch.Generator().manual_seed(1)
    n, classes = 300, 120  # 36,000 (box, class) pairs: more than the first budget, so the pruning runs
    xy = torch.rand(n, 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=generator) * 60 + 5], dim=1)
    scores = torch.softmax(torch.randn(n, classes, generator=generator) * 2.5, dim=1)
    expected = brute_force_selection(boxes, scores, threshold)
    keep, max_conf = select_detections(boxes, scores, num_features=100, min_boxes=1, threshold=threshold)
    ranked = torch.sort(expected, descending=True, stable=True).indices[:100]
    assert keep.tolist() == ranked[expected[ranked] > 0].tolist()
    torch.testing.assert_close(max_conf[keep], expected[keep])
    # the one-call form (GPU) keeps what the per-class loop (CPU) keeps
    classes_index = torch.randint(0, 20, (n,), generator=generator)
    one = per_class_nms(boxes, scores[:, 1], classes_index, 0.5, one_call=True)
    loop = per_class_nms(boxes, scores[:, 1], classes_index, 0.5, one_call=False)
    assert sorted(one.tolist()) == sorted(loop.tolist())


def test_cli_extraction_writes_a_store_the_reader_reads_and_resumes(detector_files, images, tmp_path, capsys):
    checkpoint, config_path = detector_files
    folder, scenes = images
    store = tmp_path / "store"
    args = ["extract", "--images", str(folder), "--output", str(store), "--boxes", "detector",
            "--detector", str(checkpoint), "--detector-config", str(config_path), "--batch-size", "2",
            "--num-workers", "0", "--no-progress", "--float32", "--min-boxes", "5"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "3 key(s) not used: DATASETS.TEST" in captured.err and "bbox_pred" in captured.err
    assert "4 image(s) extracted" in captured.out
    reader = FeatureReader(store)
    assert sorted(reader.image_ids()) == sorted(scenes)
    config, _ = read_config(config_path)
    extractor = VmbExtractor(checkpoint, config_path, device="cpu", min_boxes=5)
    from PIL import Image

    for image_id in scenes:
        item = reader[image_id]
        n = item.num_boxes - 1
        assert 5 <= n <= 100 and item.features.shape == (n + 1, config.mlp_head_dim)
        assert item.cls_prob.shape == (n, config.num_classes)  # every column, background first
        np.testing.assert_allclose(item.cls_prob.sum(1), 1.0, atol=5e-3)
        assert (item.boxes >= 0).all() and (item.boxes[:, [0, 2]] <= 80).all() and (item.boxes[:, [1, 3]] <= 80).all()
        assert (item.boxes[:, 2] >= item.boxes[:, 0]).all() and (item.boxes[:, 3] >= item.boxes[:, 1]).all()
        # the store holds what the detector gives for this image alone (all images pad to one size)
        array = np.asarray(Image.open(folder / f"{image_id}.png").convert("RGB"))
        alone = extractor([array])[0]
        # (batched in twos there: convolutions of a batch may round differently from one image's)
        np.testing.assert_allclose(item.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(item.features[1:], alone.features, rtol=1e-3, atol=1e-4)
        assert (np.diff(alone.max_conf) <= 0).all()  # ranked by the selection score

    # a rerun skips what is there and extracts only a new image
    more = tmp_path / "more"
    shutil.copytree(folder, more)
    make_shape_images(tmp_path / "new", 1, np.random.default_rng(5), size=80)
    (tmp_path / "new" / "1000.png").rename(more / "2000.png")
    result = run_extraction(more, store, boxes="detector", detector=checkpoint, detector_config=config_path,
                            progress=False)
    assert result.already_done == 4 and result.written == 1
    assert len(FeatureReader(store)) == 5


def test_ground_truth_boxes_through_the_same_detector(detector_files, images, tmp_path, capsys):
    checkpoint, config_path = detector_files
    folder, scenes = images
    boxes = {image_id: {"boxes": [box for _, _, box in objs] + [[0, 0, 80, 80]],
                        "cls_prob": [[1.0, 0.0]] * (len(objs) + 1)} for image_id, objs in scenes.items()}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    code = main(["extract", "--images", str(folder), "--output", str(tmp_path / "gt"), "--boxes", "gt",
                 "--boxes-file", str(tmp_path / "boxes.json"), "--detector", str(checkpoint),
                 "--detector-config", str(config_path), "--num-workers", "0", "--no-progress", "--float32"])
    assert code == 0
    assert "cls_prob is replaced by the detector's class distribution" in capsys.readouterr().err
    reader = FeatureReader(tmp_path / "gt")
    extractor = VmbExtractor(checkpoint, config_path, device="cpu")
    from PIL import Image

    for image_id, entry in boxes.items():
        item = reader[image_id]
        given = np.array(entry["boxes"], np.float32)
        np.testing.assert_array_equal(item.boxes, given)  # x1, y1, x2, y2 as given
        assert item.cls_prob.shape == (len(given), 11)
        array = np.asarray(Image.open(folder / f"{image_id}.png").convert("RGB"))
        found = extractor.features_of_boxes([array], [given])[0]
        np.testing.assert_allclose(item.features[1:], found.fc6.numpy(), rtol=1e-4, atol=1e-5)
        # the whole-image box and an object's box see different things
        assert not np.allclose(item.features[1], item.features[-1])


def test_batching_and_the_cli_rules(detector_files, images, tmp_path, capsys):
    checkpoint, config_path = detector_files
    folder, scenes = images
    from PIL import Image

    arrays = [np.asarray(Image.open(folder / f"{i}.png").convert("RGB")) for i in sorted(scenes)[:3]]
    extractor = VmbExtractor(checkpoint, config_path, device="cpu")
    together = extractor(arrays)
    for image, batched in zip(arrays, together):
        alone = extractor([image])[0]
        np.testing.assert_allclose(batched.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(batched.features, alone.features, rtol=1e-3, atol=1e-4)

    base = ["extract", "--images", str(folder), "--output", str(tmp_path / "s"), "--no-progress",
            "--detector-config", str(config_path)]
    assert main(base + ["--boxes", "detector", "--detector", str(checkpoint), "--backbone", "resnet50"]) == 2
    assert "--backbone does not apply with --detector-config" in capsys.readouterr().err
    assert main(base + ["--boxes", "grid"]) == 2
    assert "--detector-config needs --detector" in capsys.readouterr().err


def test_torchrun_shards_the_detector_like_any_extraction(detector_files, images, tmp_path):
    checkpoint, config_path = detector_files
    folder, scenes = images
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vilbert.features", "extract", "--images", str(folder), "--output", str(tmp_path / "out"),
               "--boxes", "detector", "--detector", str(checkpoint), "--detector-config", str(config_path),
               "--num-workers", "0", "--no-progress", "--float32"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("key(s) not used") == 1  # the notes come from rank 0 only
    shards = sorted(p.name for p in (tmp_path / "out").glob("*.lmdb"))
    assert shards == ["part-0-of-2.lmdb", "part-1-of-2.lmdb"]
    reader = FeatureReader(tmp_path / "out")
    single = run_extraction(folder, tmp_path / "single", boxes="detector", detector=checkpoint,
                            detector_config=config_path, feature_dtype="float32", progress=False)
    assert single.written == len(scenes) and sorted(reader.image_ids()) == sorted(scenes)
    for image_id in scenes:
        np.testing.assert_allclose(reader[image_id].features, FeatureReader(tmp_path / "single")[image_id].features,
                                   rtol=1e-4, atol=1e-5)
