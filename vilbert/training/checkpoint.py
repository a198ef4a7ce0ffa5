"""Checkpoints: one self-describing directory per save, written atomically, the newest K kept.

Layout (`checkpoints_dir` is `<output_dir>/<save_name>/checkpoints`):

    checkpoints_dir/step-<N>/
        config.json, model.safetensors   model.save_pretrained(): loadable with no training code
        training_state.pt                optimizer, scheduler, scaler, RNG states of every rank,
                                         data position, global step, epoch, anything else given

    path = save_checkpoint(checkpoints_dir, step, model, training_state, keep_last=3)   # rank 0
    path = save_on_main(dist, checkpoints_dir, step, model, make_state, keep_last)    # every rank
    state = training_state(rng, optimizer, scheduler, precision, dist, args, fresh_names, **own)  # make_state
    latest = find_latest_checkpoint(checkpoints_dir)       # newest complete step-N or None
    path = resolve_resume(resume, checkpoints_dir)         # "auto" | a directory | None
    state = load_training_state(path)                      # a dict, torch.load(weights_only=True)
    rng = capture_rng_state(); restore_rng_state(rng)      # python, numpy, torch CPU and CUDA

A save is written into `step-<N>.tmp-<pid>`, its manifest (`complete.json`: every file's size)
last, and renamed to `step-<N>` only once every file is on disk. A run killed at any moment
therefore leaves either a `.tmp-*` directory (ignored and cleaned up) or a complete `step-<N>`;
a directory whose files do not match its manifest (copied in part, truncated) is never resumed
from. A failed save (disk full, read-only file system) removes its `.tmp-*` directory and raises
CheckpointError saying which earlier checkpoint is intact; pruning runs only after a save
succeeded and never touches the newest complete checkpoint. A directory being replaced or pruned is
first renamed aside (`.old-*`, `.del-*`), so no `step-<N>` is ever half deleted. Only the main rank writes;
`save_on_main` gathers every rank's RNG state first and hands a failure to every rank.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .cli import RunError
from .distributed import broadcast_object, gather_objects, unwrap_model

TRAINING_STATE = "training_state.pt"
MANIFEST = "complete.json"  # written last: {"files": {name: size in bytes}}
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


def training_state(rng: list, optimizer, scheduler, precision, dist, args, fresh_names, **extra) -> dict:
    """What train_concap.py and train_tasks.py save in training_state.pt: what restore_training_state
    puts back (optimizer, scheduler, scaler, every rank's RNG from save_on_main), the world size, the
    run's arguments and the names of the weights that train at the fresh rate; `extra` is the
    script's own (data position, task states)."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": precision.state_dict(),
            "rng": rng, "world_size": dist.world_size, "args": dict(vars(args)), "fresh_names": sorted(fresh_names),
            **extra}


def restore_training_state(state: dict | None, optimizer, scheduler, precision, dist, seed: int,
                           log=print) -> int:
    """Put a --resume's optimizer, scheduler and scaler state back and each rank's RNG; returns the
    step to go on from (0 on a fresh start). Each rank draws its own dropout masks: a fresh start
    seeds `seed + rank`, and a resume on another world size (the saved RNG states no longer map
    onto the ranks) seeds `seed + step + rank`. Shared by train_concap.py and train_tasks.py."""
    if state is None:
        torch.manual_seed(seed + dist.rank)
        return 0
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    precision.load_state_dict(state["scaler"])
    step = int(state["global_step"])
    if len(state["rng"]) == dist.world_size:
        restore_rng_state(state["rng"][dist.rank])
    else:
        log(f"resuming on {dist.world_size} processes from a run on {len(state['rng'])}: fresh dropout RNG")
        torch.manual_seed(seed + step + dist.rank)
    return step


def step_of(path: Path) -> int | None:
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


class CheckpointError(RunError):
    """A checkpoint could not be written; the message names it and the checkpoint still intact."""

    everywhere = True  # save_on_main raises it on every rank


