"""Training step with and without the text-prefix cache (TextPrefixCache), side by side.

The demo's finetuning freezes the MiniLM text layers before the first co-attention block and has no
dropout, so train_tasks.py keeps each text's output of those layers. This times one training step
(vilbert.training.train_step: VQA head and loss, fused AdamW) of config/demo_minilm.json on the CPU,
alternating blocks of steps with the cache off and on (every row cached after the first step, as from
a finetuning run's second epoch):

    python benchmarks/bench_prefix_cache.py --batch 32 --tokens 16 --regions 8   # the demo's VQA batch
    python benchmarks/bench_prefix_cache.py --batch 64 --tokens 36 --regions 24  # its VCR QA->R batch (16 x 4 rows)
    python benchmarks/bench_prefix_cache.py --quick   # tiny config, dropout off: checks that it runs

Inputs, model, objective and step are bench_model.py's (synthetic_batch with padding, build_model,
HeadObjective, training_runner, alternating).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model import (  # noqa: E402
    HeadObjective, Workload, alternating, build_model, synthetic_batch, training_runner, without_dropout)
from vilbert.config import ViLBertConfig  # noqa: E402
from vilbert.training import Precision  # noqa: E402
from vilbert.training.optim import freeze_text_layers  # noqa: E402


def main(argv=None) -> dict:
    """Median seconds a step without and with the cache, and the rows the cache served:
    {"plain": s, "cached": s, "hits": rows}."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "config" / "demo_minilm.json"))
    p.add_argument("--batch", type=int, default=32, help="text rows a step")
    p.add_argument("--tokens", type=int, default=16, help="padded length; each row keeps half to all of it")
    p.add_argument("--regions", type=int, default=8, help="padded regions; each row keeps half to all of them")
    p.add_argument("--steps", type=int, default=8, help="steps a block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny config with dropout off, batch 4, 1 step, 2 rounds")
    args = p.parse_args(argv)

    config = ViLBertConfig.from_json_file(args.config)
    if args.quick:
        config = without_dropout(ViLBertConfig.from_json_file(REPO / "config" / "vilbert_tiny.json"))
        args.config, args.batch, args.steps, args.rounds = "vilbert_tiny.json", 4, 1, 2
    device = torch.device("cpu")  # the cache serves CPU training
    workload = Workload("prefix-cache", args.tokens, args.regions, "vil_prediction")
    model = build_model(config, workload, device).train()
    freeze_text_layers(model, config.t_biattention_id[0] - 1)
    batch = synthetic_batch(config, workload, args.batch, device, padded=True)
    if not model.vilbert.cache_text_prefix():
        raise SystemExit(f"{args.config}: the text prefix is not constant (dropout?), nothing to cache")
    cache = model.vilbert.prefix_cache
    run = training_runner(model, HeadObjective(workload.head), [batch], Precision.create("fp32", device), device,
                          lr=1e-4)

    def step(cached: bool):
        def call():
            model.vilbert.prefix_cache = cache if cached else None
            run()
        return call

    for cached in (False, True, False, True):  # warm-up; fills the cache
        step(cached)()
    times = alternating({"plain": step(False), "cached": step(True)}, args.rounds, args.steps, device)
    plain, cached = times["plain"], times["cached"]
    print(f"batch {args.batch} x {args.tokens} tokens, {args.regions} regions, {torch.get_num_threads()} threads: "
          f"without the cache {1000 * plain:.0f} ms a step, with it {1000 * cached:.0f} ms ({plain / cached:.2f}x)")
    return dict(times, hits=cache.hits)


if __name__ == "__main__":
    main()
