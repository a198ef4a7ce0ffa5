"""Parity of vilbert/features/vmb.py with maskrcnn-benchmark's own Python code, same weights, same images.

    pip install yacs opencv-python-headless      # the reference's config library; 12-in-1's image resize
    python benchmarks/vmb_parity.py --reference /path/to/vqa-maskrcnn-benchmark [--body R-152-FPN] [--images 4]

--reference is a checkout of the vqa-maskrcnn-benchmark fork that 12-in-1's extraction scripts import
(measured with the copy Cadene/vqa-maskrcnn-benchmark, commit 1101d24; upstream maskrcnn-benchmark
renamed MODEL.BACKBONE.OUT_CHANNELS and would refuse this config); nothing of it is copied here, it
is imported from that path. Its compiled ops (`maskrcnn_benchmark._C`, which no longer build against current PyTorch) are
stood in for by a stub module registered in sys.modules before the import, each op paired with the
torchvision op that computes the same thing:

    _C.nms(boxes, scores, t)       torchvision.ops.nms(boxes with x2 + 1, y2 + 1, scores, t): their
                                   IoU counts a box x1..x2 as x2 - x1 + 1 wide; a box is dropped when
                                   its IoU exceeds t (their CUDA kernel; their CPU one tests >= t)
    _C.roi_align_forward(...)      torchvision.ops.roi_align(..., aligned=False): torchvision's
                                   RoIAlign is maskrcnn-benchmark's, aligned=False being its legacy form
    _C.roi_pool_forward            not stubbed: an FPN2MLP box head never calls it

and two run-time shims: `np.float` (removed from NumPy) is set to `float` for their anchor code, and
when the checkout has no "R-152-FPN" body (the Cadene copy of the fork lists R-50/R-101 only) it is
registered in their registries with the 3-8-36-3 blocks of ResNet-152.

The script builds their model with a small config of 12-in-1's structure (an FPN Faster R-CNN with a
grouped ResNeXt body, stride in the 3x3 conv, 1601 classes; small widths), gives every parameter and
buffer random values (frozen batch-norm statistics too), saves its state dict as a checkpoint and the
config as YAML, and loads both through our reader (`VmbExtractor(checkpoint, yaml)`). On generated
images of several sizes it then compares, per image (a batch of one), and for one batch of two
images of the same size:

- the input: 12-in-1's preprocessing written out with OpenCV (BGR, minus the mean, cv2.resize) against
  ours (torch),
- the RPN proposals (same count, same boxes: identical or IoU >= 0.99),
- the fc6 features and the class distributions of every proposal (max |ours - theirs| / max |theirs|
  <= 1e-4),
- 12-in-1's selection, run on their outputs as the script runs it (a loop of 1600 per-class NMS calls)
  against ours (pruned, vilbert.features.vmb.select_detections): same boxes in the same order, at the
  script's default threshold 0 and at 0.2,
- ground-truth boxes through the box head.

Prints the table that docs/DETECTOR.md holds and exits 1 if a criterion fails.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from vilbert.features.vmb import VmbExtractor, select_detections  # noqa: E402

REL_TOLERANCE = 1e-4
MIN_IOU = 0.99
# (height, width) of the generated images: landscape, portrait, an odd size whose resized sides are
# not multiples of 32, and one capped by MAX_SIZE_TEST.
IMAGE_SIZES = [(480, 640), (640, 480), (375, 500), (333, 1000), (427, 640), (512, 512)]

CONFIG = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    CONV_BODY: "{body}"
    OUT_CHANNELS: 64
  RESNETS:
    STRIDE_IN_1X1: False
    NUM_GROUPS: 8
    WIDTH_PER_GROUP: 4
    STEM_OUT_CHANNELS: 16
    RES2_OUT_CHANNELS: 64
  RPN:
    USE_FPN: True
    ANCHOR_STRIDE: (4, 8, 16, 32, 64)
    PRE_NMS_TOP_N_TEST: 1000
    POST_NMS_TOP_N_TEST: 1000
    FPN_POST_NMS_TOP_N_TEST: 1000
  ROI_HEADS:
    USE_FPN: True
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    PREDICTOR: "FPNPredictor"
    RETURN_FC_FEATS: True
    MLP_HEAD_DIM: 128
    NUM_CLASSES: 1601
DATASETS:
  TEST: ("vqa_test",)
"""


