"""train_tasks.py --vil_logit_init alignment: the matching head starts as the pretraining
alignment head's (aligned - random) score, from our checkpoints and from the originals' key layout."""

import pytest
import torch

from _model_helpers import random_inputs, tiny_config
from vilbert.convert import to_original_key
from vilbert.finetune import init_vil_logit_from_alignment, load_task_model
from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    model = ViLBertForPretraining(tiny_config()).eval()
    with torch.no_grad():  # a trained-looking head: not the init's small values
        model.alignment_head.weight.normal_(0, 1.0)
        model.alignment_head.bias.copy_(torch.tensor([0.7, -0.4]))
    directory = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(directory)
    return model, directory


def _alignment_margin(model: ViLBertForPretraining, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        scores = model(**inputs).seq_relationship_score
    return scores[:, 0] - scores[:, 1]


def _vil_logit(model: ViLBertForVLTasks, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs, heads={"vil_logit"}).vil_logit[:, 0]


def test_vil_logit_scores_like_the_alignment_head(pretrained):
    model, directory = pretrained
    inputs = random_inputs(model.config, batch=4)
    tasks = load_task_model(ViLBertForVLTasks, str(directory), None, log=lambda _: None)
    assert "vil_logit.weight" in tasks.load_report.missing
    before = _vil_logit(tasks, inputs)
    assert init_vil_logit_from_alignment(tasks, str(directory))
    after = _vil_logit(tasks, inputs)
    torch.testing.assert_close(after, _alignment_margin(model, inputs), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_original_key_layout(pretrained, tmp_path):
    model, _ = pretrained
    state = {to_original_key(name): tensor for name, tensor in model.state_dict().items() if to_original_key(name)}
    assert "cls.bi_seq_relationship.weight" in state
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    tasks = load_task_model(ViLBertForVLTasks, str(path), _config_file(model, tmp_path),
                            log=lambda _: None)
    assert init_vil_logit_from_alignment(tasks, str(path))
    inputs = random_inputs(model.config, batch=3, seed=1)
    torch.testing.assert_close(_vil_logit(tasks, inputs), _alignment_margin(model, inputs), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_without_alignment_head_changes_nothing(tmp_path):
    torch.manual_seed(1)
    finetuned = ViLBertForVLTasks(tiny_config())
    finetuned.save_pretrained(tmp_path)
    torch.manual_seed(2)
    model = ViLBertForVLTasks(tiny_config())
    weight = model.vil_logit.weight.clone()
    assert not init_vil_logit_from_alignment(model, str(tmp_path))
    assert torch.equal(model.vil_logit.weight, weight)


def _config_file(model, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(model.config.to_json_string())
    return str(path)


def test_twelve_in_one_heads_are_built_for_the_tasks_that_read_them(pretrained, tmp_path):
    from pathlib import Path

    from vilbert.finetune import SetupError, needs_multitask_heads
    from vilbert.tasks.registry import build_tasks

    repo = Path(__file__).resolve().parents[1]
    assert needs_multitask_heads(build_tasks("1-13", repo / "vilbert_tasks.yml"))
    assert not needs_multitask_heads(build_tasks("1-8", repo / "vilbert_tasks.yml"))
    _, directory = pretrained
    quiet = dict(log=lambda message: None)
    plain = load_task_model(ViLBertForVLTasks, str(directory), None, **quiet)
    model = load_task_model(ViLBertForVLTasks, str(directory), None, multitask_heads=True, **quiet)
    assert not plain.multitask_heads and model.multitask_heads
    # A finetuned checkpoint keeps them; evaluating a head the checkpoint lacks is an error.
    model.save_pretrained(tmp_path / "finetuned")
    assert load_task_model(ViLBertForVLTasks, str(tmp_path / "finetuned"), None, **quiet).multitask_heads
    with pytest.raises(SetupError, match="no trained vil_tri_prediction"):
        load_task_model(ViLBertForVLTasks, str(directory), None, multitask_heads=True,
                        required=["vil_tri_prediction"], **quiet)
