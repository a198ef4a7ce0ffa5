"""Training step with and without the text-prefix cache (TextPrefixCache), side by side.

The demo's finetuning freezes the MiniLM text layers before the first co-attention block and has no
dropout, so train_tasks.py keeps each text's output of those layers. This times one training step
(VQA head, fused AdamW) of config/demo_minilm.json on the CPU, alternating blocks of steps with the
cache off and on (every row cached after the first step, as from a finetuning run's second epoch):

    python benchmarks/bench_prefix_cache.py --batch 32 --tokens 16 --regions 8   # the demo's VQA batch
    python benchmarks/bench_prefix_cache.py --batch 64 --tokens 36 --regions 24  # its VCR QA->R batch (16 x 4 rows)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vilbert.config import ViLBertConfig
from vilbert.model import ViLBertForVLTasks
from vilbert.training.optim import freeze_text_layers

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "config" / "demo_minilm.json"))
    p.add_argument("--batch", type=int, default=32, help="text rows a step")
    p.add_argument("--tokens", type=int, default=16, help="padded length; each row keeps half to all of it")
    p.add_argument("--regions", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="steps a block")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    config = ViLBertConfig.from_json_file(args.config)
    model = ViLBertForVLTasks(config, num_labels=200).train()
    freeze_text_layers(model, config.t_biattention_id[0] - 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    B, T, R = args.batch, args.tokens, args.regions
    ids = torch.randint(1000, 2000, (B, T))
    mask = (torch.arange(T) < torch.randint(T // 2, T + 1, (B, 1))).long()
    inputs = dict(input_ids=ids * mask, token_type_ids=torch.zeros_like(ids), attention_mask=mask,
                  image_feat=torch.randn(B, R, config.v_feature_size), image_loc=torch.rand(B, R, 5),
                  image_attention_mask=torch.ones(B, R, dtype=torch.long))
    if not model.vilbert.cache_text_prefix():
        raise SystemExit(f"{args.config}: the text prefix is not constant (dropout?), nothing to cache")
    cache = model.vilbert.prefix_cache

    def step(cached: bool) -> None:
        model.vilbert.prefix_cache = cache if cached else None
        out = model(**inputs, heads={"vil_prediction"})
        out.vil_prediction.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for cached in (False, True, False, True):  # warm-up; fills the cache
        step(cached)
    times = {False: [], True: []}
    for _ in range(args.rounds):
        for cached in (False, True):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(cached)
            times[cached].append((time.perf_counter() - start) / args.steps)
    plain, cached = statistics.median(times[False]), statistics.median(times[True])
    print(f"batch {B} x {T} tokens, {R} regions, {torch.get_num_threads()} threads: without the cache "
          f"{1000 * plain:.0f} ms a step, with it {1000 * cached:.0f} ms ({plain / cached:.2f}x)")


if __name__ == "__main__":
    main()