def import_reference(path: Path):
    """Import maskrcnn_benchmark from `path` with the stub ops and shims of the module docstring."""
    import torchvision

    if not (path / "maskrcnn_benchmark" / "__init__.py").is_file():
        sys.exit(f"--reference {path}: no maskrcnn_benchmark package there")

    def nms(boxes, scores, threshold):
        grown = boxes.clone()
        grown[:, 2:] += 1
        return torchvision.ops.nms(grown, scores, threshold)

    def roi_align_forward(features, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio):
        return torchvision.ops.roi_align(features, rois, (pooled_h, pooled_w), spatial_scale, sampling_ratio,
                                         aligned=False)

    def no_backward(*args, **kwargs):
        raise NotImplementedError("the parity harness runs inference only")

    stub = types.ModuleType("maskrcnn_benchmark._C")
    stub.nms, stub.roi_align_forward, stub.roi_align_backward = nms, roi_align_forward, no_backward
    sys.modules["maskrcnn_benchmark._C"] = stub
    if not hasattr(np, "float"):
        np.float = float  # their generate_anchors uses the alias NumPy 1.24 removed
    sys.path.insert(0, str(path))
    import maskrcnn_benchmark

    maskrcnn_benchmark._C = stub
    from maskrcnn_benchmark.modeling import registry
    from maskrcnn_benchmark.modeling.backbone import backbone as backbones
    from maskrcnn_benchmark.modeling.backbone import resnet

    if "R-152-FPN" not in resnet._STAGE_SPECS:
        resnet._STAGE_SPECS["R-152-FPN"] = tuple(
            resnet.StageSpec(index=i, block_count=c, return_features=True) for i, c in ((1, 3), (2, 8), (3, 36), (4, 3)))
    if "R-152-FPN" not in registry.BACKBONES:
        registry.BACKBONES["R-152-FPN"] = backbones.build_resnet_fpn_backbone
    return maskrcnn_benchmark


