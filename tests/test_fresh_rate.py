"""Issue 14: the weights a checkpoint did not initialise train at the fresh rate (train_tasks.py,
train_concap.py), and --no_fresh_rate gives back the groups of before."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import train_concap  # noqa: E402
import train_tasks  # noqa: E402
from _model_helpers import tiny_config  # noqa: E402
from vilbert.finetune import load_task_model, task_head_learning_rates  # noqa: E402
from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks  # noqa: E402
from vilbert.training.optim import LearningRates, build_optimizer, fresh_parameter_names, parameter_groups  # noqa: E402

torch.set_num_threads(1)
BODY, FRESH, HEAD = 2e-5, 1e-4, 1e-3


@pytest.fixture
def tiny_bert(tmp_path):
    """A Hugging Face BertModel directory of the tiny config's text stream."""
    from transformers import BertConfig, BertModel

    config = tiny_config()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                         num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                         intermediate_size=config.intermediate_size,
                         max_position_embeddings=config.max_position_embeddings)).save_pretrained(tmp_path / "bert")
    config.to_json_file(tmp_path / "tiny.json")
    return tmp_path


def task_model(source, config_file, **kwargs):
    return load_task_model(ViLBertForVLTasks, str(source), str(config_file), num_labels=5, log=lambda line: None, **kwargs)


def rates_of(model, fresh_lr=FRESH):
    rates = LearningRates(BODY, fresh_parameter_names(model), fresh_lr,
                          lr_by_prefix=task_head_learning_rates(model, HEAD))
    groups = parameter_groups(model, BODY, 0.01, lr_by_name=rates.by_name(model))
    return rates, {name: group["lr"] for group in groups for name in group["param_names"]}


def test_bert_start_trains_the_visual_stream_at_the_fresh_rate(tiny_bert):
    model = task_model(tiny_bert / "bert", tiny_bert / "tiny.json")
    rates, lr_of = rates_of(model)
    fresh = {n for n, lr in lr_of.items() if lr == FRESH}
    assert lr_of["vilbert.text_layers.3.attention.query.weight"] == BODY
    assert lr_of["vilbert.text_embeddings.word_embeddings.weight"] == BODY
    assert lr_of["vil_prediction.output.bias"] == HEAD and lr_of["vision_logit.weight"] == HEAD
    prefixes = ("vilbert.region_embeddings.", "vilbert.visual_layers.", "vilbert.coattention_layers.",
                "vilbert.text_pooler.", "vilbert.visual_pooler.")
    assert fresh == {n for n in lr_of if n.startswith(prefixes)}
    assert all(any(n.startswith(p) for n in fresh) for p in prefixes)
    line = rates.summary(model)
    assert f"{len(fresh)} tensors at 0.0001 (not in the checkpoint: fresh)" in line
    assert "at 2e-05 (from the checkpoint)" in line and "at 0.001 (task heads)" in line


def test_vilbert_checkpoint_start_has_no_fresh_body_weights(tmp_path):
    ViLBertForPretraining(tiny_config()).save_pretrained(tmp_path / "pretrained")
    model = task_model(tmp_path / "pretrained", "")
    _, lr_of = rates_of(model)
    assert {lr for n, lr in lr_of.items() if n.startswith("vilbert.")} == {BODY}
    assert lr_of["vil_prediction.output.bias"] == HEAD  # missing from the checkpoint, still a head


def test_checkpoint_lacking_a_head_or_task_tokens(tmp_path):
    """A finetuned checkpoint without 12-in-1's extra heads and task tokens: the heads it lacks
    train at the head rate, the task-token embeddings at the fresh rate, the rest at the body's."""
    ViLBertForVLTasks(tiny_config(), num_labels=5).save_pretrained(tmp_path / "vqa")
    model = task_model(tmp_path / "vqa", "", multitask_heads=True, task_specific_tokens=True)
    assert "vil_prediction_gqa.output.bias" in model.load_report.missing
    _, lr_of = rates_of(model)
    assert lr_of["vil_prediction_gqa.output.bias"] == HEAD
    assert {n for n, lr in lr_of.items() if lr == FRESH} == {"vilbert.text_embeddings.task_embeddings.weight"}
    assert lr_of["vilbert.visual_layers.0.attention.query.weight"] == BODY


def test_random_init_is_all_fresh():
    model = ViLBertForVLTasks(tiny_config(), num_labels=5)
    assert fresh_parameter_names(model) == [name for name, _ in model.named_parameters()]


def group_layout(groups):
    return [(g["lr"], g["weight_decay"], g["param_names"]) for g in groups]


