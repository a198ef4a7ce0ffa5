"""Pretrain ViLBERT on Conceptual Captions (masked tokens, masked regions, image-caption alignment).

One process:
    python train_concap.py --file_path data/conceptual_caption --bert_model bert-base-uncased \
        --from_pretrained bert-base-uncased --config_file config/bert_base_6layer_6conect.json \
        --train_batch_size 512 --learning_rate 1e-4 --num_train_epochs 10 --save_name pretrain

N GPUs on one machine (either launcher; --train_batch_size stays the global batch):
    torchrun --nproc_per_node=8 train_concap.py ...
    python -m torch.distributed.launch --nproc_per_node=8 train_concap.py ...

Several machines (run on each, node_rank 0..N-1, the endpoint being node 0's address):
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK \
        --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=pretrain train_concap.py ...

Outputs under <output_dir>/<save_name>/: checkpoints/step-N/ (save_pretrained + training state;
`--resume auto` continues from the newest), logs/ (TensorBoard events and metrics.jsonl).
The library does the work: vilbert.data.concap (samples), vilbert.training (everything else).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from vilbert.check import preflight
from vilbert.data.concap import ConcapPaths, ConceptualCaptionsDataset, SampleConfig, make_loader
from vilbert.training import (EvalSampler, MetricMeter, Precision, PretrainingObjective, TrainingLogger,
                              TrainSampler, batches_per_step, build_optimizer, evaluate, load_training_state,
                              maybe_compile, resolve_resume, should_compile, to_device, train_step,
                              warmup_linear_schedule, wrap_model)
from vilbert.training.checkpoint import restore_training_state, save_on_main, training_state
from vilbert.training.cli import (SetupError, add_fault_arguments, add_runtime_arguments, build_on_main_first,
                                  check_runtime_arguments, run_script)
from vilbert.training.loop import out_of_memory_error
from vilbert.tokenization import load_tokenizer
from vilbert.training.optim import (LearningRates, add_fresh_rate_arguments, fresh_parameter_names, fresh_rate,
                                   freeze_text_layers)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--file_path", default="data/conceptual_caption",
                      help="folder with Train_GCC-training.tsv, Validation_GCC-1.1.0-Validation.tsv and features/")
    data.add_argument("--train_captions", default=None, help="overrides FILE_PATH/Train_GCC-training.tsv")
    data.add_argument("--val_captions", default=None, help="overrides FILE_PATH/Validation_GCC-1.1.0-Validation.tsv")
    data.add_argument("--features", nargs="+", default=None,
                      help="feature store(s) or folders of *.lmdb shards; overrides FILE_PATH/features")
    data.add_argument("--cache_dir", default=None, help="tokenised-caption cache (default OUTPUT_DIR/cache)")
    data.add_argument("--max_seq_length", type=int, default=36, help="tokens, [CLS] and [SEP] included")
    data.add_argument("--max_region_num", type=int, default=37, help="region rows, the global region included")
    data.add_argument("--visual_target", type=int, default=0, choices=(0, 1),
                      help="masked regions: 0 = KL to the detector class distribution, 1 = feature regression")
    data.add_argument("--mask_overlapping", action="store_true",
                      help="also hide regions with IoU > 0.4 with a masked region (12-in-1's intent)")
    data.add_argument("--objective", type=int, default=0, choices=(0, 1),
                      help="1: no masked-word/region targets on random-caption pairs (12-in-1's --objective 1)")
    data.add_argument("--num_workers", type=int, default=3, help="DataLoader worker processes per rank")
    data.add_argument("--skip_check", action="store_true", help="skip the preflight check of the data (vilbert.check)")

    model = p.add_argument_group("model")
    model.add_argument("--bert_model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    model.add_argument("--from_pretrained", default="",
                       help="initial weights: a BERT directory, an original .bin, or our checkpoint ('' = random)")
    model.add_argument("--config_file", default="config/bert_base_6layer_6conect.json")
    model.add_argument("--freeze", type=int, default=-1, help="freeze the text embeddings and text layers 0..N")

    train = p.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=512, help="global batch over all ranks and accumulation")
    train.add_argument("--eval_batch_size", type=int, default=None, help="per rank (default: the per-rank micro-batch)")
    train.add_argument("--learning_rate", type=float, default=1e-4)
    train.add_argument("--num_train_epochs", type=float, default=10.0)
    train.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (overrides the epochs)")
    train.add_argument("--warmup_proportion", type=float, default=0.1)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--weight_decay", type=float, default=0.01)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--bert_lr_scale", type=float, default=0.1,
                       help="lr factor of the weights a BERT checkpoint initialised (the originals: 0.1)")
    add_fresh_rate_arguments(train, None, "--learning_rate (pretraining's rate is the fresh weights' rate)")
    train.add_argument("--img_weight", type=float, default=1.0, help="weight of the masked-region loss")
    add_runtime_arguments(p, train, fp16_alias=True)
    add_fault_arguments(train)
    train.add_argument("--seed", type=int, default=42)

    out = p.add_argument_group("output")
    out.add_argument("--output_dir", default="save")
    out.add_argument("--save_name", default="concap", help="run folder under OUTPUT_DIR")
    out.add_argument("--resume", default=None, help="'auto' (newest checkpoint of this run, if any) or a checkpoint dir")
    out.add_argument("--save_every", type=int, default=0,
                     help="steps between checkpoints (0: at each epoch end; -1: only at the end), as train_tasks.py")
    out.add_argument("--keep_last", type=int, default=3, help="checkpoints kept (0: all)")
    out.add_argument("--log_every", type=int, default=50, help="steps between logged averages")
    out.add_argument("--eval_every", type=int, default=0,
                     help="steps between validation passes (0: at each epoch end); the last step is always validated")

    args = p.parse_args(argv)
    check_runtime_arguments(p, args)
    for name in ("gradient_accumulation_steps", "train_batch_size", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def build_model(args, resume_dir: Path | None, log: TrainingLogger):
    """The pretraining model and the names of its BERT-initialised parameters (trained at 0.1x lr)."""
    from vilbert import ViLBertConfig, ViLBertForPretraining

    if resume_dir is not None:  # weights (and config) from the checkpoint; the optimizer state follows
        return ViLBertForPretraining.from_pretrained(resume_dir), None
    config = ViLBertConfig.from_json_file(args.config_file)
    config.visual_target = args.visual_target
    config.img_weight = args.img_weight
    if not args.from_pretrained:
        return ViLBertForPretraining(config), []
    model = ViLBertForPretraining.from_pretrained(args.from_pretrained, config=config)
    report = model.load_report
    log.info(report.summary())
    return model, bert_initialised_names(model, report)


def bert_initialised_names(model, report) -> list[str]:
    """Our names of the parameters whose values came from a text-only BERT checkpoint, from the
    load report (none when the source was a ViLBERT checkpoint: continuing pretraining keeps one
    learning rate, as the originals)."""
    if report is None or report.format != "huggingface-bert":
        return []
    from vilbert.convert import normalize_original_key, to_our_key

    ours = {name for name, _ in model.named_parameters()}
    names = {to_our_key(normalize_original_key(key)) for key in report.loaded}
    return sorted(names & ours)


def build_datasets(args, dist) -> tuple[ConceptualCaptionsDataset, ConceptualCaptionsDataset]:
    """Training and validation sets. Rank 0 builds them first (tokenising and filling the cache),
    then the other ranks read the cache; an error on rank 0 stops every rank."""
    sample_config = SampleConfig(max_seq_length=args.max_seq_length, max_region_num=args.max_region_num,
                                 visual_target=args.visual_target, mask_overlapping=args.mask_overlapping,
                                 objective=args.objective, seed=args.seed)
    paths = ConcapPaths.from_dir(args.file_path, args.train_captions, args.val_captions, args.features)
    cache_dir = args.cache_dir or Path(args.output_dir) / "cache"

    def build():
        tokenizer = load_tokenizer(args.bert_model)
        return tuple(ConceptualCaptionsDataset(p, paths.features, tokenizer, sample_config, cache_dir)
                     for p in (paths.train_captions, paths.val_captions))

    # Missing files, too many missing images (MissingImagesError) or bad lines stop every rank early.
    return build_on_main_first(build, dist, errors=(FileNotFoundError, ValueError, RuntimeError))


def main(argv=None) -> int:
    return run_script("train_concap.py", train, parse_args(argv), training=True)


def train(args, dist) -> int:
    preflight(args, dist)  # bad flag values and bad data: one line now, not a crash hours in
    run_dir = Path(args.output_dir) / args.save_name
    checkpoints_dir = run_dir / "checkpoints"
    resume_dir = resolve_resume(args.resume, checkpoints_dir)
    log = TrainingLogger(None, is_main=dist.is_main, progress_bar=False)  # messages until the real one exists

    world = dist.world_size
    accumulation = args.gradient_accumulation_steps
    if args.train_batch_size % (world * accumulation):
        raise SetupError(f"--train_batch_size {args.train_batch_size} must be divisible by "
                         f"{world} processes x {accumulation} accumulation steps")
    micro_batch = args.train_batch_size // (world * accumulation)

    train_set, val_set = build_datasets(args, dist)

    sampler = TrainSampler(len(train_set), args.train_batch_size, dist.rank, world, seed=args.seed)
    pin = dist.device.type == "cuda"
    train_loader = make_loader(train_set, sampler, micro_batch, args.num_workers, pin, seed=args.seed)
    val_loader = make_loader(val_set, EvalSampler(len(val_set), dist.rank, world), args.eval_batch_size or micro_batch,
                             args.num_workers, pin, seed=args.seed)
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = args.max_steps or math.ceil(args.num_train_epochs * steps_per_epoch)

    # Model, optimizer, schedule, precision.
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    state = load_training_state(resume_dir) if resume_dir is not None else None
    model, bert_names = build_model(args, resume_dir, log)
    fresh_names = fresh_parameter_names(model, state)
    if state is not None:
        bert_names = list(state["bert_initialised_names"])
    frozen = freeze_text_layers(model, args.freeze)
    model.to(dist.device)
    maybe_compile(model, args.compile, dist.device)  # in place: parameter names and checkpoints unchanged
    rates = LearningRates(args.learning_rate, fresh_names, fresh_rate(args),
                          scaled={name: args.bert_lr_scale for name in bert_names})
    rates_line = rates.summary(model)
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, lr_by_name=rates.by_name(model),
                                eps=args.adam_epsilon)
    scheduler = warmup_linear_schedule(optimizer, int(args.warmup_proportion * total_steps), total_steps)
    precision = Precision.create(args.precision, dist.device)
    model = wrap_model(model, dist)
    objective = PretrainingObjective(args.img_weight)

    # Each rank draws its own dropout masks (the data randomness is keyed by sample, not by rank).
    step = restore_training_state(state, optimizer, scheduler, precision, dist, args.seed, log.info)
    epoch, step_in_epoch = (state["epoch"], state["step_in_epoch"]) if state is not None else (0, 0)

    log = TrainingLogger(run_dir / "logs", is_main=dist.is_main, total_steps=total_steps, initial_step=step)
    compiled = ", compiled" if should_compile(args.compile, dist.device) else ""
    log.info(f"{len(train_set)} training and {len(val_set)} validation captions; {world} process(es) on "
             f"{dist.device}, {precision.mode}{compiled}; global batch {args.train_batch_size} = {world} x "
             f"{accumulation} x {micro_batch}; {steps_per_epoch} steps/epoch, {total_steps} steps"
             + (f"; resumed from {resume_dir} at step {step}" if resume_dir else "")
             + (f"; {len(bert_names)} BERT-initialised tensors at {args.bert_lr_scale:g}x lr" if bert_names else "")
             + (f"; {len(frozen)} tensors frozen" if frozen else ""))
    log.info(rates_line)

    validated_at = []

    def validate():
        validated_at.append(step)
        metrics = evaluate(model, val_loader, objective, precision, dist)
        log.scalars(step, {f"val/{k}": v for k, v in metrics.items()})
        log.info(f"step {step} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def save(epoch_of_next: int, step_in_next: int):
        def make_state(rng):
            return training_state(rng, optimizer, scheduler, precision, dist, args, rates.fresh_names,
                                  epoch=epoch_of_next, step_in_epoch=step_in_next,
                                  bert_initialised_names=list(bert_names or []))

        path = save_on_main(dist, checkpoints_dir, step, model, make_state, args.keep_last)
        if path is not None:
            log.info(f"saved {path}")

    def image_ids(epoch_of_step: int, step_of_epoch: int) -> list[str]:
        return [str(train_set.image_ids[i]) for i in sampler.batch_indices(epoch_of_step, step_of_epoch)]

    meter = MetricMeter(objective.names, dist.device, args.max_nonfinite_steps)
    last_saved = step
    if step_in_epoch >= steps_per_epoch:  # saved at the very end of an epoch
        epoch, step_in_epoch = epoch + 1, 0
    while step < total_steps:
        sampler.set_epoch(epoch, step_in_epoch)
        for micro_batches in batches_per_step(train_loader, accumulation, where="the training captions"):
            micro_batches = [to_device(batch, dist.device) for batch in micro_batches]
            with out_of_memory_error("on Conceptual Captions", args.train_batch_size, micro_batch, accumulation):
                out = train_step(model, micro_batches, objective, optimizer, scheduler, precision, dist,
                                 args.max_grad_norm)
            meter.update(out, step + 1, lambda e=epoch, s=step_in_epoch: f"image ids {image_ids(e, s)}")
            step += 1
            step_in_epoch += 1
            end_of_epoch = step_in_epoch == steps_per_epoch
            if step % args.log_every == 0 or step == total_steps:
                values = meter.compute(dist, objective.weights, prefix="train/")
                values["train/lr"] = max(out.lrs)  # groups: the base lr, and 0.1x for BERT weights
                if bert_names:
                    values["train/lr_bert"] = min(out.lrs)
                log.scalars(step, values)
                log.progress(step, {"loss": values["train/loss"]})
            else:
                log.progress(step)
            if args.eval_every > 0 and step % args.eval_every == 0 and step < total_steps:
                validate()
            if args.save_every > 0 and step % args.save_every == 0 and step < total_steps:
                save(epoch, step_in_epoch)
                last_saved = step
            if step >= total_steps:
                break
        if step_in_epoch == steps_per_epoch:
            summary = train_set.missing_summary()
            if summary:
                log.info(f"epoch {epoch}: {summary}")
            if args.eval_every == 0:
                validate()
            epoch, step_in_epoch = epoch + 1, 0
            if args.save_every == 0:
                save(epoch, 0)
                last_saved = step
    if last_saved != step:
        summary = train_set.missing_summary()
        if summary:
            log.info(f"epoch {epoch} (stopped at step {step}): {summary}")
    if not validated_at or validated_at[-1] != step:
        validate()
    if last_saved != step:
        save(epoch, step_in_epoch)
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
