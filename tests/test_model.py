import torch

from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks, ViLBertModel

from _model_helpers import random_inputs, tiny_config


def test_model_output_shapes():
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertModel(config).eval()
    out = model(**random_inputs(config))
    assert out.sequence_output_t.shape == (3, 7, config.hidden_size)
    assert out.sequence_output_v.shape == (3, 5, config.v_hidden_size)
    assert out.pooled_output_t.shape == out.pooled_output_v.shape == (3, config.bi_hidden_size)
    assert out.attentions is None


def test_pretraining_and_task_heads_run():
    torch.manual_seed(0)
    config = tiny_config()
    inputs = random_inputs(config)
    out = ViLBertForPretraining(config)(**inputs)
    assert out.prediction_scores_t.shape == (3, 7, config.vocab_size)
    assert out.prediction_scores_v.shape == (3, 5, config.v_target_size)
    assert out.seq_relationship_score.shape == (3, 2)
    tasks = ViLBertForVLTasks(config, num_labels=6)(**inputs)
    assert tasks.vil_prediction.shape == (3, 6)
    assert tasks.vil_logit.shape == (3, 1)
    assert tasks.vision_logit.shape == (3, 5, 1)
    assert tasks.linguisic_logit.shape == (3, 7, 1)
