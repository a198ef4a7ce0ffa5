"""Training machinery shared by pretraining (train_concap.py) and finetuning (train_tasks.py).

    distributed   init_distributed, DistInfo, wrap_model, unwrap_model, all_reduce_sum, barrier, ...
    compile       maybe_compile, should_compile (torch.compile of the encoder, in place: --compile)
    sampler       TrainSampler (global batches sharded over ranks, resumable), EvalSampler
    optim         parameter_groups, build_optimizer (AdamW), warmup_linear_schedule
    precision     Precision (autocast + GradScaler for fp16)
    objectives    ModelLossObjective, PretrainingObjective (named loss terms with target counts)
    loop          train_step, evaluate, batches_per_step, MetricMeter, to_device
    checkpoint    save_checkpoint, resolve_resume, load_training_state, capture/restore_rng_state
    logging       TrainingLogger (TensorBoard + metrics.jsonl + tqdm, rank 0 only)

A training script, top to bottom:

    dist = init_distributed(args.local_rank)
    model = maybe_compile(model.to(dist.device), args.compile, dist.device)
    model = wrap_model(model, dist)
    optimizer = build_optimizer(unwrap_model(model), lr, scaled_lr=bert_names)
    scheduler = warmup_linear_schedule(optimizer, warmup_steps, total_steps)
    precision = Precision.create(args.precision, dist.device)
    for micro_batches in batches_per_step(loader, accumulation):
        out = train_step(model, [to_device(b, dist.device) for b in micro_batches], objective,
                         optimizer, scheduler, precision, dist)
        ...
"""

from .checkpoint import (
    capture_rng_state,
    find_latest_checkpoint,
    load_training_state,
    resolve_resume,
    restore_rng_state,
    save_checkpoint,
)
from .compile import maybe_compile, should_compile
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from .logging import TrainingLogger
from .loop import MetricMeter, StepOutput, batches_per_step, evaluate, to_device, train_step
from .objectives import ModelLossObjective, PretrainingObjective
from .optim import build_optimizer, parameter_groups, warmup_linear_schedule
from .precision import Precision
from .sampler import EvalSampler, TrainSampler

__all__ = [
    "DistInfo", "EvalSampler", "MetricMeter", "ModelLossObjective", "Precision", "PretrainingObjective",
    "StepOutput", "TrainSampler", "TrainingLogger", "all_reduce_sum", "barrier", "batches_per_step",
    "broadcast_object", "build_optimizer", "capture_rng_state", "cleanup_distributed", "evaluate",
    "find_latest_checkpoint", "gather_objects", "init_distributed", "load_training_state", "maybe_compile",
    "parameter_groups", "resolve_resume", "restore_rng_state", "save_checkpoint", "should_compile", "to_device",
    "train_step", "unwrap_model", "warmup_linear_schedule", "wrap_model",
]