def is_complete(path: Path) -> bool:
    """A `step-<N>` directory whose files are all there with the sizes its manifest lists (one
    written before manifests existed: its three files present)."""
    path = Path(path)
    if step_of(path) is None:
        return False
    manifest = path / MANIFEST
    if not manifest.is_file():
        return all((path / name).is_file() for name in (TRAINING_STATE, "config.json", "model.safetensors"))
    try:
        files = json.loads(manifest.read_text())["files"]
        return TRAINING_STATE in files and all((path / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


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


def _write_manifest(directory: Path) -> None:
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def save_checkpoint(checkpoints_dir: str | os.PathLike, step: int, model: torch.nn.Module,
                    training_state: dict, keep_last: int | None = None) -> Path:
    """Write `step-<step>/` (model.save_pretrained + training_state.pt + manifest) atomically; then
    prune to the newest `keep_last` complete checkpoints (None or 0 keeps all). Returns the final
    directory. Any failure to write raises CheckpointError, the earlier checkpoints untouched."""
    root = Path(checkpoints_dir)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        cleanup_partial(root)
        tmp.mkdir()
        unwrap_model(model).save_pretrained(tmp)
        torch.save({**training_state, "global_step": step}, tmp / TRAINING_STATE)
        _write_manifest(tmp)
        _fsync_tree(tmp)
        replace_directory(tmp, final)  # the same step saved again (an end-of-run save after a periodic one)
    except Exception as exc:  # OSError (ENOSPC, EROFS, EDQUOT), or torch's RuntimeError for a failed write
        shutil.rmtree(tmp, ignore_errors=True)
        recover_directory(final)  # a failure between the renames of a step saved again
        previous = find_latest_checkpoint(root)
        intact = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        reason = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"cannot write checkpoint {final}: {reason.splitlines()[0] if reason else type(exc).__name__}; "
                              f"{intact}") from exc
    if keep_last:
        for old in list_checkpoints(root)[:-keep_last]:
            if old != final:
                _remove_directory(old)
    return final


def _remove_directory(path: Path) -> None:
    """Prune a checkpoint: renamed aside first (a `step-<N>` never exists half deleted); a failure
    leaves it where it was, for the next save to prune."""
    trash = path.with_name(f"{path.name}.del-{os.getpid()}")
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def replace_directory(new: Path, final: Path) -> None:
    """Rename `new` to `final`, putting an existing `final` aside first: killed at any moment, a
    complete `final` or its `.old-*` copy (restored by `recover_directory`) is left."""
    new, final = Path(new), Path(final)
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(final: Path) -> None:
    """After a kill between the two renames of `replace_directory`: put the `.old-*` copy back."""
    final = Path(final)
    if not final.exists():
        olds = sorted(final.parent.glob(f"{final.name}.old-*")) if final.parent.is_dir() else []
        if olds:
            os.replace(olds[-1], final)


def save_on_main(dist, checkpoints_dir: str | os.PathLike, step: int, model: torch.nn.Module,
                 make_state, keep_last: int | None = None) -> Path | None:
    """Every rank calls it: gathers the RNG states, rank 0 writes `make_state(rng_states)` with
    save_checkpoint, and a CheckpointError on rank 0 is raised on every rank (so none waits)."""
    rng = gather_objects(capture_rng_state(), dist)
    path, error = None, None
    if dist.is_main:
        try:
            path = save_checkpoint(checkpoints_dir, step, model, make_state(rng), keep_last)
        except CheckpointError as exc:
            error = str(exc)
    error = broadcast_object(error, dist)  # also the barrier after which the checkpoint exists
    if error:
        raise CheckpointError(error)
    return path


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
    """Remove the `step-N.tmp-*`, `.old-*` and `.del-*` directories left by a run killed while
    saving or pruning (an `.old-*` whose `step-N` is missing is put back instead)."""
    root = Path(checkpoints_dir)
    if root.is_dir():
        for path in root.glob("step-*.old-*"):
            recover_directory(root / path.name.split(".old-")[0])
        for path in [*root.glob("step-*.tmp-*"), *root.glob("step-*.old-*"), *root.glob("step-*.del-*")]:
            shutil.rmtree(path, ignore_errors=True)


def load_training_state(path: str | os.PathLike, map_location="cpu") -> dict:
    """The training-state dict of a checkpoint directory (tensors and plain types only)."""
    file = Path(path) / TRAINING_STATE
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read the training state {file}: {exc}") from exc
