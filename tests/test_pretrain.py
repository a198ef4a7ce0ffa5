"""train_concap.py end to end on CPU (gloo): DDP equivalence under both launchers and two nodes,
exact resume after SIGKILL, and the missing-image stop. Small on purpose: every run is a few steps
of config/vilbert_tiny.json on a generated world."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _pretrain_helpers import make_concap_dir, make_tokenizer_dir, tiny_config_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    e.pop("RANK", None), e.pop("WORLD_SIZE", None), e.pop("LOCAL_RANK", None)
    return e


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    tokenizer = make_tokenizer_dir(root)
    data = make_concap_dir(root / "cc", num_train=48, num_val=12)
    config = tiny_config_file(root / "tiny_nodropout.json", dropout=0.0)
    config_dropout = tiny_config_file(root / "tiny_dropout.json", dropout=0.1)
    return root, tokenizer, data, config, config_dropout


def flags(world, save_name, *extra, config=None, steps=3, batch=8):
    root, tokenizer, data, nodropout, _ = world
    return ["--file_path", str(data), "--bert_model", str(tokenizer), "--config_file", str(config or nodropout),
            "--train_batch_size", str(batch), "--max_steps", str(steps), "--learning_rate", "1e-3",
            "--warmup_proportion", "0.2", "--log_every", "1", "--num_workers", "0", "--max_seq_length", "20",
            "--max_region_num", "8", "--precision", "fp32", "--output_dir", str(root / "out"),
            "--cache_dir", str(root / "cache"), "--save_name", save_name, *extra]


def run(cmd, timeout=180, check=True):
    result = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def final_weights(world, save_name, step):
    root = world[0]
    return load_file(str(root / "out" / save_name / "checkpoints" / f"step-{step}" / "model.safetensors"))


def metrics(world, save_name) -> dict[int, dict]:
    """The last logged record of each step (a resumed run appends the steps it redoes)."""
    records = {}
    for line in (world[0] / "out" / save_name / "logs" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            records[record["step"]] = record
    return records


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


@pytest.fixture(scope="module")
def single(world):
    run([sys.executable, "train_concap.py", *flags(world, "single")])
    return final_weights(world, "single", 3)


def test_torchrun_two_processes_match_one_process(world, single):
    result = run([str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", "train_concap.py",
                  *flags(world, "torchrun")])
    assert "2 process(es)" in result.stderr and "global batch 8 = 2 x 1 x 4" in result.stderr
    two = final_weights(world, "torchrun", 3)
    assert_same_weights(single, two)
    # The logged losses are global-batch means too, so they agree with the single process.
    for step, record in metrics(world, "single").items():
        assert record["train/loss"] == pytest.approx(metrics(world, "torchrun")[step]["train/loss"], abs=1e-5)
    # Not vacuous: training moved the weights away from their (seeded) initial values.
    from vilbert import ViLBertConfig, ViLBertForPretraining

    torch.manual_seed(42)
    initial = ViLBertForPretraining(ViLBertConfig.from_json_file(world[3])).state_dict()
    moved = max((initial[k] - v).abs().max().item() for k, v in two.items())
    assert moved > 1e-3


def test_distributed_launch_with_accumulation_matches(world, single):
    """The deprecated launcher passes --local-rank; 2 ranks x 2 accumulation steps x 2 = 8."""
    run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}",
         "train_concap.py", *flags(world, "launch", "--gradient_accumulation_steps", "2")])
    assert_same_weights(single, final_weights(world, "launch", 3))


def test_two_nodes_with_c10d_rendezvous(world, single):
    port = free_port()
    procs = []
    for node_rank in range(2):
        cmd = [str(BIN / "torchrun"), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node_rank}",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=test-two-nodes",
               "train_concap.py", *flags(world, "two_nodes")]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-5000:]
    assert_same_weights(single, final_weights(world, "two_nodes", 3))


KILLER = """
import os, signal, sys
import train_concap

kill_at = int(os.environ["KILL_AT_STEP"])
calls = 0
real_train_step = train_concap.train_step

def train_step_or_die(*args, **kwargs):
    global calls
    calls += 1
    if calls == kill_at:  # SIGKILL in the middle of the run, a step after the last checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    return real_train_step(*args, **kwargs)

train_concap.train_step = train_step_or_die
sys.exit(train_concap.main(sys.argv[1:]))
"""


def test_sigkill_then_resume_auto_gives_the_same_losses(world):
    root = world[0]
    _, _, _, _, with_dropout = world
    common = ["--save_every", "3", "--gradient_accumulation_steps", "2", "--num_workers", "1"]
    steps = 8
    run([sys.executable, "train_concap.py", *flags(world, "whole", *common, config=with_dropout, steps=steps)])

    killer = root / "kill_after.py"
    killer.write_text(KILLER)
    env_kill = env()
    env_kill["KILL_AT_STEP"] = "5"
    killed = subprocess.run([sys.executable, str(killer), *flags(world, "killed", *common, config=with_dropout,
                                                                 steps=steps)],
                            cwd=REPO, env=env_kill, capture_output=True, text=True, timeout=180)
    assert killed.returncode == -9, killed.stderr[-3000:]
    checkpoints = root / "out" / "killed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3"]
    assert max(metrics(world, "killed")) == 4  # step 4 ran and was logged, then lost

    resumed = run([sys.executable, "train_concap.py",
                   *flags(world, "killed", *common, "--resume", "auto", config=with_dropout, steps=steps)])
    assert "resumed from" in resumed.stderr and "step-3" in resumed.stderr
    whole, again = metrics(world, "whole"), metrics(world, "killed")
    assert sorted(again) == list(range(1, steps + 1))
    for step in range(4, steps + 1):
        for key in ("train/masked_lm", "train/masked_img", "train/alignment", "train/grad_norm", "train/lr"):
            assert again[step][key] == whole[step][key], (step, key)  # exact, not approximate
    assert_same_weights(final_weights(world, "whole", steps), final_weights(world, "killed", steps), atol=0)


def test_more_than_one_percent_missing_stops_before_training(world, tmp_path):
    data = make_concap_dir(tmp_path / "missing", num_train=40, num_val=4, missing_train=2)
    args = flags(world, "missing")
    args[args.index("--file_path") + 1] = str(data)
    result = run([sys.executable, "train_concap.py", *args], check=False)
    assert result.returncode == 2
    assert "2 of 40 captions" in result.stderr and "shard0.lmdb" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (world[0] / "out" / "missing" / "checkpoints").exists()
