"""The CPU bf16 shortcut of the pretraining model (docs/PERFORMANCE.md): the MLM head runs in fp32
under CPU autocast (no bf16 cast of the tied 30,522-row word matrix for a few masked rows). It must
leave the training step as it was."""

import pytest
import torch

import vilbert.model as model_module
from vilbert.model import ViLBertForPretraining

from _model_helpers import pretraining_batch, tiny_config


@pytest.mark.parametrize("fp32_head", [True, False])
def test_mlm_head_in_fp32_under_cpu_bf16_autocast(monkeypatch, fp32_head):
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForPretraining(config)
    batch = pretraining_batch(config)
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
