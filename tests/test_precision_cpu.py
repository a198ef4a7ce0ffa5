"""The CPU bf16 shortcut of the pretraining model (docs/PERFORMANCE.md): the MLM head runs in fp32
under CPU autocast (no bf16 cast of the tied 30,522-row word matrix for a few masked rows). It must
leave the training step as it was."""

import pytest
import torch

import vilbert.model as model_module
from vilbert.model import ViLBertForPretraining

from _model_helpers import random_inputs, tiny_config


def _pretraining_batch(config, seed=0):
    inputs = random_inputs(config, batch=3, tokens=7, regions=5, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.full_like(inputs["input_ids"], -1)
    labels[:, 1:4] = inputs["input_ids"][:, 1:4]
    image_label = torch.zeros(3, 5, dtype=torch.long)
    image_label[:, 1:3] = 1
    target = torch.softmax(torch.randn(3, 5, config.region_target_size, generator=g), -1)
    return dict(inputs, masked_lm_labels=labels, image_label=image_label, image_target=target,
                next_sentence_label=torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("fp32_head", [True, False])
def test_mlm_head_in_fp32_under_cpu_bf16_autocast(monkeypatch, fp32_head):
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForPretraining(config)
    batch = _pretraining_batch(config)
    reference = model(**batch)
    monkeypatch.setattr(model_module, "CPU_MLM_HEAD_FP32", fp32_head)
    seen = []
    model.mlm_head.transform.dense.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert seen == [torch.float32 if fp32_head else torch.bfloat16]
    assert out.prediction_scores_v.dtype == torch.bfloat16  # the rest of the model stays in bf16
    torch.testing.assert_close(out.masked_lm_loss, reference.masked_lm_loss, rtol=2e-2, atol=2e-2)
    out.loss.backward()
    assert model.mlm_head.decoder.weight.grad.dtype == torch.float32
