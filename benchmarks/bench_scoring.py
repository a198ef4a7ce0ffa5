"""Retrieval scoring of a real checkpoint on a real retrieval split: time, FLOPs and rate per caption.

    python benchmarks/bench_scoring.py --checkpoint results/demo/runs/pretrain/checkpoints/step-1500 \
        --tasks_config data/demo/vlbert_tasks.yml --zero_shot --captions 100 --rounds 2
    python benchmarks/bench_scoring.py ... --zero_shot --captions_per_call 1,2,4,8   # several captions a call
    python benchmarks/bench_scoring.py ... --zero_shot --profile                     # where the time goes

Default: eval_retrieval.py's own loop (vilbert.finetune.evaluate.retrieval_scores) on the first
--captions captions of the split against every picture of it; prints ms per caption, GFLOP per
caption (torch.utils.flop_counter, counted on the same captions) and GFLOP/s, per round.
--captions_per_call K,...: the longest of those captions, K copies of it against every picture in
one forward call (as batching captions of one length would), ms per caption for each K, alternating
the K's in each round. --profile: one more pass under torch.profiler, its operators by self CPU time.
docs/PERFORMANCE.md (session 8) has the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilbert.finetune import build_datasets, create_precision, load_task_model, load_tasks  # noqa: E402
from vilbert.finetune import pair_scores, retrieval_scores  # noqa: E402
from vilbert.tokenization import load_tokenizer  # noqa: E402
from vilbert.training import init_distributed  # noqa: E402


def score_copies(model, caption: dict, images: dict, copies: int, zero_shot: bool) -> torch.Tensor:
    """Scores of `copies` copies of one caption against every picture, in one forward call
    (eval_retrieval's own pair scoring, `pair_scores`, on a prefix repeated per picture)."""
    prefix = model.vilbert.encode_text_prefix(caption["input_ids"], caption["token_type_ids"], caption["attention_mask"])
    num_images = images["image_feat"].shape[0]
    inputs = {key: value.repeat(copies, *([1] * (value.dim() - 1))) for key, value in images.items()}
    prefix = prefix.expand(copies, -1, -1).repeat_interleave(num_images, 0)
    return pair_scores(model, dict(inputs, input_ids=None, token_type_ids=None, attention_mask=None), prefix, zero_shot)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a pretraining (--zero_shot) or retrieval-finetuned checkpoint")
    p.add_argument("--tasks_config", required=True)
    p.add_argument("--task", default="9", help="the retrieval task id")
    p.add_argument("--split", default="test")
    p.add_argument("--bert_model", default=None, help="tokenizer (default: the offline MiniLM)")
    p.add_argument("--zero_shot", action="store_true")
    p.add_argument("--captions", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=128, help="pictures a call (eval_retrieval's --batch_size)")
    p.add_argument("--captions_per_call", default="", help="comma-separated K's (see above)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--precision", default="fp32")
    args = p.parse_args(argv)
    if args.bert_model is None:
        from vilbert.offline import minilm_path

        args.bert_model = str(minilm_path())

    from torch.utils.flop_counter import FlopCounterMode

    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks

    tasks = load_tasks(args.task, args.tasks_config)
    dataset = build_datasets(tasks, load_tokenizer(args.bert_model), args.split)[int(args.task)]
    model = load_task_model(ViLBertForPretraining if args.zero_shot else ViLBertForVLTasks, args.checkpoint, None,
                            log=lambda m: None).eval()
    dist = init_distributed(device="cpu")
    precision = create_precision(args.precision, dist.device)
    captions = min(args.captions, dataset.num_captions)

    def score_all():
        return retrieval_scores(model, dataset, precision=precision, dist=dist, zero_shot=args.zero_shot,
                                batch_size=args.batch_size, captions=captions)

    with FlopCounterMode(display=False) as counter:
        score_all()
    gflop = counter.get_total_flops() / 1e9 / captions
    print(f"{captions} captions x {dataset.num_images} pictures: {gflop:.2f} GFLOP a caption "
          f"({1e3 * gflop / dataset.num_images:.0f} MFLOP a pair)")

    if not args.captions_per_call:
        for round_ in range(args.rounds):
            started = time.perf_counter()
            score_all()
            seconds = (time.perf_counter() - started) / captions
            print(f"round {round_ + 1}: {1e3 * seconds:.1f} ms a caption, {gflop / seconds:.0f} GFLOP/s")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                score_all()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        return 0

    lengths = np.asarray(dataset.text["attention_mask"])[:captions].sum(1)
    row, length = int(lengths.argmax()), int(lengths.max())
    caption = {key: torch.as_tensor(np.asarray(dataset.text[key])[row:row + 1, :length]).long()
               for key in ("input_ids", "token_type_ids", "attention_mask")}
    arrays = [dataset.image_arrays(i) for i in range(dataset.num_images)]
    images = {"image_feat": torch.from_numpy(np.stack([a["image_feat"] for a in arrays])),
              "image_loc": torch.from_numpy(np.stack([a["image_loc"] for a in arrays])),
              "image_attention_mask": torch.from_numpy(np.stack([a["image_attention_mask"] for a in arrays])).long()}
    ks = [int(k) for k in args.captions_per_call.split(",")]
    with torch.no_grad(), precision.autocast():
        reference = score_copies(model, caption, images, 1, args.zero_shot)
        for round_ in range(args.rounds):
            for k in ks:
                score_copies(model, caption, images, k, args.zero_shot)  # warm-up of this shape
                calls = max(1, max(ks) // k)
                started = time.perf_counter()
                for _ in range(calls):
                    scores = score_copies(model, caption, images, k, args.zero_shot)
                seconds = (time.perf_counter() - started) / (calls * k)
                torch.testing.assert_close(scores.view(k, -1), reference.view(1, -1).expand(k, -1), rtol=1e-4, atol=1e-5)
                print(f"round {round_ + 1}: {k} caption(s) of {length} tokens a call: {1e3 * seconds:.1f} ms a caption")
    return 0


if __name__ == "__main__":
    sys.exit(main())
