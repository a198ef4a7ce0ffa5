"""Plot a pretraining run's curves from its metrics.jsonl (written by train_concap.py).

    python benchmarks/plot_pretrain.py save/concap/logs/metrics.jsonl --output docs/demo_pretrain_curve.png

Left: the training losses (masked tokens, masked regions, alignment) per logged step; dashed, the
same losses on the validation split. Right: held-out alignment accuracy with the 50% chance line.
A resumed run appends the steps it redoes; the last record of each step wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TERMS = (("masked_lm", "masked tokens (MLM)"), ("masked_img", "masked regions (KL)"), ("alignment", "alignment"))


def read_metrics(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """(train records by step, validation records by step)."""
    train, val = {}, {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{line_no}: not JSON ({exc})")
        step = record["step"]
        if any(k.startswith("train/") for k in record):
            train[step] = record
        if any(k.startswith("val/") for k in record):
            val[step] = record
    return train, val


def plot(metrics_file: Path, output: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_metrics(metrics_file)
    if not train:
        raise SystemExit(f"{metrics_file}: no training records")
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for (key, label), colour in zip(TERMS, ("tab:blue", "tab:orange", "tab:green")):
        steps = sorted(s for s in train if f"train/{key}" in train[s])
        losses.plot(steps, [train[s][f"train/{key}"] for s in steps], color=colour, label=f"{label}, train")
        vsteps = sorted(s for s in val if f"val/{key}" in val[s])
        if vsteps:
            losses.plot(vsteps, [val[s][f"val/{key}"] for s in vsteps], color=colour, linestyle="--",
                        marker="o", markersize=3, label=f"{label}, held out")
    losses.set_xlabel("step")
    losses.set_ylabel("loss")
    losses.set_yscale("log")
    losses.legend(fontsize=8)
    losses.grid(alpha=0.3)

    vsteps = sorted(s for s in val if "val/alignment_accuracy" in val[s])
    accuracy.plot(vsteps, [100 * val[s]["val/alignment_accuracy"] for s in vsteps], marker="o", color="tab:green",
                  label="held out")
    tsteps = sorted(s for s in train if "train/alignment_accuracy" in train[s])
    accuracy.plot(tsteps, [100 * train[s]["train/alignment_accuracy"] for s in tsteps], color="tab:green",
                  alpha=0.4, label="train (per log interval)")
    accuracy.axhline(50, color="gray", linestyle=":", label="chance")
    accuracy.axhline(80, color="tab:red", linestyle=":", label="target 80%")
    accuracy.set_ylim(0, 100)
    accuracy.set_xlabel("step")
    accuracy.set_ylabel("alignment accuracy (%)")
    accuracy.legend(fontsize=8, loc="lower right")
    accuracy.grid(alpha=0.3)
    fig.suptitle(title or f"pretraining: {metrics_file}")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", type=Path, help="metrics.jsonl of a run (<output_dir>/<save_name>/logs/)")
    parser.add_argument("--output", type=Path, default=Path("docs/demo_pretrain_curve.png"))
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    print(plot(args.metrics, args.output, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
