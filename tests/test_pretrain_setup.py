"""Pretraining set-up pieces of train_concap.py: flags, BERT-initialised names, freezing."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_concap  # noqa: E402
from vilbert import ViLBertConfig, ViLBertForPretraining  # noqa: E402
from vilbert.training import build_optimizer  # noqa: E402
from vilbert.training.optim import freeze_text_layers  # noqa: E402

torch.set_num_threads(1)


def test_flags_and_aliases():
    args = train_concap.parse_args(["--fp16", "--local-rank=1"])
    assert args.precision == "fp16" and args.local_rank == 1
    assert train_concap.parse_args(["--local_rank", "0"]).local_rank == 0
    defaults = train_concap.parse_args([])
    assert (defaults.max_seq_length, defaults.max_region_num, defaults.train_batch_size) == (36, 37, 512)
    assert defaults.warmup_proportion == 0.1 and defaults.bert_lr_scale == 0.1 and defaults.precision is None
    with pytest.raises(SystemExit):
        train_concap.parse_args(["--fp16", "--precision", "bf16"])


def test_bert_initialised_names_come_from_the_load_report(minilm_dir, tmp_path):
    config = ViLBertConfig.from_json_file(REPO / "config" / "demo_minilm.json")
    model = ViLBertForPretraining.from_pretrained(minilm_dir, config=config)
    names = train_concap.bert_initialised_names(model, model.load_report)
    params = dict(model.named_parameters())
    assert names and set(names) <= set(params)
    assert all(n.startswith(("vilbert.text_embeddings.", "vilbert.text_layers.")) for n in names)
    assert "vilbert.text_layers.5.attention.query.weight" in names
    assert not any(n.startswith(("vilbert.visual", "vilbert.coattention", "region_head", "alignment_head"))
                   for n in names)
    # They train at the scaled rate; everything else at the base rate.
    optimizer = build_optimizer(model, lr=1e-4, scaled_lr={n: 0.1 for n in names})
    lr_of = {n: g["lr"] for g in optimizer.param_groups for n in g["param_names"]}
    assert lr_of["vilbert.text_layers.0.attention.query.weight"] == pytest.approx(1e-5)
    assert lr_of["vilbert.coattention_layers.0.text_attention.query.weight"] == pytest.approx(1e-4)
    # Continuing from a ViLBERT checkpoint keeps one learning rate.
    model.save_pretrained(tmp_path / "ours")
    again = ViLBertForPretraining.from_pretrained(tmp_path / "ours")
    assert train_concap.bert_initialised_names(again, again.load_report) == []


def test_freeze_text_layers():
    config = ViLBertConfig.from_json_file(REPO / "config" / "vilbert_tiny.json")
    model = ViLBertForPretraining(config)
    frozen = freeze_text_layers(model, 1)
    assert frozen and all(n.startswith(("vilbert.text_embeddings.", "vilbert.text_layers.0.",
                                        "vilbert.text_layers.1.")) for n in frozen)
    assert not model.vilbert.text_layers[1].attention.query.weight.requires_grad
    assert model.vilbert.text_layers[2].attention.query.weight.requires_grad
    assert config.fixed_t_layer == 2
    assert freeze_text_layers(ViLBertForPretraining(config), -1) == []


def test_plot_script_reads_metrics_and_writes_a_png(tmp_path):
    import json

    from _scripts_helpers import load_benchmark

    plot = load_benchmark("plot_pretrain")
    metrics = tmp_path / "metrics.jsonl"
    lines = []
    for step in (10, 20, 30):
        lines.append({"step": step, "train/masked_lm": 5.0 / step, "train/masked_img": 2.0, "train/alignment": 0.69,
                      "train/alignment_accuracy": 0.5})
        lines.append({"step": step, "val/masked_lm": 4.0 / step, "val/masked_img": 2.1, "val/alignment": 0.6,
                      "val/alignment_accuracy": 0.5 + step / 100})
    lines.append({"step": 20, "train/masked_lm": 9.0, "train/masked_img": 2.0, "train/alignment": 0.7,
                  "train/alignment_accuracy": 0.5})  # a resumed run's redo of step 20 wins
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    train, val = plot.read_metrics(metrics)
    assert sorted(train) == [10, 20, 30] and train[20]["train/masked_lm"] == 9.0 and val[30]["val/alignment_accuracy"] == 0.8
    out = plot.plot(metrics, tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
