"""The tied word matrix's one gradient (model.TiedWordMatrix): a CPU pretraining step adds the
lookup's rows into the MLM decoder's gradient in place instead of summing two dense gradients. It
must give every parameter the gradient autograd's own path gives, the padding row included."""

import pytest
import torch

from vilbert.model import TiedWordMatrix, ViLBertForPretraining

from _model_helpers import pretraining_batch, tiny_config


def _gradients(model, batch, tie: bool, monkeypatch) -> dict:
    monkeypatch.setattr(model, "_ties_word_gradients", lambda *args: tie)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast", [False, True])
def test_tied_gradient_equals_autograds_own(monkeypatch, autocast):
    torch.manual_seed(0)
    config = tiny_config()  # dropout off
    model = ViLBertForPretraining(config)
    batch = pretraining_batch(config)
    batch["input_ids"][0, -2:] = 0  # padding: the padding row gets no gradient from the lookup
    batch["input_ids"][1, 4] = batch["input_ids"][2, 5] = batch["input_ids"][1, 5]  # a word used three times
    calls = []
    backward = TiedWordMatrix.backward
    monkeypatch.setattr(TiedWordMatrix, "backward", staticmethod(lambda *a: calls.append(1) or backward(*a)))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        plain = _gradients(model, batch, False, monkeypatch)
        assert not calls
        tied = _gradients(model, batch, True, monkeypatch)
    assert calls == [1]  # the tied path ran
    assert plain.keys() == tied.keys()
    for name in plain:
        torch.testing.assert_close(tied[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)
    words = tied["vilbert.text_embeddings.word_embeddings.weight"]
    # Row 0 holds the decoder's gradient alone: the lookup of padding adds nothing to it.
    decoder_only = plain["vilbert.text_embeddings.word_embeddings.weight"][0]
    torch.testing.assert_close(words[0], decoder_only)


def test_tied_path_only_in_cpu_training_with_masked_words():
    config = tiny_config()
    model = ViLBertForPretraining(config)
    batch = pretraining_batch(config)
    ids, labels = batch["input_ids"], batch["masked_lm_labels"]
    assert model._ties_word_gradients(ids, labels, None)
    assert not model._ties_word_gradients(ids, None, None)  # no MLM targets: no decoder
    with torch.no_grad():
        assert not model._ties_word_gradients(ids, labels, None)
    model.vilbert.text_embeddings.word_embeddings.weight.requires_grad_(False)  # frozen words
    assert not model._ties_word_gradients(ids, labels, None)


def test_tied_lookup_without_decoder_use():
    """The decoder alias unused (its gradient None): the lookup's gradient alone, as nn.Embedding."""
    weight = torch.randn(10, 4, requires_grad=True)
    ids = torch.tensor([[1, 2, 2, 0], [3, 0, 1, 1]])
    words, _ = TiedWordMatrix.apply(weight, ids, 0)
    (words * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(words, torch.nn.functional.embedding(ids, weight.detach()))
    ref_weight = weight.detach().clone().requires_grad_()
    (torch.nn.functional.embedding(ids, ref_weight, padding_idx=0) * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(weight.grad, ref_weight.grad)
