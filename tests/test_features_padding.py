"""pad_regions: truncation, padding, the global row and the ground-truth merge."""

import numpy as np
import pytest

from vilbert.features import RegionItem, box_locations, pad_regions


def make_item(n, dim=6, image_h=100, image_w=200, classes=None, offset=0.0, image_id="1"):
    rng = np.random.default_rng(n + int(abs(offset)))
    boxes = np.sort(rng.uniform(0, 100, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    regions = rng.standard_normal((n, dim)).astype(np.float32) + offset
    features = np.concatenate([regions.mean(0, keepdims=True), regions])
    locations = np.concatenate([[[0, 0, 1, 1, 1]], box_locations(boxes, image_h, image_w)]).astype(np.float32)
    cls_prob = None if classes is None else rng.dirichlet(np.ones(classes), n).astype(np.float32)
    return RegionItem(image_id, features, locations, boxes, image_h, image_w, n + 1, cls_prob)


def test_pads_with_zeros_and_mask():
    item = make_item(3, classes=4)
    out = pad_regions(item, 6)
    assert out.features.shape == (6, 6) and out.locations.shape == (6, 5) and out.boxes.shape == (6, 4)
    np.testing.assert_array_equal(out.mask, [1, 1, 1, 1, 0, 0])
    assert out.mask.dtype == np.int64 and out.num_real == 4 and out.num_gt == 0
    np.testing.assert_array_equal(out.features[:4], item.features)
    assert not out.features[4:].any() and not out.locations[4:].any() and not out.cls_prob[4:].any()
    np.testing.assert_array_equal(out.boxes[0], [0, 0, 200, 100])
    np.testing.assert_array_equal(out.boxes[1:4], item.boxes)
    np.testing.assert_array_equal(out.cls_prob[1:4], item.cls_prob)
    assert not out.cls_prob[0].any()


def test_truncates_and_recomputes_global_over_kept_regions():
    item = make_item(10)
    out = pad_regions(item, 5)  # global + 4 regions
    assert out.mask.all() and out.num_real == 5
    np.testing.assert_array_equal(out.features[1:], item.features[1:5])
    np.testing.assert_allclose(out.features[0], item.features[1:5].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out.locations[0], [0, 0, 1, 1, 1])


def test_ground_truth_first_then_detections_one_global_row():
    gt = make_item(2, offset=10.0, image_id="7")
    det = make_item(3, offset=-10.0, image_id="7")
    out = pad_regions(det, 8, gt_item=gt)
    assert out.num_real == 6 and out.num_gt == 2
    np.testing.assert_array_equal(out.features[1:3], gt.features[1:])
    np.testing.assert_array_equal(out.features[3:6], det.features[1:])
    np.testing.assert_array_equal(out.boxes[1:3], gt.boxes)
    np.testing.assert_array_equal(out.locations[3:6], det.locations[1:])
    expected_global = np.concatenate([gt.features[1:], det.features[1:]]).mean(0)
    np.testing.assert_allclose(out.features[0], expected_global, rtol=1e-5)
    # exactly one global row: no other row has the whole-image location
    assert (out.locations == np.array([0, 0, 1, 1, 1], np.float32)).all(1).sum() == 1
    # truncation keeps the ground truth
    short = pad_regions(det, 4, gt_item=gt)
    assert short.num_gt == 2 and short.num_real == 4
    np.testing.assert_array_equal(short.features[1:3], gt.features[1:])
    assert pad_regions(det, 8, gt_item=make_item(2, classes=3)).cls_prob is None  # det has no cls_prob


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_region_num"):
        pad_regions(make_item(2), 1)
    with pytest.raises(ValueError, match="differ in width"):
        pad_regions(make_item(2, dim=6), 5, gt_item=make_item(2, dim=4))
