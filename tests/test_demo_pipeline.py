"""`python -m vilbert.demo run` end to end on a tiny world with a tiny model (--smoke schedules):
every stage runs its real script, the report files are written, and a second run reuses what exists."""

import json
import subprocess
import sys

from _scripts_helpers import REPO, env, make_tiny_world, tiny_config
from vilbert.demo.make import GENERATOR_VERSION
from vilbert.demo.pipeline import evaluation_groups


def test_evaluation_groups_keep_vcr_together():
    vcr = {6: "vcr_q2a", 7: "vcr_qa2r"}
    assert evaluation_groups({1: "vqa", **vcr, 11: "refer"}) == [[1], [6, 7], [11]]
    assert evaluation_groups({17: "vcr_qa2r", 16: "vcr_q2a"}) == [[16, 17]]  # any ids: Q->A's weights
    assert evaluation_groups({6: "vcr_q2a"}) == [[6]] and evaluation_groups({9: "retrieval"}) == [[9]]


def test_demo_pipeline_smoke(tmp_path, minilm_dir):
    world = make_tiny_world(tmp_path)
    config = tiny_config(tmp_path / "tiny.json")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "vilbert.demo", "run", "--data", str(world), "--output", str(out), "--smoke",
           "--config_file", str(config), "--bert_model", str(minilm_dir), "--from_pretrained", ""]
    result = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for stage in ("pretrain", "zero-shot", "finetune-1-6-7-11", "finetune-9", "eval-1", "eval-6-7", "eval-11",
                  "eval-9"):
        assert f"[{stage}] done" in result.stdout, stage
    assert "[make-world]" in result.stdout and "kept" in result.stdout  # the world was there already
    assert "generator version" not in result.stdout  # the current world: no warning
    report = json.loads((out / "results.json").read_text())
    rows = {(r["task"], r["metric"]): r for r in report["rows"]}
    for key in [("VQA", "accuracy"), ("VCR_Q-A", "q2a"), ("VCR_QA-R", "qa2r"), ("VCR_Q-A", "q2ar"),
                ("refcoco+", "accuracy"), ("RetrievalFlickr30k", "R@1"), ("RetrievalFlickr30k_zero_shot", "R@1")]:
        assert rows[key]["result"] is not None and 0 <= rows[key]["result"] <= 100, key
        assert rows[key]["chance"] is not None, key
    assert rows[("RetrievalFlickr30k_zero_shot", "R@1")]["target"] == ">= 125 (5x chance)"  # 4 pictures: 25%
    table = (out / "results.md").read_text()
    assert "| VQA (minval) | accuracy | " in table and "| zero-shot retrieval R@1 (test) | R@1 |" in table
    assert "## VQA and VCR by question kind" in table and "| VCR Q->A val: question |" in table
    for picture in ("training_curves.png", "grounding.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The precision is chosen once (timed at start-up on a CPU) and kept for reruns in that folder.
    precision = (out / "logs" / "precision.txt").read_text().strip()
    assert f", {precision}; values in" in table

    # A second run keeps every finished stage and only writes the report again; a world of an older
    # generator is used as it is, with a warning that says how to replace it.
    info = json.loads((world / "world.json").read_text())
    older = GENERATOR_VERSION - 1
    (world / "world.json").write_text(json.dumps({**info, "generator_version": older}))
    again = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"warning: that world is of generator version {older}" in again.stdout and "--overwrite" in again.stdout
    assert " done in " not in again.stdout
    assert again.stdout.count("exists: kept") == 8  # pretrain, zero-shot, 2 finetunes, 4 evaluations
    # The same results; only the timing table may differ (the pictures are drawn again and timed).
    assert (out / "results.md").read_text().split("| stage |")[0] == table.split("| stage |")[0]
