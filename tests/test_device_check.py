"""benchmarks/device_check.sh end to end on the CPU (`--device cpu --quick`: tiny config, one thread a
process): one JSON and one markdown file come out, every check passes, every bench row has a rate.
And the report's bookkeeping for steps that die (no torch needed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import device_checks  # noqa: E402

BENCH_HEADER = "| workload | precision | compile | batch | rate | ms/step | TFLOP/s | peak GiB |"


def test_quick_run_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.md"]

    report = json.loads((out / "device_check.json").read_text())
    keys = {"created", "device", "quick", "budget_s", "summary", "environment", "checks", "bench", "steps"}
    assert keys <= set(report)
    assert report["device"] == "cpu" and report["quick"] is True
    environment = report["environment"]
    assert environment["torch"] and environment["cpu_count"] >= 1
    assert {"cuda", "nvidia_smi", "git_commit", "packages"} <= set(environment)

    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["env", "install", "check_precision", "check_gradscaler", "check_sdpa", "check_ddp",
                           "bench_quick", "extract_vmb_quick"]
    assert all(s["status"] == "ok" and s["rc"] == 0 and s["seconds"] > 0 for s in steps.values()), steps

    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"precision", "gradscaler", "sdpa", "ddp"}
    assert {name: c["summary"] for name, c in checks.items() if not c["passed"]} == {}
    assert set(checks["precision"]["details"]["modes"]) == {"bf16", "fp16"}
    assert checks["gradscaler"]["details"]["injected_inf"]["ok"]
    assert checks["gradscaler"]["details"]["injected_inf"]["weights_changed"] is False
    assert "MATH" in checks["sdpa"]["details"]["default_dispatch"]["pretrain_step"]["backends"]
    assert checks["ddp"]["details"]["backend"] == "gloo"
    assert report["summary"]["all_checks_passed"] and report["summary"]["steps_failed"] == []

    rows = report["bench"]
    workloads = {"pretrain", "vqa", "vcr", "refcoco", "retrieval", "score", "pretrain-data", "extract-vmb"}
    assert {r["workload"] for r in rows} == workloads
    for row in rows:
        assert row["rate"] > 0 and row["step_ms"] > 0 and row["tflops"] >= 0 and row["device"] == "cpu", row
        if row["workload"] == "extract-vmb":  # 12-in-1's detector, benchmarks/bench_detector.py --quick
            assert row["step"] == "extract_vmb_quick" and row["config"] == "tiny" and row["unit"] == "images"
        else:
            assert row["step"] == "bench_quick" and row["config"] == "vilbert_tiny.json"

    text = (out / "device_check.md").read_text()
    assert BENCH_HEADER in text
    assert text.count("| pass |") == 4 and "FAIL" not in text
    assert BENCH_HEADER in done.stdout  # the markdown is printed at the end


def test_full_plan_refuses_a_cpu(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--quick" in done.stderr


def test_report_records_steps_that_died(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "logs").mkdir(parents=True)
    (work / "bench").mkdir()
    steps = [("check_precision", "check", "0"), ("check_ddp", "check", "124"), ("pretrain_bf16", "bench", "0"),
             ("score_bf16_b1000", "bench", "1"), ("vqa_bf16_compile", "bench", "skipped")]
    (work / "steps.tsv").write_text("".join(f"{n}\t{k}\t{rc}\t{3.5 if rc != 'skipped' else 0}\t90\t20\tcmd {n}\n"
                                            for n, k, rc in steps))
    check = dict(name="precision", passed=True, summary="ok", details={})
    (work / "checks.jsonl").write_text(json.dumps(check) + "\n")
    (work / "logs" / "check_ddp.log").write_text("waiting for NCCL\n")
    (work / "logs" / "score_bf16_b1000.log").write_text("torch.OutOfMemoryError: CUDA out of memory\n")
    row = dict(workload="pretrain", precision="bf16", compile=False, batch=256, unit="samples", rate=1234.5,
               step_ms=207.4, tflops=150.2, peak_memory_gib=40.1)
    (work / "bench" / "pretrain_bf16.jsonl").write_text(json.dumps(row) + "\n")

    report = device_checks.write_report(work, out, dict(device="cuda", quick=False, budget_s=500))
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["precision"]["passed"] and not checks["ddp"]["passed"]
    assert "timeout" in checks["ddp"]["summary"] and "NCCL" in checks["ddp"]["details"]["log_tail"]
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status == {"check_precision": "ok", "check_ddp": "timeout", "pretrain_bf16": "ok",
                      "score_bf16_b1000": "failed", "vqa_bf16_compile": "skipped (budget)"}
    assert report["summary"]["steps_failed"] == ["check_ddp", "score_bf16_b1000", "vqa_bf16_compile"]
    assert not report["summary"]["all_checks_passed"]
    assert [r["step"] for r in report["bench"]] == ["pretrain_bf16"]

    text = (out / "device_check.md").read_text()
    assert "| pretrain | bf16 | no | 256 | 1,234.5 samples/s | 207.4 | 150.20 | 40.10 |" in text
    assert "| score_bf16_b1000 | | | | **failed** (rc 1) |" in text
    assert "| ddp | **FAIL** |" in text
