"""Subprocess helpers of tests/test_faults_*.py: run a training script, optionally through
tests/_fault_runner.py with a FAULT, and read what it left."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "_fault_runner.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list, fault: str | None = None, torchrun: int = 0, timeout: float = 240,
           **env_extra) -> subprocess.CompletedProcess:
    """`python script args` (through the fault runner when `fault` is given); with torchrun=N under
    `torchrun --nproc_per_node=N --max-restarts=2`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "FAULT", "FAULT_RANK"):
        env.pop(name, None)
    if fault:
        env["FAULT"] = fault
    env.update(env_extra)
    target = [str(RUNNER), script] if fault else [script]
    if torchrun:
        cmd = [str(TORCHRUN), f"--nproc_per_node={torchrun}", "--max-restarts=2", "--rdzv_backend=c10d",
               f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=faults",
               *target]
    else:
        cmd = [sys.executable, *target]
    return subprocess.run([*cmd, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    return result


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    return lines[-1]


def weights(checkpoint: Path) -> dict:
    return load_file(str(checkpoint / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"
