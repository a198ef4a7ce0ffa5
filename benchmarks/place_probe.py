"""Can a ViLBERT learn where a region is? A synthetic check of the box-location path.

    python benchmarks/place_probe.py --task top                          # the originals' init: chance
    python benchmarks/place_probe.py --task top --feature-scale 0        # no features: learned at once
    python benchmarks/place_probe.py --task top --location-init-std 0.6  # location visible: learned
    python benchmarks/place_probe.py --task above --location-init-std 0.44 --steps 300
    python benchmarks/place_probe.py --task top --location-encoding fourier  # config's v_location_encoding
    python benchmarks/place_probe.py --task above --location-encoding fourier --examples 440 --steps 600

A model of --config from scratch, trained with its VL-classifier head on random regions: each
region's feature is one of six random 2048-d "kinds" at detector scale (N(0, 0.83^2) per value, norm
about 37) plus noise, its box a 0.15 x 0.15 square at a random place. Tasks (2 answers):
  kind   one box; is its kind one of the first three?         (appearance only: the control)
  top    one box; is it in the top half of the picture?       (place only)
  above  boxes of kinds 0 and 1 in random order; is the kind-0 box above the kind-1 box?
         (find each box by its appearance, then compare places)
Batch 32, AdamW (eps 1e-8), body lr 1e-4, head lr 1e-3, bf16 autocast on the CPU (--precision).
Prints the mean training accuracy of every 50 steps. Every batch is drawn afresh unless --examples N:
then batches are drawn from one fixed set of N examples (as a small data set is seen over many
epochs), and each report adds the accuracy on 1024 examples never trained on. docs/DEMO.md ("What
limits VQA") has the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilbert import ViLBertConfig  # noqa: E402
from vilbert.config import LOCATION_ENCODINGS  # noqa: E402
from vilbert.model import ViLBertForVLTasks  # noqa: E402


QUESTION = (101, 2003, 2009, 2327, 1029, 102)  # "[CLS] is it top? [SEP]" in the BERT uncased vocabulary


def make_batch(task: str, kinds: torch.Tensor, feature_scale: float, size: int, question=QUESTION):
    """(input_ids, image_feat, image_loc, labels) for one batch; region 0 is the global region.
    The question is the same for every picture: only the regions tell the answer."""
    boxes = 1 if task in ("kind", "top") else 2
    if task == "above":
        kind = torch.stack([torch.randperm(2) for _ in range(size)])  # (B, 2): kinds 0 and 1
    else:
        kind = torch.randint(len(kinds), (size, boxes))  # (B, 1)
    corner = torch.rand(size, boxes, 2) * 0.8  # x1, y1
    location = torch.cat([corner, corner + 0.15, torch.full((size, boxes, 1), 0.15 * 0.15)], -1)  # (B, n, 5)
    feature = feature_scale * (kinds[kind] + 0.1 * torch.randn(size, boxes, kinds.shape[1]))  # (B, n, 2048)
    if task == "kind":
        label = (kind[:, 0] < 3).long()
    elif task == "top":
        label = (corner[:, 0, 1] + 0.075 < 0.5).long()
    else:
        first = kind[:, 0] == 0
        y_a = torch.where(first, corner[:, 0, 1], corner[:, 1, 1])
        y_b = torch.where(first, corner[:, 1, 1], corner[:, 0, 1])
        label = (y_a < y_b).long()
    image_feat = torch.cat([feature.mean(1, keepdim=True), feature], 1)
    image_loc = torch.cat([torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]).expand(size, 1, 5), location], 1)
    input_ids = torch.tensor([question]).expand(size, -1)
    return input_ids, image_feat, image_loc, label


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("kind", "top", "above"), default="top")
    p.add_argument("--config", default=str(REPO / "config" / "demo_minilm.json"))
    p.add_argument("--location-init-std", type=float, default=None,
                   help="std of the location projection's initial weights (default: the config's initializer_range)")
    p.add_argument("--location-encoding", choices=LOCATION_ENCODINGS, default=None,
                   help="the config's v_location_encoding (default: the config file's)")
    p.add_argument("--feature-scale", type=float, default=1.0, help="multiplies every region feature (0: none)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--examples", type=int, default=0,
                   help="train on one fixed set of this many examples and report held-out accuracy (0: fresh batches)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    config = ViLBertConfig.from_json_file(args.config)
    config.vl_classifier = "12in1"
    if args.location_encoding is not None:
        config.v_location_encoding = args.location_encoding
    model = ViLBertForVLTasks(config, num_labels=2)
    if args.location_init_std is not None:
        torch.nn.init.normal_(model.vilbert.region_embeddings.location_projection.weight, std=args.location_init_std)
    kinds = torch.randn(6, config.v_feature_size) * 0.83
    question = QUESTION if config.vocab_size > max(QUESTION) else (1, 2, 3, 4)  # a tiny test config
    head = [p for n, p in model.named_parameters() if n.startswith("vil_prediction")]
    body = [p for n, p in model.named_parameters() if not n.startswith("vil_prediction")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-3}], eps=1e-8)
    pool = make_batch(args.task, kinds, args.feature_scale, args.examples, question) if args.examples else None
    held_out = make_batch(args.task, kinds, args.feature_scale, 1024, question) if args.examples else None
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def scores(input_ids, image_feat, image_loc):
        with autocast:
            return model(input_ids, image_feat, image_loc, heads=["vil_prediction"]).vil_prediction.float()

    model.train()
    hits = []
    for step in range(1, args.steps + 1):
        if pool is None:
            input_ids, image_feat, image_loc, label = make_batch(args.task, kinds, args.feature_scale, 32, question)
        else:
            pick = torch.randint(args.examples, (32,))
            input_ids, image_feat, image_loc, label = (x[pick] for x in pool)
        logits = scores(input_ids, image_feat, image_loc)
        loss = F.cross_entropy(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hits.append((logits.argmax(1) == label).float().mean())
        if step % 50 == 0:
            line = f"{args.task} step {step}: training accuracy {100 * torch.stack(hits[-50:]).mean():.1f}%"
            if held_out is not None:
                model.eval()
                with torch.no_grad():
                    right = (scores(*held_out[:3]).argmax(1) == held_out[3]).float().mean()
                model.train()
                line += f", held out {100 * right:.1f}%"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
