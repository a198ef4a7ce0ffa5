"""AdamW with parameter groups, and the warm-up then linear-decay schedule.

    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01,
                              scaled_lr={"bert.embeddings.word_embeddings.weight": 0.1, ...},
                              lr_by_prefix={"vil_": 1e-4})
    optimizer = build_optimizer(model, lr=1e-4, ...)          # the same arguments, returns AdamW
    scheduler = warmup_linear_schedule(optimizer, warmup_steps=100, total_steps=1000)

Facts (REFERENCE 5): weight decay 0.01 on every weight except biases and LayerNorm parameters (beta
had the two groups swapped; REFERENCE 7); warm-up over the first `warmup_proportion` of the steps,
then linear decay to 0; during pretraining from a BERT checkpoint the weights that came from BERT
train at 0.1x the learning rate (the originals applied this only when the model was wrapped for
multi-GPU; here it applies whenever `scaled_lr` is given); during finetuning the task heads (`vil_*`)
get their own learning rate, which `lr_by_prefix` expresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
                     lr_by_prefix: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer groups of the trainable parameters of `model`, one per (lr, weight decay) pair.

    scaled_lr: parameter name -> factor on `lr` (a plain collection of names means factor 0.1, the
        originals' rate for BERT-initialised weights). lr_by_prefix: name prefix -> absolute lr,
        checked first (the longest matching prefix wins). Names are those of the bare model (no
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
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over `parameter_groups(...)`; betas (0.9, 0.98) as the 12-in-1 pretraining.

    eps stays small (1e-8): many gradients of a freshly initialised ViLBERT are ~1e-7 (more so
    after clipping), and with eps = 1e-6 Adam shrinks exactly those updates, which stalls the
    alignment objective on its initial plateau (measured on the demo world).
    """
    groups = parameter_groups(model, lr, weight_decay, scaled_lr, lr_by_prefix)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                             fused=can_fuse(groups))


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