def test_rule_off_restores_the_groups_of_before(tiny_bert):
    model = task_model(tiny_bert / "bert", tiny_bert / "tiny.json")
    model.vilbert.text_layers[0].attention.query.weight.requires_grad_(False)  # frozen ones stay out
    heads = task_head_learning_rates(model, HEAD)
    before = parameter_groups(model, BODY, 0.01, lr_by_prefix=heads)
    off = LearningRates(BODY, fresh_parameter_names(model), None, lr_by_prefix=heads)
    assert group_layout(parameter_groups(model, BODY, 0.01, lr_by_name=off.by_name(model))) == group_layout(before)
    on = LearningRates(BODY, fresh_parameter_names(model), FRESH, lr_by_prefix=heads)
    assert group_layout(parameter_groups(model, BODY, 0.01, lr_by_name=on.by_name(model))) != group_layout(before)


def test_pretraining_groups_unchanged_by_default(tiny_bert):
    """train_concap.py: BERT weights at 0.1x, fresh ones at --learning_rate, exactly as before."""
    model = ViLBertForPretraining.from_pretrained(tiny_bert / "bert", config=tiny_config())
    bert = train_concap.bert_initialised_names(model, model.load_report)
    scaled = {name: 0.1 for name in bert}
    before = parameter_groups(model, 1e-4, 0.01, scaled_lr=scaled)
    args = train_concap.parse_args([])
    rates = LearningRates(1e-4, fresh_parameter_names(model), train_concap.fresh_rate(args), scaled=scaled)
    optimizer = build_optimizer(model, 1e-4, 0.01, lr_by_name=rates.by_name(model))
    assert group_layout(optimizer.param_groups) == group_layout(before)
    assert "initialised from BERT, 0.1x" in rates.summary(model)
    # Given a fresh rate, the weights BERT did not fill take it.
    rates = LearningRates(1e-4, fresh_parameter_names(model), 3e-4, scaled=scaled)
    assert rates.by_name(model)["vilbert.visual_layers.0.attention.query.weight"] == 3e-4


def test_flags():
    defaults = train_tasks.parse_args([])
    assert defaults.fresh_rate and defaults.fresh_learning_rate == 1e-4
    assert train_tasks.fresh_rate(defaults) == 1e-4
    off = train_tasks.parse_args(["--no_fresh_rate"])
    assert train_tasks.fresh_rate(off) is None
    assert train_tasks.fresh_rate(train_tasks.parse_args(["--no_fresh_rate", "--vision_scratch"])) == 1e-4
    assert train_tasks.fresh_rate(train_tasks.parse_args(["--fresh_learning_rate", "3e-4"])) == 3e-4
    assert train_concap.fresh_rate(train_concap.parse_args([])) is None  # pretraining: --learning_rate


def test_demo_bert_only_runs_and_row(tmp_path, minilm_dir):
    """`python -m vilbert.demo run --bert_only` (make demo-bert-only): its first two VQA runs differ
    only by --no_fresh_rate, the third trains every weight at one rate, and the results table gets
    the rows "VQA from BERT only" once they are done."""
    import json

    from vilbert.demo.make import tasks_yaml
    from vilbert.demo.pipeline import Pipeline, parse_args

    (tmp_path / "vlbert_tasks.yml").write_text(tasks_yaml())
    (tmp_path / "CHANCE.json").write_text(json.dumps({"VQA": {"accuracy": 50.0}}))
    pipeline = Pipeline(parse_args(["--bert_only", "--data", str(tmp_path), "--output", str(tmp_path / "out"),
                                    "--bert_model", str(minilm_dir), "--precision", "fp32"]))
    off, on, one = pipeline.schedule.bert_only
    assert off.extra == on.extra + ["--no_fresh_rate"] and off.tasks == on.tasks == "1"
    assert (off.lr, off.head_lr) == (on.lr, on.head_lr) == (2e-5, 1e-4)  # train_tasks.py's defaults
    assert one.extra == off.extra and (one.lr, one.head_lr) == (1e-4, 1e-4)  # no fresh rate: 1e-4 for all
    assert pipeline.bert_only_rows({}) == []  # not run yet: no row
    for job, value in ((off, 57.5), (on, 70.0), (one, 69.5)):
        write = tmp_path / "out" / "runs" / f"VQA_{job.save_name}" / "val_metrics.json"
        write.parent.mkdir(parents=True)
        write.write_text(json.dumps({"VQA": {"accuracy": value}}))
    pipeline.report({})
    rows = {r["task"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]}
    assert rows["VQA_bert_only"]["result"] == 70.0 and rows["VQA_bert_only"]["fresh_rate_off"] == 57.5
    assert rows["VQA_bert_only"]["met"] is True and rows["VQA_bert_only"]["target"].startswith(">= 67.50")
    assert rows["VQA_bert_only_one_rate"]["result"] == 69.5
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| VQA from BERT only (minval) | accuracy | 50.00 | 70.00 | >= 67.50" in table
    assert "| VQA from BERT only, every weight at 1e-4 (minval) | accuracy | 50.00 | 69.50 | the defaults: 70.00 |" in table
