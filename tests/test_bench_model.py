"""benchmarks/bench_model.py runs every workload on the CPU (tiny config), so it never rots, and its
FLOP count and inputs mean what the docs say."""

import json

import pytest
import torch

from _scripts_helpers import REPO, load_benchmark


bench = load_benchmark("bench_model")


def test_quick_runs_every_workload(tmp_path):
    out = tmp_path / "rows.jsonl"
    results = bench.main(["--quick", "--json", str(out), "--threads", "1", "--default_malloc"])  # malloc is process-wide
    assert [r.workload for r in results] == list(bench.WORKLOADS)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(bench.WORKLOADS)
    for row in rows:
        assert row["rate"] > 0 and row["step_ms"] > 0 and row["peak_memory_gib"] > 0, row
        assert row["gflop_per_sample"] > 0, row
    by_name = {row["workload"]: row for row in rows}
    # Scoring is a forward pass only; a VQA training step at the same region count runs forward and
    # backward (about 3x) over fewer tokens.
    assert by_name["score"]["gflop_per_sample"] < by_name["vqa"]["gflop_per_sample"]
    # VCR's sample is 4 rows of 60 tokens: more work than a VQA sample.
    assert by_name["vcr"]["gflop_per_sample"] > 2 * by_name["vqa"]["gflop_per_sample"]


def test_prefix_cache_benchmark_serves_every_cached_step_from_the_cache():
    prefix_cache = load_benchmark("bench_prefix_cache")
    times = prefix_cache.main(["--quick"])  # tiny config, dropout off, batch 4, 2 rounds of 1 step
    assert times["plain"] > 0 and times["cached"] > 0
    # Every row of every cached step after the first (the second warm-up step, then one a round) is a hit.
    assert times["hits"] == 4 * (1 + 2 * 1)


def test_alternating_times_each_run_in_every_round():
    calls = []
    medians = bench.alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 2,
                                torch.device("cpu"))
    assert calls == ["a", "a", "b", "b"] * 3 and set(medians) == {"a", "b"}


def test_flop_count_of_a_linear_stack_is_exact():
    # The counter the benchmark uses: 2 * M * K * N per matmul, forward and twice that backward.
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)

    def step():
        layer(x).sum().backward()

    assert bench.count_flops(step) == 3 * 2 * 4 * 16 * 8


def test_synthetic_pretraining_batch_has_the_issue_shapes():
    from vilbert.config import ViLBertConfig

    config = ViLBertConfig.from_json_file(REPO / "config" / "bert_base_6layer_6conect.json")
    batch = bench.synthetic_batch(config, bench.WORKLOADS["pretrain"], 2, torch.device("cpu"))
    assert batch["input_ids"].shape == (2, 36)
    assert batch["image_feat"].shape == (2, 37, 2048)
    assert batch["image_target"].shape == (2, 37, 1601)
    assert (batch["image_label"][:, 0] == 0).all()  # the global region is never a target
    vcr = bench.synthetic_batch(config, bench.WORKLOADS["vcr"], 2, torch.device("cpu"))
    assert vcr["input_ids"].shape == (8, 60) and vcr["target"].shape == (2,)


def test_unknown_workload_is_a_one_line_error():
    with pytest.raises(SystemExit, match="unknown workload 'nope'"):
        bench.main(["--quick", "--workload", "nope", "--default_malloc"])


@pytest.mark.skipif(not __import__("os").environ.get("VILBERT_ORIGINAL_DIR"),
                    reason="set VILBERT_ORIGINAL_DIR to a folder with vilbert-multi-task's vilbert.py and utils.py")
def test_original_model_file_gets_our_weights_and_gives_our_outputs():
    import os

    original_model = load_benchmark("original_model")
    from _model_helpers import tiny_config

    config = tiny_config()
    module = original_model.load_original_module(os.environ["VILBERT_ORIGINAL_DIR"])
    ours = bench.ViLBertForPretraining(config).eval()
    original = original_model.build_original_pretraining(module, config, ours.state_dict()).eval()
    batch = bench.synthetic_batch(config, bench.Workload("t", 7, 5), 3, torch.device("cpu"))
    inputs = {k: batch[k] for k in ("input_ids", "image_feat", "image_loc", "token_type_ids", "attention_mask",
                                    "image_attention_mask")}
    with torch.no_grad():
        theirs = original(**inputs)
        mine = ours(**inputs)
    torch.testing.assert_close(mine.seq_relationship_score, theirs[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine.prediction_scores_t, theirs[0], rtol=1e-4, atol=1e-4)
