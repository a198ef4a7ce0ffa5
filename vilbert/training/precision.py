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

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
