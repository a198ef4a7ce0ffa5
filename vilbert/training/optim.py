"""AdamW with parameter groups, and the warm-up then linear-decay schedule.

    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01,
                              scaled_lr={"bert.embeddings.word_embeddings.weight": 0.1, ...},
                              lr_by_prefix={"vil_": 1e-4})
    optimizer = build_optimizer(model, lr=1e-4, ...)          # the same arguments, returns AdamW
    scheduler = warmup_linear_schedule(optimizer, warmup_steps=100, total_steps=1000)

    rates = LearningRates(lr=2e-5, fresh_names=fresh_parameter_names(model), fresh_lr=1e-4,
                          lr_by_prefix={"vil_prediction.": 1e-4})
    optimizer = build_optimizer(model, 2e-5, lr_by_name=rates.by_name(model))
    log(rates.summary(model))   # "learning rates: 120 tensors at 2e-05 (loaded from the checkpoint), ..."

Facts (REFERENCE 5): weight decay 0.01 on every weight except biases and LayerNorm parameters (beta
had the two groups swapped; REFERENCE 7); warm-up over the first `warmup_proportion` of the steps,
then linear decay to 0; during pretraining from a BERT checkpoint the weights that came from BERT
train at 0.1x the learning rate (the originals applied this only when the model was wrapped for
multi-GPU; here it applies whenever `scaled_lr` is given); during finetuning the task heads (`vil_*`)
get their own learning rate, which `lr_by_prefix` expresses.

Fresh weights (issue 14): the weights the starting checkpoint did not initialise (from a BERT
checkpoint: the visual stream, co-attention, poolers) train at their own rate, 1e-4 by default in
train_tasks.py, as vilbert_beta's `--vision_scratch` (weights not found in the BERT checkpoint at
1e-4). At the body's finetuning rate (2e-5) they learn too slowly from a BERT start. train_tasks.py
and train_concap.py share `LearningRates` and `add_fresh_rate_arguments`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

import torch


def no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    """Names of the biases and LayerNorm parameters of `model`, which are not decayed (as BERT)."""
    if hasattr(model, "no_decay_parameter_names"):
        return set(model.no_decay_parameter_names())
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            if param_name == "bias" or isinstance(module, torch.nn.LayerNorm):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def parameter_groups(model: torch.nn.Module, lr: float, weight_decay: float = 0.01,
                     scaled_lr: Mapping[str, float] | Iterable[str] | None = None,
                     lr_by_prefix: Mapping[str, float] | None = None,
                     lr_by_name: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer groups of the trainable parameters of `model`, one per (lr, weight decay) pair.

    scaled_lr: parameter name -> factor on `lr` (a plain collection of names means factor 0.1, the
        originals' rate for BERT-initialised weights). lr_by_prefix: name prefix -> absolute lr,
        checked first (the longest matching prefix wins). lr_by_name: parameter name -> absolute
        lr, checked next (`LearningRates.by_name`). Names are those of the bare model (no
        `module.`). Every group carries `param_names` for inspection and the lr it starts from.
    """
    if scaled_lr is not None and not isinstance(scaled_lr, Mapping):
        scaled_lr = {name: 0.1 for name in scaled_lr}
    scaled_lr = scaled_lr or {}
    prefixes = sorted((lr_by_prefix or {}).items(), key=lambda kv: -len(kv[0]))

    no_decay = no_weight_decay_names(model)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        param_lr = next((p_lr for prefix, p_lr in prefixes if name.startswith(prefix)), None)
        if param_lr is None and lr_by_name:
            param_lr = lr_by_name.get(name)
        if param_lr is None:
            param_lr = lr * scaled_lr.get(name, 1.0)
        decay = 0.0 if name in no_decay else weight_decay
        group = groups.setdefault((param_lr, decay), {"params": [], "param_names": [], "lr": param_lr,
                                                      "weight_decay": decay})
        group["params"].append(param)
        group["param_names"].append(name)
    # A stable order (by lr, then decay) keeps optimizer state_dicts comparable across runs.
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01,
                    scaled_lr: Mapping[str, float] | Iterable[str] | None = None,
                    lr_by_prefix: Mapping[str, float] | None = None,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8,
                    lr_by_name: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW over `parameter_groups(...)`; betas (0.9, 0.98) as the 12-in-1 pretraining.

    eps stays small (1e-8): many gradients of a freshly initialised ViLBERT are ~1e-7 (more so
    after clipping), and with eps = 1e-6 Adam shrinks exactly those updates, which stalls the
    alignment objective on its initial plateau (measured on the demo world).
    """
    groups = parameter_groups(model, lr, weight_decay, scaled_lr, lr_by_prefix, lr_by_name)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                             fused=can_fuse(groups))


def fresh_parameter_names(model: torch.nn.Module, resumed_state: Optional[dict] = None) -> list[str]:
    """The parameters of `model` that the checkpoint it was loaded from did not initialise
    (`model.load_report.missing`, vilbert.convert.LoadReport); every parameter of a model built
    without a checkpoint (no load report: nothing was initialised). A resumed run (its training
    state given) keeps the names its first start found: its own checkpoint fills every weight."""
    if resumed_state is not None:
        return list(resumed_state.get("fresh_names", []))
    names = [name for name, _ in model.named_parameters()]
    report = getattr(model, "load_report", None)
    if report is None:
        return names
    missing = set(report.missing)
    return [name for name in names if name in missing]


@dataclass
class LearningRates:
    """The learning rate each parameter starts from, and why (the reason is logged).

    In order: a parameter under a `lr_by_prefix` prefix (the task heads) trains at that rate;
    one of `fresh_names` at `fresh_lr` (None: at `lr`, the rule off); one of `scaled` at
    `lr` x its factor (BERT-initialised weights in pretraining); any other at `lr`.
    """

    lr: float
    fresh_names: Collection[str] = ()
    fresh_lr: Optional[float] = None
    lr_by_prefix: Mapping[str, float] = field(default_factory=dict)
    scaled: Mapping[str, float] = field(default_factory=dict)
    prefix_reason: str = "task heads"
    scaled_reason: str = "initialised from BERT"

    def __post_init__(self):
        self.fresh_names = frozenset(self.fresh_names)
        self._prefixes = sorted(self.lr_by_prefix.items(), key=lambda kv: -len(kv[0]))

    def rate(self, name: str) -> tuple[float, str]:
        """(lr, reason) of one parameter."""
        for prefix, prefix_lr in self._prefixes:
            if name.startswith(prefix):
                return prefix_lr, self.prefix_reason
        if name in self.fresh_names:
            if self.fresh_lr is None:
                return self.lr, "not in the checkpoint, at the base rate"
            return self.fresh_lr, "not in the checkpoint: fresh"
        if name in self.scaled:
            return self.lr * self.scaled[name], f"{self.scaled_reason}, {self.scaled[name]:g}x"
        return self.lr, "from the checkpoint"

    def by_name(self, model: torch.nn.Module) -> dict[str, float]:
        """{trainable parameter name: lr} for build_optimizer(lr_by_name=...)."""
        return {name: self.rate(name)[0] for name, param in model.named_parameters() if param.requires_grad}

    def summary(self, model: torch.nn.Module) -> str:
        """One line for the log: how many trainable tensors start at which rate, and why."""
        counts = Counter(self.rate(name) for name, param in model.named_parameters() if param.requires_grad)
        parts = [f"{n} tensors at {lr:g} ({reason})" for (lr, reason), n in sorted(counts.items())]
        return "learning rates: " + "; ".join(parts)


def add_fresh_rate_arguments(group, default: Optional[float], default_help: str) -> None:
    """--fresh_learning_rate, --no_fresh_rate and vilbert_beta's --vision_scratch (an alias that
    keeps the rule on) in an argparse group; `default` None means --learning_rate."""
    group.add_argument("--fresh_learning_rate", type=float, default=default,
                       help="lr of the weights the --from_pretrained checkpoint did not initialise (all of them "
                            f"without one; task heads keep their own rate); default: {default_help}")
    group.add_argument("--no_fresh_rate", dest="fresh_rate", action="store_false", default=True,
                       help="fresh weights train at --learning_rate (as before issue 14)")
    group.add_argument("--vision_scratch", dest="fresh_rate", action="store_true",
                       help="vilbert_beta's name for the fresh rate (on by default)")


def fresh_rate(args) -> Optional[float]:
    """The fresh weights' lr the parsed flags ask for (None: --learning_rate)."""
    return args.fresh_learning_rate if args.fresh_rate else None


