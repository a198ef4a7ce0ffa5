"""Image retrieval on Flickr30k (or any retrieval task): score every caption x image pair.

Finetuned (the VL-logit head of a train_tasks.py --tasks 9 checkpoint):
    python eval_retrieval.py --bert_model bert-base-uncased --from_pretrained save/RetrievalFlickr30k_pretrained/best/RetrievalFlickr30k \
        --tasks 9 --split test
Zero-shot (the image-caption alignment head of a pretraining checkpoint, REFERENCE 4):
    python eval_retrieval.py --zero_shot --from_pretrained save/concap/checkpoints/step-N --tasks 9 --split test

Each caption's text layers before the first co-attention block are computed once and shared by
all images; the pairs are scored in batches of --batch_size images. Prints R@1/5/10 for
text->image (image retrieval, as the originals) and image->text (i2t_R@k), and writes under
--output_dir: <split>_<task>[_zero_shot]_scores.npy (captions x images, float32; caption order as
in the annotation file, images in file order), <split>_<task>[_zero_shot]_metrics.{json,md} and
<split>_<task>[_zero_shot]_result.json (each caption's rank and ten best images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vilbert.finetune import (SetupError, build_datasets, build_on_main_first, create_precision, load_task_model,
                              load_tasks, metrics_table, retrieval_metrics, retrieval_scores, split_name,
                              task_token_row, write_metrics)
from vilbert.training import maybe_compile, should_compile
from vilbert.training.cli import add_runtime_arguments, run_script


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", "--task", dest="tasks", default="9", help="the retrieval task's id")
    p.add_argument("--tasks_config", default="vlbert_tasks.yml", help="the tasks file (YAML)")
    p.add_argument("--from_pretrained", required=True, help="our checkpoint dir or an original .bin")
    p.add_argument("--zero_shot", action="store_true",
                   help="score with the pretraining alignment head (a pretraining checkpoint)")
    p.add_argument("--bert_model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    p.add_argument("--config_file", default="config/bert_base_6layer_6conect.json",
                   help="model config for an original .bin (our checkpoint dirs carry their own)")
    p.add_argument("--split", default="test", help="split to rank (test: all_data_final_test_set0_2014.jsonline)")
    p.add_argument("--batch_size", type=int, default=None, help="images per forward pass (default: eval_batch_size)")
    p.add_argument("--output_dir", default="results")
    p.add_argument("--task_specific_tokens", action="store_true", help="the model uses 12-in-1's task tokens")
    add_runtime_arguments(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_script("eval_retrieval.py", evaluate, parse_args(argv))


def evaluate(args, dist) -> int:
    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks
    from vilbert.tasks.metrics import RetrievalEvaluator
    from vilbert.tokenization import load_tokenizer

    tasks = load_tasks(args.tasks, args.tasks_config)
    if len(tasks) != 1:
        raise SetupError(f"--tasks {args.tasks}: give one retrieval task")
    task = next(iter(tasks.values()))
    if task.config.reader != "retrieval":
        raise SetupError(f"task {task.id} ({task.name}) is not a retrieval task (reader {task.config.reader!r})")
    split = split_name(task, args.split)
    if split == task.config.train_split:
        raise SetupError(f"--split {args.split}: that is the training split; rank a held-out split (e.g. test)")
    tokenizer = load_tokenizer(args.bert_model)
    dataset = build_on_main_first(lambda: build_datasets(tasks, tokenizer, split), dist)[task.id]

    model_class = ViLBertForPretraining if args.zero_shot else ViLBertForVLTasks
    model = load_task_model(model_class, args.from_pretrained, args.config_file,
                            task_specific_tokens=args.task_specific_tokens, log=lambda m: None,
                            required=["alignment_head" if args.zero_shot else "vil_logit"])
    model.to(dist.device).eval()
    maybe_compile(model, args.compile, dist.device)
    precision = create_precision(args.precision, dist.device)
    token = task_token_row(task) if model.config.task_specific_tokens else None
    if dist.is_main:
        print(f"{task.name} {split}: {dataset.num_captions} captions x {dataset.num_images} images"
              + (" (zero-shot)" if args.zero_shot else "")
              + ("; compiled" if should_compile(args.compile, dist.device) else ""), file=sys.stderr)
    scores = retrieval_scores(model, dataset, precision=precision, dist=dist, zero_shot=args.zero_shot,
                              batch_size=args.batch_size or task.config.eval_batch_size, task_token=token,
                              progress=True)  # (captions, images)
    metrics = retrieval_metrics(scores, dataset.caption_image_index)

    if dist.is_main:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{split}_{task.name}" + ("_zero_shot" if args.zero_shot else "")
        np.save(output_dir / f"{stem}_scores.npy", scores.numpy().astype(np.float32))
        name = task.name + (" (zero-shot)" if args.zero_shot else "")
        write_metrics(output_dir / f"{stem}_metrics.json", {name: metrics})
        table = metrics_table({name: metrics}, split)
        (output_dir / f"{stem}_metrics.md").write_text(table + "\n")
        evaluator = RetrievalEvaluator(dataset)
        evaluator.update(scores.t().reshape(-1, 1), {"index": torch.arange(scores.numel())})
        evaluator.write(output_dir / f"{stem}_result.json")
        print(table)
        print(f"wrote {output_dir / stem}_*", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
