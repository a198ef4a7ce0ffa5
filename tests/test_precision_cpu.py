"""The CPU bf16 shortcuts of the pretraining model (docs/PERFORMANCE.md): the tied word matrix's
lookup gradient comes sparse and is added into the decoder's dense one, and the MLM head runs in
fp32 under CPU autocast. Both must leave the training step as it was."""

import copy

import pytest
import torch

import vilbert.model as model_module
from vilbert.model import ViLBertForPretraining
from vilbert.training import build_optimizer

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


def _grads(model, batches):
    for batch in batches:  # two micro-batches: the second accumulates into a .grad that exists
        model(**batch).loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_tied_word_gradient_stays_dense_and_matches_the_dense_lookup():
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForPretraining(config)
    dense = copy.deepcopy(model)
    assert model.vilbert.text_embeddings.word_embeddings.sparse
    dense.vilbert.text_embeddings.word_embeddings.sparse = False
    batches = [_pretraining_batch(config, seed) for seed in (0, 1)]

    ours, reference = _grads(model, batches), _grads(dense, batches)
    word = "vilbert.text_embeddings.word_embeddings.weight"
    assert not ours[word].is_sparse and ours[word].layout == torch.strided
    assert ours[word][0].abs().max() > 0  # the decoder's gradient reaches the padding row, the lookup's not
    for name, grad in reference.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    build_optimizer(model, 1e-3).step()  # fused AdamW takes dense gradients only


@pytest.mark.parametrize("fp32_head", [True, False])
def test_mlm_head_in_fp32_under_cpu_bf16_autocast(monkeypatch, fp32_head):
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForPretraining(config)
    batch = _pretraining_batch(config)
    reference = model(**batch)
    monkeypatch.setattr(model_module, "CPU_MLM_HEAD_FP32", fp32_head)
    seen = []
    model.mlm_head.decoder.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert seen == [torch.float32 if fp32_head else torch.bfloat16]
    assert out.prediction_scores_v.dtype == torch.bfloat16  # the rest of the model stays in bf16
    torch.testing.assert_close(out.masked_lm_loss, reference.masked_lm_loss, rtol=2e-2, atol=2e-2)
    out.loss.backward()
    assert model.mlm_head.decoder.weight.grad.dtype == torch.float32
