"""Command-line pieces every script shares: the precision/device/launcher flags and the main()
wrapper that turns a setup error into one line on stderr and always tears the process group down.

    p = argparse.ArgumentParser(...)
    add_runtime_arguments(p, group, fp16_alias=True)
    args = p.parse_args(argv)
    check_runtime_arguments(p, args)
    ...
    def main(argv=None):
        return run_script("train_tasks.py", train, parse_args(argv))
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Callable

from vilbert.training.compile import COMPILE_MODES

PRECISIONS = ("bf16", "fp16", "fp32")


class SetupError(RuntimeError):
    """A problem found before training or evaluation starts; the message is one line."""


class RunError(RuntimeError):
    """A fault during a run (a checkpoint that cannot be written, out of memory, a dead DataLoader
    worker, non-finite losses); the message is one line naming what and where."""

    everywhere = False  # raised on every rank alike (then rank 0 alone prints it)


def fail(script: str, message: str, dist=None, status: int = 2) -> int:
    """Print `script: error: message` (rank 0 of `dist`, a DistInfo, if given) and return `status`."""
    if dist is None or dist.is_main:
        print(f"{script}: error: {message}", file=sys.stderr, flush=True)
    return status


def add_runtime_arguments(parser: argparse.ArgumentParser, group=None, *, fp16_alias: bool = False) -> None:
    """--precision (and --fp16, the originals' flag, where asked), --device, --compile, and the hidden
    --local_rank / --local-rank that `python -m torch.distributed.launch` passes (the spelling
    depends on the torch version; torchrun passes LOCAL_RANK in the environment instead)."""
    group = group if group is not None else parser
    group.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="default: bf16 on a GPU that supports it, fp32 otherwise")
    if fp16_alias:
        group.add_argument("--fp16", action="store_true", help="alias of --precision fp16")
    group.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    group.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                       help="torch.compile the encoder; auto: on CUDA devices only (on a CPU the compile time "
                            "dominates short runs and buys little for this model's small shapes on a few cores)")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1, help=argparse.SUPPRESS)


def add_fault_arguments(group) -> None:
    """--max_nonfinite_steps of the training scripts."""
    group.add_argument("--max_nonfinite_steps", type=int, default=10,
                       help="stop after this many steps in a row with a non-finite loss or gradient (each is skipped: "
                            "weights and optimizer state untouched); 0: never stop")


def check_runtime_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--fp16 becomes --precision fp16; a contradiction is a usage error."""
    if getattr(args, "fp16", False):
        if args.precision not in (None, "fp16"):
            parser.error(f"--fp16 contradicts --precision {args.precision}")
        args.precision = "fp16"


def build_on_main_first(build: Callable[[], object], dist, errors: tuple = (FileNotFoundError, ValueError, KeyError)):
    """Run `build` on rank 0 first (it fills the caches: tokenised texts, answer vocabularies), then
    on the other ranks, which read them. One of `errors` on rank 0 (missing files, bad lines, too
    many missing images) stops every rank with its message as a SetupError, before any rank builds."""
    from vilbert.training.distributed import broadcast_object

    result, error = None, None
    if dist.is_main:
        try:
            result = build()
        except errors as exc:
            error = str(exc)
    error = broadcast_object(error, dist)  # also the barrier after which the caches exist
    if error:
        raise SetupError(error)
    return result if dist.is_main else build()


def run_script(script: str, body: Callable, args: argparse.Namespace, *, training: bool = False) -> int:
    """Join the process group (torchrun, torch.distributed.launch or a single process), run
    body(args, dist), and leave the group whatever happens. A `training` script keeps the host
    memory its steps free for the next ones (host_memory.keep_freed_memory). A SetupError (bad flag, file or task)
    ends the run with exit code 2 and one line naming what is wrong; a RunError (a fault during
    training) with exit code 1 and one line, printed by the rank it happened on."""
    from vilbert.training.distributed import cleanup_distributed, init_distributed
    from vilbert.training.host_memory import keep_freed_memory

    if training:  # before the model and the first step allocate
        keep_freed_memory()
    dist = init_distributed(args.local_rank, args.device)
    fault = None
    try:
        return body(args, dist)
    except SetupError as exc:
        return fail(script, str(exc), dist)
    except RunError as exc:
        fault = (str(exc), dist if exc.everywhere else None)
    except RuntimeError as exc:
        # A DataLoader worker's death signalled (SIGCHLD) while the step ran, outside the loader's
        # own guard (loop.guard_workers), which names the task and samples.
        if not str(exc).startswith("DataLoader worker"):
            raise
        fault = (f"{str(exc).splitlines()[0]} (a worker process of a training or validation loader)", None)
    finally:
        cleanup_distributed(dist)
    # Out of the except block the run's frames are gone, and with them its progress bar, which
    # prints its last state when closed: the error comes last.
    gc.collect()
    sys.stderr.flush()
    return fail(script, fault[0], fault[1], status=1)
