"""benchmarks/place_probe.py: its synthetic labels are right, and it runs (tiny config)."""

import torch

from _scripts_helpers import REPO, load_benchmark


def test_labels_follow_the_boxes_and_kinds():
    probe = load_benchmark("place_probe")
    torch.manual_seed(0)
    kinds = torch.randn(6, 16)
    ids, feat, loc, label = probe.make_batch("above", kinds, 1.0, 64)
    assert feat.shape == (64, 3, 16) and loc.shape == (64, 3, 5) and ids.shape[0] == 64
    assert torch.equal(loc[:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]).expand(64, 5))
    for b in range(64):  # which box is of kind 0, read back from its feature
        distance = [(feat[b, 1 + k] - kinds[0]).norm() for k in range(2)]
        a, other = (1, 2) if distance[0] < distance[1] else (2, 1)
        assert label[b] == int(loc[b, a, 1] < loc[b, other, 1])
    _, feat, loc, label = probe.make_batch("top", kinds, 0.0, 64)
    assert feat.abs().sum() == 0 and torch.equal(label, ((loc[:, 1, 1] + 0.075) < 0.5).long())
    assert 10 < int(label.sum()) < 54  # both answers occur


def test_runs_on_a_tiny_config(capsys):
    probe = load_benchmark("place_probe")
    assert probe.main(["--task", "kind", "--config", str(REPO / "config" / "vilbert_tiny.json"), "--steps", "50"]) == 0
    assert "kind step 50: training accuracy" in capsys.readouterr().out


def test_location_encoding_option_reaches_the_model(capsys, monkeypatch):
    probe = load_benchmark("place_probe")
    built = []
    real = probe.ViLBertForVLTasks
    monkeypatch.setattr(probe, "ViLBertForVLTasks", lambda config, **kw: built.append(config) or real(config, **kw))
    args = ["--task", "top", "--config", str(REPO / "config" / "vilbert_tiny.json"), "--steps", "50"]
    assert probe.main(args + ["--location-encoding", "fourier"]) == 0
    assert built[-1].v_location_encoding == "fourier"
    assert "top step 50: training accuracy" in capsys.readouterr().out


def test_a_fixed_set_of_examples_reports_held_out_accuracy(capsys):
    probe = load_benchmark("place_probe")
    args = ["--task", "kind", "--config", str(REPO / "config" / "vilbert_tiny.json"), "--steps", "50",
            "--examples", "64", "--precision", "fp32"]
    assert probe.main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("kind step 50: training accuracy") and ", held out " in line