def can_fuse(groups: list[dict]) -> bool:
    """Whether the fused AdamW kernel takes these parameters: floating point, all on one device
    of a type it supports (CPU or CUDA). One kernel per parameter group instead of a dozen
    foreach launches: the optimizer step of bert_base_6layer_6conect (239 M parameters) on 2
    CPU cores fell from about 0.8 s to 0.2 s (docs/PERFORMANCE.md). Its arithmetic equals the
    foreach path up to float rounding; a resumed run uses the same kernel, so resume stays exact.
    """
    params = [p for group in groups for p in group["params"]]
    devices = {p.device.type for p in params}
    return (len(devices) == 1 and devices <= {"cpu", "cuda"}
            and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params))


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr factor rises linearly 0 -> 1 over `warmup_steps`, then falls linearly to 0 at `total_steps`."""
    warmup_steps = max(int(warmup_steps), 0)
    total_steps = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)  # never exactly 0, so step 0 trains
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze_text_layers(model: torch.nn.Module, upto: int) -> list[str]:
    """The originals' `--freeze N`: the text embeddings and text layers 0..N stop training.

    Sets requires_grad False on them and `config.fixed_t_layer` (capped at the first co-attention
    layer, as the config requires) so the frozen layers also run without building a graph.
    Returns the names of the frozen parameters. upto < 0 freezes nothing.
    """
    if upto < 0:
        return []
    prefixes = ["vilbert.text_embeddings."] + [f"vilbert.text_layers.{i}." for i in range(upto + 1)]
    frozen = []
    for name, param in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "t_biattention_id", None):
        config.fixed_t_layer = min(upto + 1, config.t_biattention_id[0])
    return frozen
