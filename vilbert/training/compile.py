"""torch.compile behind the scripts' `--compile {auto,on,off}`.

    model.to(dist.device)
    maybe_compile(model, args.compile, dist.device)   # in place, before wrap_model (DDP)
    model = wrap_model(model, dist)

What gets compiled is the two-stream encoder, `model.vilbert` (the whole model when it is a bare
ViLBertModel). Nearly all the time goes there, and every path calls it as a module, so every path
runs it compiled, also after unwrap_model: training and evaluation (`model(...)` calls
`self.vilbert(...)`), finetuned retrieval (`model(..., text_prefix=...)`) and zero-shot retrieval
(`model.vilbert(..., text_prefix=...)`). The heads and losses stay eager: they are a few small
matmuls, and the pretraining losses pick the targeted positions by boolean indexing, whose size
depends on the data, which would split the graph (see tests/test_compile.py). Retrieval's
`encode_text_prefix`, a method rather than a module call, also stays eager; it runs once per block
of captions, not once per (caption, image) pair.

`nn.Module.compile` compiles in place: the module keeps its class and its parameter names, so
state_dict, save_pretrained, the optimizer's parameter groups and DDP see the plain model and
checkpoints never carry torch.compile's `_orig_mod.` prefix.
"""

from __future__ import annotations

import torch

COMPILE_MODES = ("auto", "on", "off")


def should_compile(mode: str, device: torch.device | str) -> bool:
    """`--compile` -> whether to compile: "on", "off", or "auto" = on CUDA devices only.

    On a CPU the compile itself dominates short runs (about a minute for the tiny test model's
    forward and backward on 2 cores, again for each new set of shapes) and buys little on this
    model's small per-step shapes, so auto leaves CPU runs eager.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "auto":
        return torch.device(device).type == "cuda"
    return mode == "on"


def maybe_compile(model: torch.nn.Module, mode: str, device: torch.device | str) -> torch.nn.Module:
    """Compile `model`'s encoder in place when `should_compile(mode, device)`; returns `model`.
    Call it on the bare model (not DDP), on its device."""
    if not should_compile(mode, device):
        return model
    encoder = getattr(model, "vilbert", model)
    # Shapes change between calls: the last evaluation batch is short, each task pads text and
    # regions to its own lengths, and retrieval cuts each caption to its real length and scores the
    # images in blocks. dynamic=None (automatic dynamic shapes) compiles the first shapes static,
    # which gives the best kernels for the fixed-shape training steps, and on the first call where
    # a dimension differs compiles once more with that dimension symbolic, instead of once per
    # length. (dynamic=True would make every dimension symbolic from the start; marking dims
    # dynamic would need the input tensors here.)
    encoder.compile(dynamic=None)
    return model
