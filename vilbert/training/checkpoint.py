"""Checkpoints: one self-describing directory per save, written atomically, the newest K kept.

Layout (`checkpoints_dir` is `<output_dir>/<save_name>/checkpoints`):

    checkpoints_dir/step-<N>/
        config.json, model.safetensors   model.save_pretrained(): loadable with no training code
        training_state.pt                optimizer, scheduler, scaler, RNG states of every rank,
                                         data position, global step, epoch, anything else given

    path = save_checkpoint(checkpoints_dir, step, model, training_state, keep_last=3)   # rank 0
    latest = find_latest_checkpoint(checkpoints_dir)       # newest complete step-N or None
    path = resolve_resume(resume, checkpoints_dir)         # "auto" | a directory | None
    state = load_training_state(path)                      # a dict, torch.load(weights_only=True)
    rng = capture_rng_state(); restore_rng_state(rng)      # python, numpy, torch CPU and CUDA

A save is written into `step-<N>.tmp-<pid>` and renamed to `step-<N>` only once every file is on
disk, so a run killed mid-save leaves a `.tmp-*` directory (ignored and cleaned up) rather than a
half-written `step-<N>`. Only the main rank writes; callers gather per-rank state beforehand.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .distributed import unwrap_model

TRAINING_STATE = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def capture_rng_state() -> dict:
    """This process's random states as plain types and tensors (safe for weights_only loading)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_of(path: Path) -> int | None:
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    path = Path(path)
    return step_of(path) is not None and (path / TRAINING_STATE).is_file() and (path / "config.json").is_file()


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=step_of)


def find_latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, checkpoints_dir: str | os.PathLike) -> Path | None:
    """`--resume auto` -> the newest complete checkpoint (None when there is none yet, a fresh start);
    `--resume PATH` -> PATH, which must be a complete checkpoint; None/"" -> None."""
    if not resume:
        return None
    if resume == "auto":
        return find_latest_checkpoint(checkpoints_dir)
    path = Path(resume)
    if not (path / TRAINING_STATE).is_file():
        raise FileNotFoundError(f"--resume {resume}: no {TRAINING_STATE} in that directory "
                                f"(expected a checkpoint written by save_checkpoint, e.g. {checkpoints_dir}/step-N)")
    return path


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(checkpoints_dir: str | os.PathLike, step: int, model: torch.nn.Module,
                    training_state: dict, keep_last: int | None = None) -> Path:
    """Write `step-<step>/` (model.save_pretrained + training_state.pt) atomically; prune to the
    newest `keep_last` complete checkpoints (None or 0 keeps all). Returns the final directory."""
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    unwrap_model(model).save_pretrained(tmp)
    torch.save({**training_state, "global_step": step}, tmp / TRAINING_STATE)
    _fsync_tree(tmp)

    if final.exists():  # the same step saved again (e.g. an end-of-run save after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)

    cleanup_partial(root)
    if keep_last:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cleanup_partial(checkpoints_dir: str | os.PathLike) -> None:
    """Remove `step-N.tmp-*` directories left by a run killed while saving."""
    root = Path(checkpoints_dir)
    if root.is_dir():
        for path in root.glob("step-*.tmp-*"):
            shutil.rmtree(path, ignore_errors=True)


def load_training_state(path: str | os.PathLike, map_location="cpu") -> dict:
    """The training-state dict of a checkpoint directory (tensors and plain types only)."""
    file = Path(path) / TRAINING_STATE
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read the training state {file}: {exc}") from exc
