"""Speed of 12-in-1's detector (vilbert/features/vmb.py): images/s, TFLOP/s and peak memory.

    python benchmarks/bench_detector.py --config x152 --device cuda --batch 4 --size 800x1333
    python benchmarks/bench_detector.py --config small --device cpu --batch 2 --threads 2
    python benchmarks/bench_detector.py --quick        # tiny detector, seconds on a CPU

A timed step is one `VmbExtractor(images)` call on a batch of generated uint8 images of --size
(height x width, before the detector's resize): normalisation and resize on the device, backbone,
RPN, box head over every proposal, 12-in-1's selection, results back on the CPU as numpy. Image
decoding is not in it (the extractor's DataLoader workers do that in parallel). Weights are random
(PyTorch's default init of each layer, frozen batch norm at identity), fp32 (on a GPU, PyTorch's
default lets cuDNN run convolutions in TF32).

Configs (12-in-1's structure: FPN Faster R-CNN, ResNeXt body with stride in the 3x3 conv, 1601 classes):
    x152    R-152-FPN 32x8d, FPN 512 channels, MLP 2048: the released detector's shapes (its config
            file is not public here; FPN 512 and MLP 2048 as the fork's Visual Genome configs), RPN
            test settings at maskrcnn-benchmark's defaults (6000 / 1000 / 2000 proposals)
    small   the parity config of benchmarks/vmb_parity.py (R-152-FPN, 8 groups of width 4, FPN 64,
            MLP 128), the same RPN settings
    tiny    R-50-FPN, 2 groups of width 2, FPN 8, MLP 16, 11 classes, 64-96 px inputs (--quick)

--json PATH appends one JSON object per result in bench_model.py's format (device_check.sh reads it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model import Result, count_flops, device_name, peak_memory_gib, reset_peak, timed  # noqa: E402
from vilbert.features.vmb import VmbConfig, VmbDetector, VmbExtractor  # noqa: E402

FPN = dict(anchor_strides=(4, 8, 16, 32, 64), pooler_resolution=7, pooler_scales=(0.25, 0.125, 0.0625, 0.03125),
           pooler_sampling_ratio=2, stride_in_1x1=False)
CONFIGS = {
    "x152": VmbConfig(body="R-152-FPN", num_groups=32, width_per_group=8, fpn_channels=512, mlp_head_dim=2048,
                      num_classes=1601, **FPN),
    "small": VmbConfig(body="R-152-FPN", num_groups=8, width_per_group=4, stem_out_channels=16, res2_out_channels=64,
                       fpn_channels=64, mlp_head_dim=128, num_classes=1601, pre_nms_top_n=1000,
                       fpn_post_nms_top_n=1000, **FPN),
    "tiny": VmbConfig(body="R-50-FPN", num_groups=2, width_per_group=2, stem_out_channels=8, res2_out_channels=16,
                      fpn_channels=8, mlp_head_dim=16, num_classes=11, pooler_resolution=3, min_size=64, max_size=96,
                      pre_nms_top_n=200, post_nms_top_n=100, fpn_post_nms_top_n=150,
                      **{k: v for k, v in FPN.items() if k != "pooler_resolution"}),
}


def random_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour gradients with rectangles and noise (uint8 RGB): something for the RPN to find."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    images = []
    for _ in range(count):
        image = np.stack([80 + 100 * xx / width, 60 + 120 * yy / height, 140 - 60 * xx / width], -1)
        for _ in range(6):
            h, w = int(rng.integers(height // 8, height // 2)), int(rng.integers(width // 8, width // 2))
            y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        images.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return images


def build(config: VmbConfig, device) -> VmbExtractor:
    torch.manual_seed(0)
    state = VmbDetector(config).state_dict()
    return VmbExtractor.from_state(config, state, device=device, num_features=100, min_boxes=10)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--config", choices=sorted(CONFIGS), default="x152")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--size", default="800x1333", help="generated images' height x width, before the resize")
    p.add_argument("--batch", type=int, default=4, help="images a call")
    p.add_argument("--steps", type=int, default=5, help="timed calls")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no_flops", action="store_true", help="skip the FLOP count (one more call)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="append one JSON object per result to this file")
    p.add_argument("--quick", action="store_true", help="tiny config at 80x120, batch 2, 2 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.size, args.batch, args.steps, args.warmup = "tiny", "80x120", 2, 2, 1
    return args


def main(argv=None) -> Result:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    height, width = (int(v) for v in args.size.lower().split("x"))
    config = CONFIGS[args.config]
    start = time.perf_counter()
    extractor = build(config, device)
    built = time.perf_counter() - start
    images = random_images(args.batch, height, width)
    regions = []

    def run():
        regions[:] = extractor(images)

    for _ in range(args.warmup):
        run()
    reset_peak(device)
    seconds = timed(run, args.steps, device)
    flops = 0 if args.no_flops else count_flops(run)
    kept = sum(len(r.boxes) for r in regions) / len(regions)
    row = Result(
        workload="extract-vmb", config=args.config, device=device.type,
        device_name=device_name(device),
        precision="fp32", compile=False, batch=args.batch, steps=args.steps, unit="images",
        rate=args.batch / seconds, step_ms=seconds * 1000, gflop_per_sample=flops / args.batch / 1e9,
        tflops=flops / seconds / 1e12, peak_memory_gib=peak_memory_gib(device), torch=torch.__version__)
    print(f"extract-vmb (ours): {row.rate:,.2f} images/s, {row.step_ms:,.0f} ms per batch of {args.batch} "
          f"{height}x{width} images, {row.gflop_per_sample:,.0f} GFLOP/image, {row.tflops:.2f} TFLOP/s, "
          f"peak {row.peak_memory_gib:.2f} GiB; {args.config} built in {built:.1f} s, {kept:.0f} boxes kept per image, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(asdict(row)) + "\n")
    return row


if __name__ == "__main__":
    main()
