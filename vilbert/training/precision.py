"""Mixed precision through torch.autocast, with a GradScaler for fp16 (no apex).

    precision = Precision.create("bf16", device)   # or "fp16", "fp32", or None for the default
    with precision.autocast():
        loss = model(**batch).loss
    precision.backward(loss)
    precision.unscale_(optimizer)                   # before gradient clipping
    precision.step(optimizer)                       # skips the step on inf/nan gradients (fp16)
    precision.state_dict() / precision.load_state_dict(state)   # the scaler's state, for resume

The default is bf16 on a CUDA device that supports it (same range as fp32, so no loss scaling) and
fp32 elsewhere. fp16 scales the loss dynamically so that small gradients do not underflow; the
originals' `--fp16` called an undefined function (REFERENCE 7), here it is an alias of
`--precision fp16`. Weights and optimizer state stay fp32 in every mode.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

PRECISIONS = ("bf16", "fp16", "fp32")


def default_precision(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    mode: str
    device: torch.device
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def create(cls, mode: str | None, device: torch.device) -> "Precision":
        mode = mode or default_precision(device)
        if mode not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
        if mode == "fp16" and device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
        return cls(mode=mode, device=device, scaler=scaler)

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.mode]

    def autocast(self):
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, skip: torch.Tensor | None = None) -> None:
        """The optimizer step, not taken where `skip` (a () bool device tensor) is true. The fused
        AdamW kernel takes the flag on the device (as GradScaler hands it its found-inf flag) and
        also winds its step counts back: no host sync. Other optimizers read it on the host."""
        if self.scaler is not None:  # the scaler skips non-finite gradients itself
            self.scaler.step(optimizer)
            self.scaler.update()
        elif skip is None:
            optimizer.step()
        elif getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = skip.float()  # () like the step counts it is subtracted from
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf
        elif not bool(skip):
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def time_train_step(step: Callable[[], None], repeats: int = 3) -> float:
    """Best wall time (seconds) of `step()` over `repeats` runs, after one warm-up run."""
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_has_native(mode: str) -> bool:
    """Whether oneDNN computes `mode` ("bf16" or "fp16") natively on this CPU (else it emulates it,
    far slower than fp32)."""
    try:
        check = {"bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
                 "fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported}[mode]
        return bool(torch.backends.mkldnn.is_available() and check())
    except (AttributeError, RuntimeError):
        return False


def cpu_step_seconds(module: torch.nn.Module, make_inputs: Callable[[], tuple], mode: str, repeats: int = 3) -> float:
    """Best time of a forward + backward of `module` on the CPU under `mode`'s autocast."""
    module = module.cpu().train()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]

    def run():
        inputs = make_inputs()
        with torch.autocast("cpu", dtype=dtype, enabled=mode != "fp32"):
            out = module(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
        module.zero_grad(set_to_none=True)

    return time_train_step(run, repeats)


def cpu_precision(module: torch.nn.Module, make_inputs: Callable[[], tuple], min_speedup: float = 1.15) -> str:
    """"bf16" where oneDNN computes bf16 natively on this CPU and bf16 autocast trains `module`
    at least `min_speedup` times faster than fp32 (a few forward + backward passes, about a
    second), else "fp32".

    Flags alone do not tell. Measured on the demo model's pretraining step (docs/PERFORMANCE.md):
    on a 2-core AMD EPYC (AVX512-BF16) bf16 is 1.9x faster than fp32. On a 2-core Intel Xeon VM
    whose hypervisor hides AMX (no amx_* in /proc/cpuinfo; AVX512-BF16 present) oneDNN's bf16 GEMM
    runs at about 160 GFLOP/s against 290 for MKL's fp32, and bf16 training is 1.5x slower than
    fp32. (fp16 autocast is no faster than fp32 there either, AVX512-FP16 notwithstanding.)
    """
    if not cpu_has_native("bf16"):
        return "fp32"
    fp32 = cpu_step_seconds(module, make_inputs, "fp32")
    bf16 = cpu_step_seconds(module, make_inputs, "bf16")
    return "bf16" if fp32 / bf16 >= min_speedup else "fp32"
