"""Training curves (vilbert.visualize): a panel per task, losses apart from metrics."""

import json

import numpy as np
import pytest

from vilbert.visualize import curve_panels, main as visualize, plot_training_curves


def write_log(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.fixture
def logs(tmp_path):
    pretraining = write_log(tmp_path / "pretrain.jsonl", [
        {"step": 10, "train/loss": 5.0, "train/masked_lm": 3.0, "train/alignment": 0.7, "train/lr": 1e-4,
         "train/skipped": 0.0},
        {"step": 20, "train/loss": 4.0, "train/masked_lm": 2.5, "train/alignment": 0.6},
        {"step": 20, "val/masked_lm": 2.6, "val/alignment_accuracy": 0.8}])
    records = []
    for step in (10, 20, 30):
        for task, metric in (("VQA", "accuracy"), ("VCR_Q-A", "accuracy"), ("refcoco+", "accuracy")):
            records.append({"step": step, f"train/{task}/loss": 3.0 / step, f"train/{task}/{metric}": step,
                            f"train/{task}/grad_norm": 1.0, f"train/{task}/skipped": 0.0, "train/lr_body": 1e-5})
            records.append({"step": step, f"val/{task}/{metric}": step + 1.0})
    finetune = write_log(tmp_path / "finetune.jsonl", records)
    return {"pretraining": pretraining, "finetune": finetune}


def test_a_panel_per_task_and_losses_apart_from_metrics(logs):
    panels = curve_panels(logs)
    assert set(panels) == {("pretraining", "loss"), ("pretraining", "metric")} | {
        (f"{task} (finetune)", kind) for task in ("VQA", "VCR_Q-A", "refcoco+") for kind in ("loss", "metric")}
    assert set(panels["VQA (finetune)", "loss"]) == {"train loss"}
    assert set(panels["VQA (finetune)", "metric"]) == {"train accuracy", "val accuracy"}
    assert panels["VQA (finetune)", "metric"]["val accuracy"] == [(10, 11.0), (20, 21.0), (30, 31.0)]
    assert set(panels["pretraining", "loss"]) == {"train loss", "train masked_lm", "train alignment", "val masked_lm"}
    assert panels["pretraining", "metric"] == {"val alignment_accuracy": [(20, 80.0)]}  # in percent


def test_compare_puts_every_runs_curve_of_a_task_in_one_panel(logs, tmp_path):
    other = write_log(tmp_path / "other.jsonl", [{"step": 5, "val/VQA/accuracy": 60.0}])
    panels = curve_panels({"before": logs["finetune"], "after": other}, keys=["VQA/accuracy"], compare=True)
    assert set(panels) == {("VQA", "metric")}
    assert set(panels["VQA", "metric"]) == {"before: train accuracy", "before: val accuracy", "after: val accuracy"}


def test_the_picture_is_drawn(logs, tmp_path):
    from PIL import Image

    path = plot_training_curves(logs, tmp_path / "curves.png")
    image = np.asarray(Image.open(path).convert("L"))
    # 4 tasks, 2 side by side, 2 panels each: a wide picture with ink in all four columns of panels.
    assert image.shape[1] > 1.5 * image.shape[0]
    quarters = np.array_split(image, 4, axis=1)
    assert all((q < 128).mean() > 0.005 for q in quarters)
    assert visualize(["curves", "--compare", "--keys", "VQA", "--log", f"a={logs['finetune']}",
                      "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    empty = write_log(tmp_path / "empty.jsonl", [{"step": 1, "train/lr": 1e-4}])
    assert visualize(["curves", "--log", f"x={empty}", "--output", str(tmp_path / "e.png")]) == 2


def test_rates_norms_and_throughput_only_when_named(logs):
    panels = curve_panels({"f": logs["finetune"]}, keys=["VQA/"])
    assert set(panels["VQA (f)", "metric"]) == {"train accuracy", "val accuracy"}  # no "train skipped"
    assert set(curve_panels({"f": logs["finetune"]}, keys=["skipped"])["VQA (f)", "metric"]) == {"train skipped"}
    panels = curve_panels({"f": logs["finetune"]}, keys=["grad_norm"])
    assert set(panels) == {("VQA (f)", "metric"), ("VCR_Q-A (f)", "metric"), ("refcoco+ (f)", "metric")}


def test_compare_draws_each_run_in_one_colour(logs, tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **kw: drawn.append((kw["label"], kw["color"], kw["linestyle"])) or real(self, *a, **kw))
    other = write_log(tmp_path / "other.jsonl", [{"step": 5, "val/VQA/accuracy": 60.0, "train/VQA/loss": 1.0}])
    plot_training_curves({"before": logs["finetune"], "after": other}, tmp_path / "c.png", keys=["VQA/"], compare=True)
    colours = {label.split(": ")[0]: set() for label, _, _ in drawn}
    for label, colour, style in drawn:
        colours[label.split(": ")[0]].add(colour)
        assert style == ("--" if label.split(": ")[1].startswith("val") else "-")
    assert colours == {"before": {"C0"}, "after": {"C1"}}
