"""benchmarks/bench_scoring.py runs on a tiny world and checkpoint: FLOPs and time per caption, and
several copies of a caption a call scoring what one does."""

import re

from _scripts_helpers import load_benchmark, make_tiny_world, save_pretraining_checkpoint, tiny_config


def test_scoring_benchmark_runs_both_modes(tmp_path, minilm_dir, capsys):
    bench = load_benchmark("bench_scoring")
    world = make_tiny_world(tmp_path)
    checkpoint = save_pretraining_checkpoint(tiny_config(tmp_path / "tiny.json"), tmp_path / "ckpt")
    common = ["--checkpoint", str(checkpoint), "--tasks_config", str(world / "vlbert_tasks.yml"), "--zero_shot",
              "--captions", "3", "--rounds", "1", "--bert_model", str(minilm_dir)]
    assert bench.main(common + ["--profile"]) == 0
    out = capsys.readouterr().out
    assert "aten::" in out and "Self CPU" in out, out  # the profile's table
    assert re.search(r"3 captions x \d+ pictures: [\d.]+ GFLOP a caption", out), out
    assert re.search(r"round 1: [\d.]+ ms a caption, \d+ GFLOP/s", out), out
    # K copies a call: the scores are checked against one copy's inside the script.
    assert bench.main(common + ["--captions_per_call", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "round 1: 1 caption(s) of" in out and "round 1: 2 caption(s) of" in out, out
