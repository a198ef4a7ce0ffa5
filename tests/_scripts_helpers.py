"""Helpers for the script tests: a tiny demo world, a tiny model config and checkpoints, CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package), registered in
    sys.modules so that its dataclasses and pickles resolve."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

# A demo world small enough for tests (seconds to write): every task has a few batches.
TINY_WORLD = dict(concap_train=32, concap_val=8, vqa_train=24, vqa_val=8, vqa_test=4, vcr_train=8, vcr_val=4,
                  refcoco_train=8, refcoco_val=4, refcoco_testA=2, refcoco_testB=2, flickr_train=8, flickr_val=4,
                  flickr_test=4)


def make_tiny_world(root: Path) -> Path:
    """The demo world at TINY_WORLD size under root/world, with Flickr30k hard negatives."""
    from vilbert.data.retrieval import main as retrieval_main
    from vilbert.demo.make import WorldSize, make_world

    world = root / "world"
    make_world(world, seed=0, size=WorldSize(**TINY_WORLD), say=lambda *a: None)
    negatives = world / "flickr30k" / "hard_negative.json"
    if not negatives.is_file():
        flickr = world / "flickr30k"
        retrieval_main(["pool", "--annotations", str(flickr / "all_data_final_train_2014.jsonline"),
                        "--features", str(flickr / "features" / "regions.lmdb"), "--output", str(negatives)])
    return world


def tiny_config(path: Path, dropout: float = 0.0) -> Path:
    """config/vilbert_tiny.json sized for the MiniLM tokenizer and the demo features (2048-d, 49 classes)."""
    values = json.loads((REPO / "config" / "vilbert_tiny.json").read_text())
    values.update(vocab_size=30522, v_feature_size=2048, v_target_size=49)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "v_hidden_dropout_prob",
                "v_attention_probs_dropout_prob"):
        values[key] = dropout
    path.write_text(json.dumps(values, indent=2))
    return path


def save_pretraining_checkpoint(config_path: Path, directory: Path, seed: int = 0) -> Path:
    """A ViLBertForPretraining of the config, randomly initialised, saved as train_concap.py would."""
    import torch

    from vilbert.config import ViLBertConfig
    from vilbert.model import ViLBertForPretraining

    torch.manual_seed(seed)
    ViLBertForPretraining(ViLBertConfig.from_json_file(config_path)).save_pretrained(directory)
    return directory


def write_task_file(world: Path, path: Path, **per_task: dict) -> Path:
    """The world's vlbert_tasks.yml with fields changed per task key, e.g. TASK1={"num_epoch": 2}.
    Relative paths are rewritten against the world so the file may live elsewhere."""
    tasks = yaml.safe_load((world / "vlbert_tasks.yml").read_text())
    for key, entry in tasks.items():
        for field in ("dataroot", "features_h5path1", "features_h5path2", "train_annotations_jsonpath",
                      "val_annotations_jsonpath"):
            if entry.get(field):
                entry[field] = str(world / entry[field])
        entry.update(per_task.get(key, {}))
    path.write_text(yaml.safe_dump(tasks, sort_keys=False))
    return path


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(name, None)
    return e


def run(cmd: list, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def python(script: str, *args) -> list:
    return [sys.executable, str(REPO / script), *args]


def metrics_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