def randomize(model, seed: int) -> None:
    """Random values for every parameter and buffer except the anchors (He-normal weights, frozen
    batch-norm statistics and affine terms of a few tenths)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(tensor, low, high=None, normal=False):
        noise = torch.randn(tensor.shape, generator=generator) if normal else torch.rand(tensor.shape, generator=generator)
        tensor.copy_(noise * low if normal else noise * (high - low) + low)

    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "cell_anchors" in name:
                continue
            if name.endswith("running_var"):
                draw(tensor, 0.5, 2.0)
            elif name.endswith("running_mean"):
                draw(tensor, 0.1, normal=True)
            elif tensor.dim() == 1:  # frozen batch-norm weight and bias, conv and linear biases
                draw(tensor, 0.3, 0.8) if name.endswith(".weight") else draw(tensor, 0.05, normal=True)
            else:
                draw(tensor, (2.0 / tensor[0].numel()) ** 0.5, normal=True)


def calibrate(model, image_list) -> None:
    """Scale the heads so that outputs are spread but not saturated: RPN logits of std 1 (a
    saturated sigmoid makes ties, whose order no implementation defines), box deltas of std 0.3,
    class logits of std 3 (peaked class distributions, as a trained detector's)."""
    with torch.no_grad():
        features = model.backbone(image_list.tensors)
        logits, deltas = model.rpn.head(features)
        head = model.rpn.head
        head.cls_logits.weight *= 1.0 / torch.cat([x.flatten() for x in logits]).std()
        head.cls_logits.bias.zero_()
        head.bbox_pred.weight *= 0.3 / torch.cat([x.flatten() for x in deltas]).std()
        outputs, _ = model(image_list)
        predictor = model.roi_heads.box.predictor
        predictor.cls_score.weight *= 3.0 / outputs["scores"].std(dim=1).mean()
        predictor.cls_score.bias.zero_()


def make_image(height: int, width: int, rng) -> np.ndarray:
    """Coloured rectangles and ellipses on a smooth gradient, plus noise: edges and corners to detect."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([80 + 100 * xx / width, 60 + 120 * yy / height, 140 - 60 * xx / width], -1)
    for _ in range(int(rng.integers(4, 9))):
        h, w = int(rng.integers(height // 10, height // 2)), int(rng.integers(width // 10, width // 2))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            image[y : y + h, x : x + w] = colour
        else:
            inside = ((yy - y - h / 2) / (h / 2)) ** 2 + ((xx - x - w / 2) / (w / 2)) ** 2 <= 1
            image[inside] = colour
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def reference_input(image: np.ndarray, min_size: int, max_size: int, mean) -> tuple[torch.Tensor, float]:
    """12-in-1's `_image_transform`, written out: float32 RGB -> BGR, minus the mean, cv2.resize."""
    import cv2

    pixels = image.astype(np.float32)[:, :, ::-1]
    pixels -= np.array(mean)
    scale = min_size / min(pixels.shape[:2])
    if np.round(scale * max(pixels.shape[:2])) > max_size:
        scale = max_size / max(pixels.shape[:2])
    pixels = cv2.resize(pixels, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(pixels).permute(2, 0, 1), scale


def reference_selection(nms, boxes, scores, num_features: int, threshold: float):
    """12-in-1's selection as its script runs it: one NMS per foreground class over every box."""
    max_conf = torch.zeros(len(scores))
    for cls in range(1, scores.shape[1]):
        class_scores = scores[:, cls]
        keep = nms(boxes, class_scores, 0.5)
        better = (class_scores[keep] > max_conf[keep]) & (class_scores[keep] > threshold)
        max_conf[keep] = torch.where(better, class_scores[keep], max_conf[keep])
    ranked, order = torch.sort(max_conf, descending=True)
    return order[:num_features], ranked[:num_features]


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    if ours.shape != theirs.shape:
        return float("inf")
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max().clamp(min=1e-12))


def best_match(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of our boxes the reference box of highest IoU ("+1" convention): (IoU, index)."""
    import torchvision

    if len(ours) == 0 or len(theirs) == 0:
        return torch.zeros(len(ours)), torch.zeros(len(ours), dtype=torch.int64)
    grow = torch.tensor([0.0, 0.0, 1.0, 1.0])
    iou = torchvision.ops.box_iou(ours + grow, theirs + grow)
    return iou.max(dim=1)


def compare(found, theirs: dict, nms, thresholds=(0.0, 0.2)) -> dict:
    """Our Detections of one image against the reference's outputs for it (module docstring)."""
    iou, match = best_match(found.proposals, theirs["boxes"])
    matched = iou >= MIN_IOU
    row = dict(count=f"{len(found.proposals)}/{len(theirs['boxes'])}",
               identical=int((found.proposals == theirs["boxes"][match]).all(1).sum()),
               in_order=len(found.proposals) == len(theirs["boxes"]) and torch.equal(found.proposals, theirs["boxes"]),
               matched=int(matched.sum()), total=len(found.proposals), min_iou=float(iou.min()),
               max_px=float((found.proposals - theirs["boxes"][match]).abs().max()))
    row["fc6_rel"] = relative(found.fc6[matched], theirs["fc6"][match[matched]])
    row["scores_rel"] = relative(found.scores[matched], theirs["scores"][match[matched]])
    row["selection"], row["selection_ok"] = [], True
    for threshold in thresholds:
        keep, ranked = reference_selection(nms, theirs["boxes"] / theirs["scale"], theirs["scores"], 100, threshold)
        keep = keep[ranked > 0]  # the rows 12-in-1 counts in num_boxes (all 100 at threshold 0)
        mine, _ = select_detections(found.proposals / found.scale, found.scores, 100, 1, threshold)
        if row["in_order"]:
            same = int((mine[: len(keep)] == keep[: len(mine)]).sum()) if len(mine) == len(keep) else 0
        else:  # our selected boxes found among theirs
            hit, _ = best_match(found.proposals[mine], theirs["boxes"][keep])
            same = int((hit >= MIN_IOU).sum())
        row["selection"].append(f"{same}/{len(mine)}/{len(keep)}")
        row["selection_ok"] &= len(mine) == len(keep) and same == len(keep)
    return row


def run(args) -> int:
    reference = import_reference(Path(args.reference).resolve())
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.layers import nms as reference_nms
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.structures.image_list import to_image_list

    from vilbert.features.vmb import Batch

    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.exit("no OpenCV: pip install opencv-python-headless (12-in-1 resizes its input with cv2.resize)")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vmb_parity_"))
    config_path, checkpoint = work / "detectron_config.yaml", work / "detectron_model.pth"
    config_path.write_text(CONFIG.format(body=args.body))
    cfg.merge_from_file(str(config_path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    model = build_detection_model(cfg).eval()
    randomize(model, args.seed)
    calibration = make_image(*IMAGE_SIZES[0], np.random.default_rng(args.seed + 1))
    calibrate(model, to_image_list([reference_input(calibration, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                                                    cfg.INPUT.PIXEL_MEAN)[0]], size_divisible=32))
    torch.save({"model": model.state_dict()}, checkpoint)

    ours = VmbExtractor(checkpoint, config_path, device="cpu", num_features=100, min_boxes=1)
    print(f"reference: {reference.__file__}; ours: vilbert.features.vmb ({args.body}, groups 8 x width 4, "
          f"FPN 64, MLP 128, 1601 classes, random weights seed {args.seed})")
    for note in ours.notes:
        print(f"our loader: {note}")
    config = ours.config

    images = [make_image(h, w, rng) for h, w in IMAGE_SIZES[: args.images]]
    runs = [[i] for i in range(len(images))]
    images.append(make_image(*IMAGE_SIZES[0], rng))  # a second image of the first one's size: one batch of two
    runs.append([0, len(images) - 1])

    rows, failures = [], []
    for run_index, members in enumerate(runs):
        batch_images = [images[i] for i in members]
        start = time.perf_counter()
        inputs = [reference_input(im, config.min_size, config.max_size, config.pixel_mean) for im in batch_images]
        tensors, scales = [t for t, _ in inputs], [s for _, s in inputs]
        image_list = to_image_list(tensors, size_divisible=32)
        # ground-truth boxes (x1, y1, x2, y2 in original pixels) for the box head alone
        gt = [torch.tensor([[0, 0, w - 1, h - 1], [w * 0.1, h * 0.2, w * 0.6, h * 0.7], [5, 5, 40, 30]],
                           dtype=torch.float32) for h, w in (im.shape[:2] for im in batch_images)]
        with torch.no_grad():
            outputs, _ = model(image_list)
            features = model.backbone(image_list.tensors)
            gt_lists = [BoxList(g * s, (image_list.tensors.shape[3], image_list.tensors.shape[2]))
                        for g, s in zip(gt, scales)]
            gt_out = model.roi_heads.box.feature_extractor(features, gt_lists)
            gt_scores = torch.softmax(model.roi_heads.box.predictor(gt_out)["scores"], -1)
        their_seconds = time.perf_counter() - start
        counts = [len(p) for p in outputs["proposals"]]
        theirs = [dict(boxes=p.bbox, fc6=f, scores=sc, scale=s) for p, f, sc, s in
                  zip(outputs["proposals"], outputs["fc6"].split(counts),
                      torch.softmax(outputs["scores"], -1).split(counts), scales)]
        gt_fc6, gt_scores = gt_out["fc6"].split([len(g) for g in gt]), gt_scores.split([len(g) for g in gt])

        start = time.perf_counter()
        prepared = ours.prepare(batch_images)
        from_their_input = ours.detect_batch(Batch(image_list.tensors, scales, [im.shape[:2] for im in batch_images],
                                                   [tuple(image_list.tensors.shape[2:])] * len(members)))
        from_our_input = ours.detect_batch(prepared)
        our_gt = ours.features_of_boxes(batch_images, [g.numpy() for g in gt])
        our_seconds = time.perf_counter() - start

        for slot, image_index in enumerate(members):
            height, width = batch_images[slot].shape[:2]
            name = f"{image_index}" if len(members) == 1 else f"{image_index} (batch {'+'.join(map(str, members))})"
            size = f"{height}x{width} -> {tensors[slot].shape[1]}x{tensors[slot].shape[2]}"
            ours_input = prepared.images[slot, :, : tensors[slot].shape[1], : tensors[slot].shape[2]]
            input_rel = relative(ours_input, tensors[slot])
            for kind, found in (("theirs", from_their_input[slot]), ("ours", from_our_input[slot])):
                row = dict(image=name, size=size, input=kind, input_rel=0.0 if kind == "theirs" else input_rel,
                           **compare(found, theirs[slot], reference_nms))
                row["gt_fc6_rel"] = relative(our_gt[slot].fc6, gt_fc6[slot]) if kind == "ours" else None
                row["gt_scores_rel"] = relative(our_gt[slot].scores, gt_scores[slot]) if kind == "ours" else None
                close = [row["fc6_rel"], row["scores_rel"], row["input_rel"]]
                close += [row["gt_fc6_rel"], row["gt_scores_rel"]] if kind == "ours" else []
                # Same input: the same boxes in the same order. Our own input (equal to OpenCV's to a
                # float rounding): every box found with IoU >= MIN_IOU and the same selection.
                boxes_ok = row["in_order"] if kind == "theirs" else row["matched"] == row["total"]
                row["ok"] = boxes_ok and row["selection_ok"] and max(close) <= REL_TOLERANCE
                if not row["ok"]:
                    failures.append(f"{name} ({kind} input)")
                rows.append(row)
        print(f"run {run_index + 1}/{len(runs)} done (theirs {their_seconds:.1f} s, ours {our_seconds:.1f} s "
              "for both inputs and the ground-truth boxes)", flush=True)

    def number(value):
        return "-" if value is None else f"{value:.1e}"

    print()
    print(f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}, OpenCV "
          f"{__import__('cv2').__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s)")
    print()
    print("| image | size -> resized | input | input rel | proposals ours/theirs | identical, in order | "
          "IoU >= 0.99 (min IoU, max px) | fc6 rel | scores rel | selection 0 | selection 0.2 | gt fc6 rel | "
          "gt scores rel | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image']} | {r['size']} | {r['input']} | {number(r['input_rel'])} | {r['count']} | "
              f"{r['identical']}, {'yes' if r['in_order'] else 'no'} | {r['matched']}/{r['total']} "
              f"({r['min_iou']:.5f}, {r['max_px']:.0e}) | "
              f"{number(r['fc6_rel'])} | {number(r['scores_rel'])} | {r['selection'][0]} | {r['selection'][1]} | "
              f"{number(r['gt_fc6_rel'])} | {number(r['gt_scores_rel'])} | {'yes' if r['ok'] else '**NO**'} |")
    print()
    print("input rel, fc6 rel, scores rel: max |ours - theirs| / max |theirs| (features and scores over the "
          "proposals matched with IoU >= 0.99); min IoU, max px: of each of our proposals with its best match; "
          "selection: boxes of ours found in theirs / ours / theirs "
          f"(100 at most, threshold 0 and 0.2). Criteria: relative differences <= {REL_TOLERANCE:g}; from their "
          "input the same proposals in the same order, from ours every proposal matched; the same selection.")
    print("all criteria met" if not failures else f"criteria NOT met: {'; '.join(failures)}")
    for path in (config_path, checkpoint):
        path.unlink()
    work.rmdir()
    return 0 if not failures else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="a checkout of vqa-maskrcnn-benchmark")
    parser.add_argument("--body", choices=["R-50-FPN", "R-101-FPN", "R-152-FPN"], default="R-152-FPN")
    parser.add_argument("--images", type=int, default=4, choices=range(1, len(IMAGE_SIZES) + 1),
                        metavar=f"1..{len(IMAGE_SIZES)}")
    parser.add_argument("--seed", type=int, default=0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
