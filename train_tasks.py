"""Finetune ViLBERT on one or several tasks of the task registry (VQA, VCR, RefCOCO+, retrieval).

One process (task ids from vlbert_tasks.yml; "-" separates ids, as the originals: 6-7 = VCR Q->A
and QA->R together):
    python train_tasks.py --bert_model bert-base-uncased --from_pretrained save/pretrain/checkpoints/step-N \
        --config_file config/bert_base_6layer_6conect.json --learning_rate 4e-5 --tasks 1 --save_name pretrained

N GPUs (either launcher; each task's batch_size in the YAML stays the global batch):
    torchrun --nproc_per_node=8 train_tasks.py ...
    python -m torch.distributed.launch --nproc_per_node=8 --nnodes=1 --node_rank=0 train_tasks.py ...

Several tasks in one run take turns, each at the pace of its own schedule (its num_epoch), with its
loss scaled by its lr / the smallest lr; each is evaluated on its val_split at the end of each of
its epochs. Outputs under <output_dir>/<task names>_<save_name>/: best/<task name>/ (the weights
that scored best on that task, for eval_tasks.py --from_pretrained), checkpoints/step-N/ (for
--resume auto), logs/ (TensorBoard, metrics.jsonl), val_metrics.json (best metrics per task).
The library does the work: vilbert.finetune, vilbert.tasks, vilbert.training.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch

from vilbert.check import preflight
from vilbert.finetune import (SCHEDULES, SetupError, TaskRun, build_datasets, build_on_main_first, build_schedule,
                              classifier_labels, clean_train_sets,
                              create_precision, evaluate_task, init_vil_logit_from_alignment, load_task_model,
                              load_tasks, metrics_table, needs_multitask_heads, primary_metric, run_directory,
                              save_best, task_head_learning_rates, task_token_row, write_metrics)
from vilbert.training import (MetricMeter, TrainingLogger, barrier, build_optimizer, load_training_state, maybe_compile,
                              resolve_resume, should_compile, to_device, train_step, unwrap_model,
                              warmup_linear_schedule, wrap_model)
from vilbert.training.checkpoint import recover_directory, restore_training_state, save_on_main, training_state
from vilbert.training.cli import add_fault_arguments, add_runtime_arguments, check_runtime_arguments, run_script
from vilbert.training.loop import out_of_memory_error
from vilbert.training.optim import (LearningRates, add_fresh_rate_arguments, fresh_parameter_names, fresh_rate,
                                   freeze_text_layers)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tasks = p.add_argument_group("tasks")
    tasks.add_argument("--tasks", default="1", help="task ids of the tasks file: '1', '6-7' (ids separated by - or ,)")
    tasks.add_argument("--tasks_config", default="vlbert_tasks.yml", help="the tasks file (YAML)")
    tasks.add_argument("--num_workers", type=int, default=3, help="DataLoader worker processes per task and rank")
    tasks.add_argument("--skip_check", action="store_true", help="skip the preflight check of the data (vilbert.check)")

    model = p.add_argument_group("model")
    model.add_argument("--bert_model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    model.add_argument("--from_pretrained", default="",
                       help="initial weights: our checkpoint dir, a BERT directory, an original .bin/.tar ('' = random)")
    model.add_argument("--config_file", default="config/bert_base_6layer_6conect.json",
                       help="model config (our checkpoint dirs use their own)")
    model.add_argument("--freeze", type=int, default=-1, help="freeze the text embeddings and text layers 0..N")
    model.add_argument("--text_prefix_cache_gb", type=float, default=2.0,
                       help="CPU training with the text layers before the first co-attention frozen (--freeze) and "
                            "without dropout: keep each text's output of those layers, up to this many GiB (0 = off)")
    model.add_argument("--vil_logit_init", choices=("fresh", "alignment"), default="fresh",
                       help="matching head (VCR, retrieval) of a checkpoint without one: fresh (as the originals) "
                            "or from the pretraining alignment head (aligned - random score)")
    model.add_argument("--task_specific_tokens", action="store_true", help="12-in-1's learned task token after [CLS]")
    model.add_argument("--vl_classifier", choices=("beta", "12in1"), default=None,
                       help="VQA head to start when the checkpoint has none: beta (weight norm) or 12in1 "
                            "(GeLU + LayerNorm); default: the config's")

    train = p.add_argument_group("training")
    train.add_argument("--learning_rate", type=float, default=2e-5, help="lr of the model body")
    train.add_argument("--head_learning_rate", type=float, default=1e-4, help="lr of the task heads (REFERENCE: 1e-4)")
    add_fresh_rate_arguments(train, 1e-4, "1e-4, the rate of vilbert_beta's --vision_scratch")
    train.add_argument("--num_train_epochs", type=float, default=None, help="epochs of every task (default: each task's num_epoch)")
    train.add_argument("--train_batch_size", type=int, default=None,
                       help="global batch of every task (default: each task's batch_size)")
    train.add_argument("--eval_batch_size", type=int, default=None, help="per process (default: each task's eval_batch_size)")
    train.add_argument("--val_subset", type=int, default=0,
                       help="validate on the first N items of each val split (retrieval: N captions x every image); 0 = all")
    train.add_argument("--max_steps", type=int, default=0, help="stop after this many optimizer steps in all (0: no limit)")
    train.add_argument("--warmup_proportion", type=float, default=0.1)
    train.add_argument("--lr_scheduler", choices=("warmup_linear",), default="warmup_linear")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--weight_decay", type=float, default=0.01)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    add_runtime_arguments(p, train, fp16_alias=True)
    add_fault_arguments(train)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--task_schedule", choices=SCHEDULES, default="proportional",
                       help="proportional: each task its own num_epoch, interleaved in proportion to their lengths; "
                            "round_robin: 12-in-1's, every task one batch per round for as many rounds as the "
                            "longest task has steps (small tasks repeat), plateaued tasks paused "
                            "(vilbert.finetune.schedule)")
    train.add_argument("--train_iter_multiplier", type=float, default=1.0,
                       help="round_robin: rounds = this x the longest task's steps (12-in-1's flag)")
    train.add_argument("--train_iter_gap", type=int, default=4,
                       help="round_robin: a task whose validation score plateaued trains only every N rounds "
                            "(12-in-1's flag; unused by the proportional schedule)")
    train.add_argument("--clean_train_sets", action="store_true",
                       help="leave out training items on test images of 12-in-1's lists <dataroot>/cache/"
                            "{coco,flickr,genome}_test_ids.npy, as 12-in-1 does (vilbert.finetune.cleaning)")

    out = p.add_argument_group("output")
    out.add_argument("--output_dir", default="save")
    out.add_argument("--save_name", default="", help="suffix of the run folder <task names>_<save_name>")
    out.add_argument("--resume", default=None, help="'auto' (newest checkpoint of this run, if any) or a checkpoint dir")
    out.add_argument("--save_every", type=int, default=0,
                     help="steps between resumable checkpoints (0: whenever a task ends an epoch; -1: only at the end)")
    out.add_argument("--keep_last", type=int, default=2, help="resumable checkpoints kept (0: all)")
    out.add_argument("--log_every", type=int, default=20, help="steps between logged training averages")
    out.add_argument("--eval_every", type=int, default=0,
                     help="steps between extra evaluations of every task (0: only at each task's epoch ends)")

    args = p.parse_args(argv)
    check_runtime_arguments(p, args)
    for name in ("gradient_accumulation_steps", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.task_schedule == "round_robin" and (args.train_iter_gap < 1 or args.train_iter_multiplier <= 0):
        p.error("--task_schedule round_robin needs --train_iter_gap >= 1 and --train_iter_multiplier > 0")
    return args


def main(argv=None) -> int:
    return run_script("train_tasks.py", train, parse_args(argv), training=True)


def train(args, dist) -> int:
    from vilbert.model import ViLBertForVLTasks
    from vilbert.tokenization import load_tokenizer

    preflight(args, dist)  # bad flag values and bad data: one line now, not a crash hours in
    tasks = load_tasks(args.tasks, args.tasks_config)
    if args.task_specific_tokens:  # a task without a task-token row fails before any data is read
        for task in tasks.values():
            task_token_row(task)
    run_dir = run_directory(args.output_dir, tasks, args.save_name)
    checkpoints_dir = run_dir / "checkpoints"
    try:
        resume_dir = resolve_resume(args.resume, checkpoints_dir)
    except FileNotFoundError as exc:
        raise SetupError(str(exc)) from None
    log = TrainingLogger(None, is_main=dist.is_main, progress_bar=False)  # messages until the real one exists

    # Data. Rank 0 tokenises first and fills the caches (and VQA's answer vocabulary).
    tokenizer = load_tokenizer(args.bert_model)
    train_sets, val_sets = build_on_main_first(
        lambda: (build_datasets(tasks, tokenizer, "train"), build_datasets(tasks, tokenizer, "val")), dist)
    if args.clean_train_sets:
        train_sets = clean_train_sets(tasks, train_sets, log.info)

    # Model.
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    # Retrieval draws its negatives with Python's `random`; DataLoader workers seed it themselves,
    # but with --num_workers 0 the main process draws them, and an unseeded generator made reruns
    # differ (the demo's finetuned retrieval moved between 31.4 and 34.0 R@1).
    random.seed(args.seed + dist.rank)
    state = load_training_state(resume_dir) if resume_dir is not None else None
    source = str(resume_dir) if resume_dir is not None else args.from_pretrained
    model = load_task_model(ViLBertForVLTasks, source, args.config_file, num_labels=classifier_labels(tasks, train_sets),
                            task_specific_tokens=args.task_specific_tokens, vl_classifier=args.vl_classifier,
                            multitask_heads=needs_multitask_heads(tasks), log=log.info)
    if args.vil_logit_init == "alignment" and resume_dir is None and args.from_pretrained \
            and "vil_logit.weight" in model.load_report.missing:
        if init_vil_logit_from_alignment(model, args.from_pretrained):
            log.info("vil_logit starts from the pretraining alignment head (aligned - random score)")
        else:
            log.info(f"--vil_logit_init alignment: {args.from_pretrained} has no alignment head; vil_logit starts fresh")
    frozen = freeze_text_layers(model, args.freeze)
    prefix_cache = dist.device.type == "cpu" and model.vilbert.cache_text_prefix(int(args.text_prefix_cache_gb * 2**30))
    model.to(dist.device)
    maybe_compile(model, args.compile, dist.device)  # in place: parameter names and checkpoints unchanged

    runs = [TaskRun(task, train_sets[task_id], val_sets[task_id],
                    global_batch=args.train_batch_size or task.config.batch_size,
                    accumulation=args.gradient_accumulation_steps,
                    num_epochs=args.num_train_epochs or task.config.num_epoch, dist=dist,
                    num_workers=args.num_workers, seed=args.seed, eval_batch_size=args.eval_batch_size,
                    task_tokens=model.config.task_specific_tokens, val_subset=args.val_subset)
            for task_id, task in tasks.items()]
    schedule = build_schedule(args.task_schedule, runs, multiplier=args.train_iter_multiplier, gap=args.train_iter_gap,
                              max_steps=args.max_steps)
    total_steps = schedule.total_steps

    # Weights the checkpoint did not fill (from BERT: the visual stream, co-attention, poolers) train at
    # the fresh rate (issue 14); a resumed run keeps the names its first start found.
    fresh_names = fresh_parameter_names(model, state)
    rates = LearningRates(args.learning_rate, fresh_names, fresh_rate(args),
                          lr_by_prefix=task_head_learning_rates(model, args.head_learning_rate))
    rates_line = rates.summary(model)
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, lr_by_name=rates.by_name(model))
    lr_steps = schedule.scheduler_steps  # optimizer steps, or round_robin's rounds
    scheduler = warmup_linear_schedule(optimizer, int(args.warmup_proportion * lr_steps), lr_steps)
    scheduler = schedule.wrap_scheduler(scheduler)  # round_robin: steps once per round
    precision = create_precision(args.precision, dist.device)
    # Each step runs one task's head: the other heads get no gradient, which DDP must be told.
    model = wrap_model(model, dist, find_unused_parameters=dist.is_distributed)

    if state is not None:
        if dist.is_main:  # a kill between the two renames of a best save leaves it as best/<name>.old-*
            for run in runs:
                recover_directory(run_dir / "best" / run.task.name)
        if list(state["task_ids"]) != list(tasks):
            raise SetupError(f"--resume {resume_dir}: that run trained tasks {list(state['task_ids'])}, not {list(tasks)}")
        for run in runs:
            run.load_state_dict(state["tasks"][str(run.task.id)])
        try:
            schedule.load_state_dict(state.get("schedule", {}))
        except ValueError as exc:
            raise SetupError(f"--resume {resume_dir}: {exc}") from None
    step = restore_training_state(state, optimizer, scheduler, precision, dist, args.seed, log.info)

    log = TrainingLogger(run_dir / "logs", is_main=dist.is_main, total_steps=total_steps, initial_step=step)
    for run in runs:
        log.info(f"task {run.task.id} {run.task.name}: {len(run.train_set)} training items ({run.task.config.train_split}), "
                 f"{len(run.val_set)} validation items ({run.task.config.val_split}); global batch "
                 f"{run.sampler.global_batch_size} = {dist.world_size} x {run.accumulation} x {run.micro_batch}; "
                 f"{run.steps_per_epoch} steps/epoch x {run.num_epochs:g} epochs; loss scale {run.task.loss_scale:g}")
    if args.task_schedule == "round_robin":
        log.info(f"round_robin: {schedule.rounds} rounds of one step of every task (a plateaued task trains every "
                 f"{args.train_iter_gap} rounds); the lr schedule counts rounds")
    compiled = ", compiled" if should_compile(args.compile, dist.device) else ""
    log.info(f"{total_steps} steps in all on {dist.world_size} process(es), {dist.device}, {precision.mode}{compiled}; "
             f"lr {args.learning_rate:g} (heads {args.head_learning_rate:g})"
             + (f"; resumed from {resume_dir} at step {step}" if resume_dir else "")
             + (f"; {len(frozen)} tensors frozen" if frozen else "")
             + ("; the frozen text prefix is cached" if prefix_cache else ""))
    log.info(rates_line)

    model_config = unwrap_model(model).config

    def evaluate(run: TaskRun) -> float:
        """Evaluate a task, keep its best weights; its primary metric."""
        task = run.task
        evaluator = evaluate_task(model, task, run.val_set, run.val_loader, precision, dist,
                                  task_tokens=model_config.task_specific_tokens,
                                  batch_size=args.eval_batch_size or task.config.eval_batch_size, subset=args.val_subset)
        metrics = evaluator.compute()
        run.evaluated_at = run.steps_done
        log.scalars(step, {f"val/{task.name}/{name}": value for name, value in metrics.items()})
        metric = primary_metric(task)
        value = metrics.get(metric, float("-inf"))
        improved = not run.best or value > run.best["value"]
        log.info(f"step {step} {task.name} {task.config.val_split} (epoch {run.epoch + run.step_in_epoch / run.steps_per_epoch:.2f}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + (" (best)" if improved else ""))
        if improved:
            run.best = {"metric": metric, "value": value, "step": step, "task_step": run.steps_done,
                        "epoch": run.steps_done / run.steps_per_epoch, "split": task.config.val_split, "metrics": metrics}
            if dist.is_main:
                save_best(model, run_dir / "best" / task.name, {"task": task.name, **run.best})
            barrier(dist)
        return value

    def save() -> None:
        def make_state(rng):
            return training_state(rng, optimizer, scheduler, precision, dist, args, rates.fresh_names,
                                  task_ids=list(tasks), tasks={str(run.task.id): run.state_dict() for run in runs},
                                  schedule=schedule.state_dict())

        path = save_on_main(dist, checkpoints_dir, step, model, make_state, args.keep_last)
        if path is not None:
            log.info(f"saved {path}")

    meters = {run.task.id: MetricMeter(("loss",), dist.device, args.max_nonfinite_steps,
                                       label=f"task {run.task.id} ({run.task.name})") for run in runs}
    last_saved = step
    while step < total_steps:
        run = schedule.next_task()
        if run is None:
            break
        micro_batches = [to_device(batch, dist.device) for batch in run.next_batches()]
        with out_of_memory_error(f"task {run.task.id} ({run.task.name})", run.sampler.global_batch_size,
                                 run.micro_batch, run.accumulation):
            out = train_step(model, micro_batches, run.objective, optimizer, scheduler, precision, dist,
                             args.max_grad_norm)
        meters[run.task.id].update(out, step + 1, lambda r=run, e=run.epoch, s=run.step_in_epoch - 1:
                                   f"dataset indices {r.sampler.batch_indices(e, s)} of the {r.task.config.train_split} split")
        step += 1

        if step % args.log_every == 0 or step == total_steps:
            values = {"train/lr": max(out.lrs), "train/lr_body": min(out.lrs)}
            for other in runs:  # every rank holds the same meters: the schedule is deterministic
                meter = meters[other.task.id]
                if meter.steps:  # loss: the task's own, before its loss scale
                    values.update({f"train/{other.task.name}/{k}": v for k, v in meter.compute(dist).items()})
            log.scalars(step, values)
            log.progress(step, {k.split("/")[1]: v for k, v in values.items() if k.endswith("/accuracy")})
        else:
            log.progress(step)

        epoch_ended = run.epoch_finished
        # Evaluates `run` at its epoch ends (round_robin: every task on the round clock).
        for paused in schedule.advance(run, evaluate):
            log.info(f"{paused.task.name} plateaued: it trains every {args.train_iter_gap} rounds "
                     "until its score drops")
        if epoch_ended:
            run.start_next_epoch()
        if args.eval_every and step % args.eval_every == 0:
            for other in runs:
                if other.evaluated_at != other.steps_done:
                    evaluate(other)
        periodic = step % args.save_every == 0 if args.save_every > 0 else (args.save_every == 0 and epoch_ended)
        if periodic and step < total_steps:
            save()
            last_saved = step

    for run in runs:  # stopped by --max_steps mid-epoch: the last weights get evaluated too
        if run.evaluated_at != run.steps_done:
            evaluate(run)
    if last_saved != step:
        save()

    if prefix_cache:
        log.info(unwrap_model(model).vilbert.prefix_cache.summary())
    best = {run.task.name: run.best.get("metrics", {}) for run in runs}
    if dist.is_main:
        write_metrics(run_dir / "val_metrics.json", best)
        log.info("best validation metrics (per task, at its best evaluation):\n" + metrics_table(best))
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
