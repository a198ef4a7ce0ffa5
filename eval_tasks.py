"""Evaluate a finetuned ViLBERT on tasks of the task registry: metrics and official result files.

    python eval_tasks.py --bert_model bert-base-uncased --from_pretrained save/VQA_pretrained/best/VQA \
        --tasks 1 --split minval --output_dir results/vqa
    python eval_tasks.py ... --tasks 1 --split test        # the VQA test-dev/test-std submission file
    python eval_tasks.py ... --tasks_config vilbert_tasks.yml --tasks 1-5-6-8-10-12-13-15 \
        --from_pretrained multi_task_model.bin --task_specific_tokens   # 12-in-1's release, task by task

Prints a metrics table and writes <output_dir>/<split>_metrics.json ({task name: {metric: value}},
values in percent; "val" when --split is not given: each task's val_split) and one result file
per task, <output_dir>/<split>_<task name>_result.json: VQA [{"question_id", "answer"}], VCR each
option's probability (and <split>_VCR_Q-AR_result.json with both when tasks 6 and 7 run together,
adding the Q->AR metric), RefCOCO+ the picked box per expression, retrieval each caption's rank.
Under torchrun / torch.distributed.launch every rank evaluates a share; rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vilbert.check import preflight
from vilbert.finetune import (SetupError, build_datasets, build_on_main_first, create_precision, evaluate_task,
                              load_task_model, load_tasks, make_loader, metrics_table, needs_multitask_heads, split_name,
                              task_token_row, write_metrics)
from vilbert.training import EvalSampler, maybe_compile
from vilbert.training.cli import add_runtime_arguments, run_script


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", "--task", dest="tasks", default="1", help="task ids: '1', '6-7', '1,9,11'")
    p.add_argument("--tasks_config", default="vlbert_tasks.yml", help="the tasks file (YAML)")
    p.add_argument("--from_pretrained", required=True,
                   help="finetuned weights: our checkpoint dir (e.g. <run>/best/<task>), or an original .bin")
    p.add_argument("--bert_model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    p.add_argument("--config_file", default="config/bert_base_6layer_6conect.json",
                   help="model config for an original .bin (our checkpoint dirs carry their own)")
    p.add_argument("--split", default=None,
                   help="split of every task (e.g. val, minval, test); default: each task's val_split")
    p.add_argument("--batch_size", type=int, default=None, help="per process (default: each task's eval_batch_size)")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--skip_check", action="store_true", help="skip the preflight check of the data (vilbert.check)")
    p.add_argument("--output_dir", default="results")
    p.add_argument("--task_specific_tokens", action="store_true", help="the model uses 12-in-1's task tokens")
    add_runtime_arguments(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_script("eval_tasks.py", evaluate, parse_args(argv))


def evaluate(args, dist) -> int:
    from vilbert.model import ViLBertForVLTasks
    from vilbert.tasks.metrics import VCREvaluator, joint_metrics, vcr_joint, write_json
    from vilbert.tokenization import load_tokenizer

    preflight(args, dist)  # bad flag values and bad data: one line before any model is loaded
    tasks = load_tasks(args.tasks, args.tasks_config)
    tokenizer = load_tokenizer(args.bert_model)
    datasets = build_on_main_first(lambda: build_datasets(tasks, tokenizer, args.split), dist)
    model = load_task_model(ViLBertForVLTasks, args.from_pretrained, args.config_file,
                            task_specific_tokens=args.task_specific_tokens, log=lambda m: None,
                            multitask_heads=needs_multitask_heads(tasks), required=sorted({task.head for task in tasks.values()}))
    for task_id, task in tasks.items():
        if model.config.task_specific_tokens:  # a task without a row fails before any task is evaluated
            task_token_row(task)
        labels = getattr(datasets[task_id], "num_labels", 1)
        if task.head == "vil_prediction" and labels != model.num_labels:
            raise SetupError(f"{args.from_pretrained}: its classifier has {model.num_labels} answers, but task "
                             f"{task_id} ({task.name}) has {labels}: not a checkpoint finetuned on this task")
    model.to(dist.device).eval()
    maybe_compile(model, args.compile, dist.device)
    precision = create_precision(args.precision, dist.device)
    split = args.split or "val"
    output_dir = Path(args.output_dir)

    evaluators, metrics = {}, {}
    for task_id, task in tasks.items():
        dataset = datasets[task_id]
        batch_size = args.batch_size or task.config.eval_batch_size
        loader = make_loader(dataset, EvalSampler(len(dataset), dist.rank, dist.world_size, keys=False), batch_size,
                             args.num_workers, dist.device.type == "cuda")
        evaluator = evaluate_task(model, task, dataset, loader, precision, dist,
                                  task_tokens=model.config.task_specific_tokens, batch_size=batch_size,
                                  progress=True)
        evaluators[task.name] = evaluator
        metrics[task.name] = evaluator.compute()
        if dist.is_main:
            path = evaluator.write(task.result_file(output_dir, split))
            print(f"{task.name} ({split_name(task, args.split)}): {len(dataset)} items -> {path}", file=sys.stderr)
    for name, extra in joint_metrics(evaluators).items():  # Q->AR when both VCR tasks ran
        metrics[name].update(extra)
    vcr = {e.dataset.mode: e for e in evaluators.values() if isinstance(e, VCREvaluator)}
    if dist.is_main:
        if set(vcr) == {"q2a", "qa2r"}:
            write_json(output_dir / f"{split}_VCR_Q-AR_result.json", vcr_joint(vcr["q2a"], vcr["qa2r"])[1])
        path = write_metrics(output_dir / f"{split}_metrics.json", metrics)
        print(metrics_table(metrics, split) if any(metrics.values()) else f"no labels on split {split}: "
              "result files only (e.g. the VQA test-dev/test-std submission)")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
