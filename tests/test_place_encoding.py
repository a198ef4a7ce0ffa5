"""v_location_encoding: "linear" is the originals' region embedding bit for bit; "uniter" and
"fourier" feed the box at the scale of the appearance and change the embedding."""

import pytest
import torch
import torch.nn.functional as F

from vilbert.config import ViLBertConfig
from vilbert.model import ViLBertModel

from tests._model_helpers import random_inputs, tiny_config


def _model(encoding, seed=0):
    torch.manual_seed(seed)
    return ViLBertModel(tiny_config(v_location_encoding=encoding)).eval()


def test_linear_is_the_originals_formula_bit_for_bit():
    model = _model("linear")
    emb = model.region_embeddings
    inputs = random_inputs(model.config)
    feat, loc = inputs["image_feat"], inputs["image_loc"]
    expected = F.layer_norm(
        F.linear(feat, emb.feature_projection.weight, emb.feature_projection.bias)
        + F.linear(loc, emb.location_projection.weight, emb.location_projection.bias),
        (model.config.v_hidden_size,), emb.norm.weight, emb.norm.bias, model.config.layer_norm_eps)
    assert torch.equal(emb(feat, loc), expected)
    # The same parameters as before the option existed: original checkpoints map one to one.
    names = {n for n, _ in emb.named_parameters()} | set(emb.state_dict())
    assert names == {f"{m}.{p}" for m in ("feature_projection", "location_projection", "norm") for p in ("weight", "bias")}
    assert emb.location_projection.in_features == 5


def test_linear_is_the_default_of_every_config_without_the_field():
    assert ViLBertConfig().v_location_encoding == "linear"
    assert tiny_config().v_location_encoding == "linear"


@pytest.mark.parametrize("encoding, size", [("uniter", 7), ("fourier", 14 * 6)])
def test_other_encodings_change_the_embedding_and_see_the_place(encoding, size):
    base, model = _model("linear"), _model(encoding)
    emb = model.region_embeddings
    assert emb.location_projection.in_features == size
    inputs = random_inputs(model.config)
    feat, loc = inputs["image_feat"], inputs["image_loc"]
    out = emb(feat, loc)
    assert out.shape == base.region_embeddings(feat, loc).shape
    with torch.no_grad():  # same shared weights: only the encoding differs
        emb.feature_projection.load_state_dict(base.region_embeddings.feature_projection.state_dict())
    assert not torch.allclose(emb(feat, loc), base.region_embeddings(feat, loc), atol=1e-3)
    # The place reaches the sum at the scale of the appearance: moving the box moves the embedding
    # by about as much as changing the feature does (the originals' init: ~100 times less).
    moved = loc.clone()
    moved[..., [0, 2]] = 1 - moved[..., [0, 2]]
    place_change = (emb(feat, moved) - out).norm(dim=-1).mean()
    feature_change = (emb(torch.randn_like(feat), loc) - out).norm(dim=-1).mean()
    assert place_change > 0.3 * feature_change
    base_place = (base.region_embeddings(feat, moved) - base.region_embeddings(feat, loc)).norm(dim=-1).mean()
    assert place_change > 5 * base_place
    out.sum().backward()
    assert emb.location_projection.weight.grad.abs().sum() > 0 and emb.location_norm.weight.grad is not None


def test_fourier_box_encoding_is_sines_and_cosines_of_seven_numbers():
    emb = _model("fourier").region_embeddings
    loc = torch.tensor([[[0.1, 0.2, 0.5, 0.6, 0.16]]])
    code = emb.encode_box(loc)
    box = torch.tensor([0.1, 0.2, 0.5, 0.6, 0.4, 0.4, 0.16])
    angles = (box[:, None] * torch.pi * 2.0 ** torch.arange(6.0)).flatten()
    assert torch.allclose(code[0, 0], torch.cat([angles.sin(), angles.cos()]), atol=1e-5)


def test_bad_encoding_is_an_error_naming_the_field():
    with pytest.raises(ValueError, match="v_location_encoding"):
        tiny_config(v_location_encoding="sinusoid")
    with pytest.raises(ValueError, match="v_location_frequencies"):
        tiny_config(v_location_encoding="fourier", v_location_frequencies=0)


def test_fourier_model_saves_and_loads_with_its_encoding(tmp_path):
    model = _model("fourier")
    inputs = random_inputs(model.config)
    model.save_pretrained(tmp_path)
    loaded = ViLBertModel.from_pretrained(tmp_path).eval()
    assert loaded.config.v_location_encoding == "fourier"
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).sequence_output_v, model(**inputs).sequence_output_v)
    with pytest.raises(ValueError, match="location_projection"):  # not into the originals' encoding
        ViLBertModel.from_pretrained(tmp_path, config=tiny_config())


def test_location_gate_scales_the_normalised_place_and_learns():
    torch.manual_seed(0)
    model = ViLBertModel(tiny_config(v_location_encoding="fourier", v_location_gate=0.1)).eval()
    emb = model.region_embeddings
    inputs = random_inputs(model.config)
    feat, loc = inputs["image_feat"], inputs["image_loc"]
    appearance = emb.feature_norm(emb.feature_projection(feat))
    place = emb.location_norm(emb.location_projection(emb.encode_box(loc)))
    expected = emb.norm(appearance + 0.1 * place)
    torch.testing.assert_close(emb(feat, loc), expected)
    assert emb.location_gate.item() == pytest.approx(0.1)
    emb(feat, loc).pow(2).sum().backward()
    assert emb.location_gate.grad is not None and emb.location_gate.grad.abs() > 0
    # Without a gate the parameter does not exist (checkpoints of ungated models are unchanged).
    assert _model("fourier").region_embeddings.location_gate is None
    assert "location_gate" not in str(list(_model("fourier").state_dict()))
    # A scale, like a LayerNorm weight: exempt from weight decay, which would pull it to zero.
    no_decay = model.no_decay_parameter_names()
    assert "region_embeddings.location_gate" in no_decay
    assert "region_embeddings.location_projection.weight" not in no_decay


def test_location_gate_needs_a_place_encoding_of_its_own():
    with pytest.raises(ValueError, match="v_location_gate"):
        tiny_config(v_location_gate=0.1)  # "linear": the originals' math has no gate
    with pytest.raises(ValueError, match="v_location_gate"):
        tiny_config(v_location_encoding="uniter", v_location_gate=float("nan"))
