import json
import math

import pytest
import torch
import torch.nn.functional as F

from vilbert.config import ViLBertConfig
from vilbert.model import (
    CoAttentionBlock,
    ViLBertForPretraining,
    ViLBertForVLTasks,
    ViLBertModel,
    WeightNormLinear,
)

from _model_helpers import CONFIG_DIR, random_inputs, tiny_config


# Config


def test_shipped_configs_load_and_base_matches_reference():
    for path in sorted(CONFIG_DIR.glob("*.json")):
        ViLBertConfig.from_json_file(path)
    c = ViLBertConfig.from_json_file(CONFIG_DIR / "bert_base_6layer_6conect.json")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 3072)
    assert (c.v_hidden_size, c.v_num_hidden_layers, c.v_num_attention_heads, c.v_intermediate_size) == (1024, 6, 8, 1024)
    assert (c.bi_hidden_size, c.bi_num_attention_heads, c.v_target_size, c.v_feature_size) == (1024, 8, 1601, 2048)
    assert c.v_biattention_id == [0, 1, 2, 3, 4, 5] and c.t_biattention_id == [6, 7, 8, 9, 10, 11]
    c8 = ViLBertConfig.from_json_file(CONFIG_DIR / "bert_base_8layer_8conect.json")
    assert c8.v_biattention_id == list(range(8)) and c8.t_biattention_id == list(range(4, 12))
    large = ViLBertConfig.from_json_file(CONFIG_DIR / "bert_large_6layer_6conect.json")
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    assert large.t_biattention_id == list(range(18, 24))
    demo = ViLBertConfig.from_json_file(CONFIG_DIR / "demo_minilm.json")
    assert (demo.hidden_size, demo.num_hidden_layers, demo.num_attention_heads, demo.intermediate_size) == (384, 6, 12, 1536)
    assert demo.v_target_size == 49


def test_config_round_trip_and_errors(tmp_path):
    c = tiny_config(visual_target=1, vl_classifier="12in1")
    c.to_json_file(tmp_path / "c.json")
    assert ViLBertConfig.from_json_file(tmp_path / "c.json") == c

    (tmp_path / "bad.json").write_text(json.dumps({"hidden_size": 64, "pooling_methd": "mul"}))
    with pytest.raises(ValueError, match=r"bad\.json.*'pooling_methd'"):
        ViLBertConfig.from_json_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'hidden_size'"):
        ViLBertConfig.from_dict({"hidden_size": "768"})
    with pytest.raises(ValueError, match="'v_biattention_id'"):
        ViLBertConfig.from_dict({"v_biattention_id": [0, 1]})
    with pytest.raises(ValueError, match="'fixed_t_layer'"):
        ViLBertConfig.from_dict({"fixed_t_layer": 7})
    # beta's predict_feature means feature regression.
    assert ViLBertConfig.from_dict({"predict_feature": True}).visual_target == 1


# Attention and co-attention, computed plainly


def _plain_attention(attention, queries, keys, mask):
    """Multi-head attention with matmul + softmax from the module's weights; mask (B, Tk) 1/0."""
    B, Tq, _ = queries.shape
    H, hs = attention.num_heads, attention.head_size

    def heads(x):
        return x.view(B, -1, H, hs).transpose(1, 2)

    q = heads(queries @ attention.query.weight.T + attention.query.bias)
    k = heads(keys @ attention.key.weight.T + attention.key.bias)
    v = heads(keys @ attention.value.weight.T + attention.value.bias)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs) + (1.0 - mask[:, None, None, :].float()) * -10000.0
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, Tq, H * hs)


def _plain_add_norm(module, x, residual):
    return F.layer_norm(residual + x @ module.dense.weight.T + module.dense.bias, residual.shape[-1:],
                        module.norm.weight, module.norm.bias, module.norm.eps)


def _plain_ffn(ff, x):
    return _plain_add_norm(ff.down, F.gelu(x @ ff.up.weight.T + ff.up.bias), x)


def plain_coattention(block, visual, visual_mask, text, text_mask):
    """REFERENCE 1: visual queries over text keys/values and text queries over regions, each then
    Linear + residual + LayerNorm and its stream's FFN."""
    visual_ctx = _plain_attention(block.visual_attention, visual, text, text_mask)
    text_ctx = _plain_attention(block.text_attention, text, visual, visual_mask)
    v = _plain_ffn(block.visual_feed_forward, _plain_add_norm(block.visual_attention_output, visual_ctx, visual))
    t = _plain_ffn(block.text_feed_forward, _plain_add_norm(block.text_attention_output, text_ctx, text))
    return v, t


def _block_inputs(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(2, 6, config.v_hidden_size, generator=g)
    text = torch.randn(2, 5, config.hidden_size, generator=g)
    visual_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    text_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return visual, visual_mask, text, text_mask


def _randomize(module, seed=0):
    """Non-trivial weights everywhere (LayerNorm too), so a swapped tensor cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm_scale = ".norm." in f".{name}" and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if is_norm_scale else 0.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coattention_block_matches_plain_computation(dtype):
    torch.manual_seed(0)
    config = tiny_config()
    block = CoAttentionBlock(config).eval()
    _randomize(block)
    block.to(dtype)
    visual, visual_mask, text, text_mask = _block_inputs(config)
    visual, text = visual.to(dtype), text.to(dtype)
    from vilbert.model import additive_mask

    # fp32 allows its own rounding (outputs are O(1): a few ulp); fp64 leaves only logic errors.
    rtol = 1e-6 if dtype == torch.float32 else 0.0
    for output_attentions in (False, True):  # SDPA path and the explicit path
        v, t, v2t, t2v = block(visual, additive_mask(visual_mask), text, additive_mask(text_mask), output_attentions)
        v_ref, t_ref = plain_coattention(block, visual, visual_mask, text, text_mask)
        torch.testing.assert_close(v, v_ref, atol=1e-6, rtol=rtol)
        torch.testing.assert_close(t, t_ref, atol=1e-6, rtol=rtol)
    assert v2t.shape == (2, config.bi_num_attention_heads, 6, 5)
    assert t2v.shape == (2, config.bi_num_attention_heads, 5, 6)
    assert v2t[1, :, :, 3:].max() < 1e-4  # padded text is not attended to
    assert t2v[0, :, :, 4:].max() < 1e-4  # nor padded regions


def test_padding_changes_no_unpadded_output():
    torch.manual_seed(0)
    config = tiny_config()
    block = CoAttentionBlock(config).eval()
    visual, visual_mask, text, text_mask = _block_inputs(config)
    from vilbert.model import additive_mask

    v1, t1, _, _ = block(visual, additive_mask(visual_mask), text, additive_mask(text_mask))
    visual2, text2 = visual.clone(), text.clone()
    visual2[visual_mask == 0] = 50.0
    text2[text_mask == 0] = -30.0
    v2, t2, _, _ = block(visual2, additive_mask(visual_mask), text2, additive_mask(text_mask))
    torch.testing.assert_close(v1[visual_mask == 1], v2[visual_mask == 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(t1[text_mask == 1], t2[text_mask == 1], atol=1e-6, rtol=0)
    assert not torch.allclose(v1[visual_mask == 0], v2[visual_mask == 0])  # the change did reach the model

    # The same through the whole model: other token ids and features at padded positions.
    model = ViLBertModel(config).eval()
    inputs = random_inputs(config)
    out1 = model(**inputs)
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["input_ids"][inputs["attention_mask"] == 0] = 7
    changed["image_feat"][inputs["image_attention_mask"] == 0] = 3.0
    out2 = model(**changed)
    real_t, real_v = inputs["attention_mask"] == 1, inputs["image_attention_mask"] == 1
    torch.testing.assert_close(out1.sequence_output_t[real_t], out2.sequence_output_t[real_t], atol=1e-6, rtol=0)
    torch.testing.assert_close(out1.sequence_output_v[real_v], out2.sequence_output_v[real_v], atol=1e-6, rtol=0)
    torch.testing.assert_close(out1.pooled_output_t, out2.pooled_output_t, atol=1e-6, rtol=0)
    torch.testing.assert_close(out1.pooled_output_v, out2.pooled_output_v, atol=1e-6, rtol=0)


# The two-stream model


def test_layer_schedule_follows_reference():
    # tiny: 4 text layers, 3 visual layers, co-attention pairs (v 1, t 2) and (v 2, t 3).
    config = tiny_config()
    model = ViLBertModel(config).eval()
    order = []
    for name, layers in [("t", model.text_layers), ("v", model.visual_layers), ("c", model.coattention_layers)]:
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, tag=f"{name}{i}": order.append(tag))
    model(**random_inputs(config))
    # Text 0-1 alone (image-independent) -> v0 -> co0 -> v1 | t2 -> co1 -> the remaining v2 | t3.
    assert order == ["t0", "t1", "v0", "c0", "v1", "t2", "c1", "v2", "t3"]


def test_outputs_and_attention_maps():
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertModel(config).eval()
    inputs = random_inputs(config)
    out = model(**inputs)
    assert out.sequence_output_t.shape == (3, 7, config.hidden_size)
    assert out.sequence_output_v.shape == (3, 5, config.v_hidden_size)
    assert out.pooled_output_t.shape == out.pooled_output_v.shape == (3, config.bi_hidden_size)
    assert (out.pooled_output_t >= 0).all() and (out.pooled_output_v >= 0).all()  # ReLU poolers
    assert out.attentions is None

    with_maps = model(**inputs, output_attentions=True)
    torch.testing.assert_close(with_maps.sequence_output_t, out.sequence_output_t, atol=1e-6, rtol=0)
    maps = with_maps.attentions
    assert [len(maps[k]) for k in ("text", "visual", "text_to_visual", "visual_to_text")] == [4, 3, 2, 2]
    assert maps["text"][0].shape == (3, config.num_attention_heads, 7, 7)
    assert maps["visual"][0].shape == (3, config.v_num_attention_heads, 5, 5)
    assert maps["text_to_visual"][0].shape == (3, config.bi_num_attention_heads, 7, 5)
    assert maps["visual_to_text"][0].shape == (3, config.bi_num_attention_heads, 5, 7)
    torch.testing.assert_close(maps["text"][0].sum(-1), torch.ones(3, config.num_attention_heads, 7))


def test_text_prefix_matches_full_forward_and_broadcasts():
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertModel(config).eval()
    inputs = random_inputs(config)
    full = model(**inputs)
    prefix = model.encode_text_prefix(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert prefix.shape == (3, 7, config.hidden_size)
    cached = model(**inputs, text_prefix=prefix)
    assert torch.equal(cached.sequence_output_t, full.sequence_output_t)
    # One caption against every image (retrieval): a batch-1 prefix is shared.
    one = {k: inputs[k][:1] for k in ("input_ids", "attention_mask")}
    shared = model(one["input_ids"], inputs["image_feat"], inputs["image_loc"], attention_mask=one["attention_mask"],
                   image_attention_mask=inputs["image_attention_mask"],
                   text_prefix=model.encode_text_prefix(one["input_ids"], attention_mask=one["attention_mask"]))
    repeated = model(one["input_ids"].expand(3, -1), inputs["image_feat"], inputs["image_loc"],
                     attention_mask=one["attention_mask"].expand(3, -1),
                     image_attention_mask=inputs["image_attention_mask"])
    torch.testing.assert_close(shared.pooled_output_t, repeated.pooled_output_t, atol=1e-6, rtol=0)


def test_task_tokens_extend_the_text():
    torch.manual_seed(0)
    config = tiny_config(task_specific_tokens=True)
    model = ViLBertForVLTasks(config, num_labels=4).eval()
    inputs = random_inputs(config)
    out = model(**inputs, task_tokens=torch.tensor([1, 1, 2]))
    assert out.linguisic_logit.shape == (3, 8, 1)  # [CLS] task-token tokens...
    other = model(**inputs, task_tokens=torch.tensor([[3], [1], [2]]))
    assert not torch.allclose(other.vil_prediction[0], out.vil_prediction[0])
    torch.testing.assert_close(other.vil_prediction[1:], out.vil_prediction[1:])
    with pytest.raises(ValueError, match="task_tokens"):
        model(**inputs)


def test_fixed_layers_get_no_gradient():
    config = tiny_config(fixed_t_layer=1, fixed_v_layer=1)
    model = ViLBertModel(config)
    out = model(**random_inputs(config))
    (out.pooled_output_t.sum() + out.pooled_output_v.sum()).backward()
    assert all(p.grad is None for p in model.text_layers[0].parameters())
    assert all(p.grad is None for p in model.visual_layers[0].parameters())
    assert all(p.grad is not None for p in model.text_layers[1].parameters())


# Heads and losses


def _pretraining_labels(config, inputs, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = inputs["input_ids"].shape
    R = inputs["image_feat"].shape[1]
    masked_lm_labels = torch.full((B, T), -1)
    masked_lm_labels[:, 1] = torch.randint(0, config.vocab_size, (B,), generator=g)
    masked_lm_labels[2, 3] = 5
    image_label = torch.zeros(B, R, dtype=torch.long)
    image_label[:, 0] = 1  # the global region: must never count as a target
    image_label[0, 2] = image_label[1, 1] = image_label[2, 3] = 1
    if config.visual_target == 0:
        image_target = torch.softmax(torch.randn(B, R, config.v_target_size, generator=g), -1)
    else:
        image_target = torch.randn(B, R, config.v_feature_size, generator=g)
    return dict(masked_lm_labels=masked_lm_labels, image_label=image_label, image_target=image_target,
                next_sentence_label=torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("visual_target", [0, 1])
def test_pretraining_losses_match_full_head_computation(visual_target):
    torch.manual_seed(0)
    config = tiny_config(visual_target=visual_target)
    model = ViLBertForPretraining(config).eval()
    inputs = random_inputs(config)
    labels = _pretraining_labels(config, inputs)
    full = model(**inputs)  # no labels: every position
    out = model(**inputs, **labels, img_weight=0.5)

    lm = labels["masked_lm_labels"]
    assert out.prediction_scores_t.shape == (4, config.vocab_size)  # only the 4 targets were decoded
    torch.testing.assert_close(out.prediction_scores_t, full.prediction_scores_t[lm >= 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.masked_lm_loss, F.cross_entropy(full.prediction_scores_t.reshape(-1, config.vocab_size),
                                                                   lm.reshape(-1), ignore_index=-1))
    targeted = labels["image_label"] == 1
    targeted[:, 0] = False
    assert out.prediction_scores_v.shape == (3, config.region_target_size)
    pred, target = full.prediction_scores_v[targeted], labels["image_target"][targeted]
    if visual_target == 0:
        expected = (target * (target.log() - F.log_softmax(pred, -1))).sum() / 3
        assert full.prediction_scores_v.shape == (3, 5, config.v_target_size)
    else:
        expected = F.mse_loss(pred, target)
        assert full.prediction_scores_v.shape == (3, 5, config.v_feature_size)
    torch.testing.assert_close(out.masked_img_loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.next_sentence_loss, F.cross_entropy(full.seq_relationship_score, labels["next_sentence_label"]))
    torch.testing.assert_close(out.loss, out.masked_lm_loss + 0.5 * out.masked_img_loss + out.next_sentence_loss)


def test_pretraining_without_targets_gives_zero_not_nan():
    config = tiny_config()
    model = ViLBertForPretraining(config)
    inputs = random_inputs(config)
    labels = _pretraining_labels(config, inputs)
    labels["masked_lm_labels"].fill_(-1)
    labels["image_label"].zero_()
    out = model(**inputs, **labels)
    assert out.masked_lm_loss == 0 and out.masked_img_loss == 0 and torch.isfinite(out.loss)


def _assert_every_parameter_has_gradient(model):
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("visual_target", [0, 1])
def test_every_pretraining_parameter_gets_gradient(visual_target):
    torch.manual_seed(0)
    config = tiny_config(visual_target=visual_target)
    model = ViLBertForPretraining(config)
    inputs = random_inputs(config)
    model(**inputs, **_pretraining_labels(config, inputs)).loss.backward()
    _assert_every_parameter_has_gradient(model)
    assert model.mlm_head.decoder.weight is model.vilbert.text_embeddings.word_embeddings.weight  # tied


@pytest.mark.parametrize("variant", ["beta", "12in1"])
def test_every_task_head_parameter_gets_gradient(variant):
    torch.manual_seed(0)
    config = tiny_config(vl_classifier=variant, task_specific_tokens=True)
    model = ViLBertForVLTasks(config, num_labels=5, multitask_heads=True)
    inputs = random_inputs(config, batch=4)
    out = model(**inputs, task_tokens=torch.tensor([0, 1, 2, 3]))
    assert out.vil_prediction.shape == (4, 5) and out.vil_logit.shape == (4, 1)
    assert out.vision_logit.shape == (4, 5, 1) and out.linguisic_logit.shape == (4, 8, 1)
    assert out.vil_prediction_gqa.shape == (4, 1533) and out.vil_binary_prediction.shape == (2, 2)
    assert out.vil_tri_prediction.shape == (4, 3)
    real = inputs["image_attention_mask"].bool()
    assert (out.vision_logit[~real] < -1000).all()  # padded regions can never be chosen
    loss = sum(v[real].sum() if k == "vision_logit" else v.sum()
               for k, v in vars(out).items() if torch.is_tensor(v))
    loss.backward()
    _assert_every_parameter_has_gradient(model)


def test_heads_argument_limits_the_work():
    config = tiny_config()
    model = ViLBertForVLTasks(config, num_labels=5).eval()
    out = model(**random_inputs(config), heads={"vil_logit"})
    assert out.vil_logit is not None and out.vil_prediction is None and out.vision_logit is None
    with pytest.raises(ValueError, match="vil_prediction_gqa"):
        model(**random_inputs(config), heads={"vil_prediction_gqa"})


def test_weight_norm_linear_matches_torch_weight_norm():
    torch.manual_seed(0)
    ours = WeightNormLinear(6, 4)
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 4), dim=None)
    with torch.no_grad():
        ours.weight_v.copy_(torch.randn(4, 6))
        ours.weight_g.fill_(2.5)
        ours.bias.copy_(torch.randn(4))
        reference.parametrizations.weight.original0.fill_(2.5)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
        reference.bias.copy_(ours.bias)
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), reference(x))


def test_init_follows_reference():
    torch.manual_seed(0)
    config = tiny_config(initializer_range=0.02)
    model = ViLBertForVLTasks(config, num_labels=5)
    weight = model.vilbert.coattention_layers[0].text_attention.query.weight
    assert abs(weight.std().item() - 0.02) < 0.004
    assert torch.equal(model.vilbert.coattention_layers[0].text_attention.query.bias, torch.zeros_like(weight[:, 0]))
    norm = model.vilbert.visual_layers[0].feed_forward.down.norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_parameter_name_groups():
    model = ViLBertForPretraining(tiny_config())
    bert = model.bert_parameter_names()
    assert "vilbert.text_layers.0.attention.query.weight" in bert
    assert "vilbert.text_embeddings.word_embeddings.weight" in bert
    assert not any(n.startswith(("vilbert.visual", "vilbert.coattention", "mlm_head")) for n in bert)
    no_decay = model.no_decay_parameter_names()
    assert "vilbert.text_layers.0.attention_output.norm.weight" in no_decay
    assert "mlm_head.bias" in no_decay and "vilbert.text_layers.0.attention.query.bias" in no_decay
    assert "vilbert.text_layers.0.attention.query.weight" not in no_decay


def test_bf16_autocast_runs_and_stays_close():
    # The GPU runs under autocast; CPU bf16 autocast exercises the same dtype handling (masks cast
    # to the queries' dtype for SDPA, losses in fp32).
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForPretraining(config)
    inputs = random_inputs(config)
    labels = _pretraining_labels(config, inputs)
    reference = model(**inputs, **labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, **labels)
        tasks = ViLBertForVLTasks(config, num_labels=4)(**inputs)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, reference.loss, atol=0.05, rtol=0.02)
    assert torch.isfinite(tasks.vil_prediction).all()


@pytest.mark.parametrize("task_tokens", [False, True])
def test_packed_text_training_equals_padded(monkeypatch, task_tokens):
    # Training on a CPU runs the text stream on its real tokens only (TokenPacking); every output
    # and gradient at real positions must equal the padded computation.
    torch.manual_seed(0)
    config = tiny_config(task_specific_tokens=task_tokens)
    model = ViLBertForVLTasks(config, num_labels=5, dropout_prob=0.0)
    model.vil_prediction.dropout.p = 0.0
    inputs = random_inputs(config, batch=4, tokens=9, regions=6)
    inputs["attention_mask"][2, 3:] = 0
    inputs["input_ids"][2, 3:] = 0
    if task_tokens:
        inputs["task_tokens"] = torch.tensor([1, 2, 3, 4])
    real = model.vilbert._real_tokens(inputs["attention_mask"], inputs["input_ids"]).bool()
    model.train()

    def run():
        model.zero_grad()
        out = model(**inputs)
        loss = out.vil_prediction.sum() + out.vil_logit.sum() + out.vision_logit.masked_fill(out.vision_logit < -1000, 0).sum() \
            + out.linguisic_logit[real].sum()
        loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    original = type(model.vilbert)._text_packing
    monkeypatch.setattr(type(model.vilbert), "_text_packing", lambda self, r: calls.append(1) or original(self, r))
    packed, packed_grads = run()
    assert calls and model.vilbert._text_packing(real.long()) is not None  # the packed path ran
    monkeypatch.setattr(type(model.vilbert), "_text_packing", lambda self, r: None)
    padded, padded_grads = run()
    for name in ("vil_prediction", "vil_logit", "vision_logit"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed.linguisic_logit[real], padded.linguisic_logit[real], rtol=1e-5, atol=1e-6)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_no_packing_in_evaluation_or_without_padding():
    config = tiny_config()
    model = ViLBertModel(config)
    inputs = random_inputs(config, batch=2, tokens=5, regions=3)
    real = inputs["attention_mask"]
    model.train()
    assert model._text_packing(real) is not None
    assert model._text_packing(torch.ones_like(real)) is None  # nothing to pack
    model.eval()
    assert model._text_packing(real) is None


def test_cpu_bf16_attention_is_spelled_out_and_matches_fp32():
    # On a CPU in bf16, Attention computes softmax(QK^T + mask) V itself (SDPA's CPU kernel is
    # 4-6x slower there); it must agree with the fp32 SDPA path within bf16 rounding and keep
    # padding keys out.
    from vilbert.model import Attention, additive_mask

    torch.manual_seed(0)
    attention = Attention(32, 24, 32, 4, dropout=0.0)
    queries, keys = torch.randn(3, 5, 32), torch.randn(3, 7, 24)
    real = torch.ones(3, 7)
    real[0, 4:] = 0
    mask = additive_mask(real)
    reference, _ = attention(queries, keys, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, probs = attention(queries, keys, mask)
    assert low.dtype == torch.bfloat16 and probs is None
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.02)
    keys_changed = keys.clone()
    keys_changed[0, 4:] = 100.0  # padding keys must not matter
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again, _ = attention(queries, keys_changed, mask)
    torch.testing.assert_close(again[0], low[0])


@pytest.mark.parametrize("training", [False, True])
def test_pooled_heads_skip_the_last_layers_rows_and_give_the_same_outputs(training):
    # VQA / VCR / retrieval read only the pooled vectors: the last text and visual layers then
    # compute position 0 alone. The pooled heads must not change (nor their gradients).
    torch.manual_seed(0)
    config = tiny_config()
    model = ViLBertForVLTasks(config, num_labels=5, dropout_prob=0.0)
    model.vil_prediction.dropout.p = 0.0
    model.train(training)
    inputs = random_inputs(config, batch=4, tokens=9, regions=6)
    inputs["attention_mask"][2, 3:] = 0

    def run(heads):
        model.zero_grad()
        out = model(**inputs, heads=heads)
        (out.vil_prediction.sum() + out.vil_logit.sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    pooled, pooled_grads = run({"vil_prediction", "vil_logit"})
    full, full_grads = run({"vil_prediction", "vil_logit", "vision_logit", "linguisic_logit"})
    torch.testing.assert_close(pooled.vil_prediction, full.vil_prediction, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled.vil_logit, full.vil_logit, rtol=1e-5, atol=1e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(pooled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    base = model.vilbert(**inputs, pooled_only_t=True, pooled_only_v=True)
    assert base.sequence_output_t.shape[1] == 1 and base.sequence_output_v.shape[1] == 1


@pytest.mark.parametrize("task_tokens", [False, True])
def test_text_prefix_cache_serves_frozen_prefix(task_tokens):
    # With the prefix frozen and without dropout, CPU training reads each row's prefix from the
    # cache after its first batch: outputs and gradients as without the cache, a changed text is a
    # miss, and the second pass over the same rows computes no prefix at all.
    from vilbert.training.optim import freeze_text_layers

    torch.manual_seed(0)
    config = tiny_config(task_specific_tokens=task_tokens)
    model = ViLBertForVLTasks(config, num_labels=5, dropout_prob=0.0)
    model.vil_prediction.dropout.p = 0.0
    freeze_text_layers(model, config.t_biattention_id[0] - 1)
    inputs = random_inputs(config, batch=4, tokens=9, regions=6)
    inputs["input_ids"][3] = inputs["input_ids"][1]  # a repeated row is computed once
    inputs["attention_mask"][2, 4:] = 0
    inputs["input_ids"][2, 4:] = 0
    if task_tokens:
        inputs["task_tokens"] = torch.tensor([1, 2, 3, 2])
    model.train()

    def run(**extra):
        model.zero_grad()
        out = model(**{**inputs, **extra})
        (out.vil_prediction.sum() + out.vil_logit.sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = run()
    assert model.vilbert.cache_text_prefix()
    cache = model.vilbert.prefix_cache
    first, first_grads = run()
    assert (cache.hits, cache.misses, len(cache.rows)) == (1, 3, 3)
    calls = []
    model.vilbert.text_layers[0].register_forward_hook(lambda *args: calls.append(1))
    second, second_grads = run()
    assert not calls and (cache.hits, cache.misses) == (5, 3)  # every row from the cache
    torch.testing.assert_close(second.vil_prediction, first.vil_prediction, rtol=0, atol=0)
    for out, grads in ((first, first_grads), (second, second_grads)):
        for name in ("vil_prediction", "vil_logit"):
            torch.testing.assert_close(getattr(out, name), getattr(plain, name), rtol=1e-5, atol=1e-6)
        assert grads.keys() == plain_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    changed = inputs["input_ids"].clone()
    changed[0, 2] += 1
    run(input_ids=changed)
    assert calls and cache.misses == 4 and len(cache.rows) == 4
    calls.clear()
    model.eval()  # evaluation reads the cache too; the pooled and per-region heads are unchanged
    with torch.no_grad():
        cached = model(**inputs)
        model.vilbert.prefix_cache = None
        computed = model(**inputs)
    assert not calls[:-1] and len(calls) == 1 and cache.misses == 4  # only the run without the cache computed it
    for name in ("vil_prediction", "vil_logit", "vision_logit"):
        torch.testing.assert_close(getattr(cached, name), getattr(computed, name), rtol=1e-5, atol=1e-6)


def test_text_prefix_cache_only_where_the_prefix_is_constant():
    from vilbert.training.optim import freeze_text_layers

    model = ViLBertForVLTasks(tiny_config(), num_labels=5)
    assert not model.vilbert.cache_text_prefix()  # trainable prefix
    freeze_text_layers(model, model.config.t_biattention_id[0] - 2)
    assert not model.vilbert.cache_text_prefix()  # its last layer still trains
    freeze_text_layers(model, model.config.t_biattention_id[0] - 1)
    assert model.vilbert.cache_text_prefix() and not model.vilbert.cache_text_prefix(max_bytes=0)
    dropout = ViLBertForVLTasks(tiny_config(hidden_dropout_prob=0.1), num_labels=5)
    freeze_text_layers(dropout, dropout.config.t_biattention_id[0] - 1)
    assert not dropout.vilbert.cache_text_prefix()
    # A full cache keeps what it holds and computes the rest.
    from vilbert.model import TextPrefixCache

    cache = TextPrefixCache(max_bytes=100)
    cache.store({b"a": torch.zeros(5, 4), b"b": torch.zeros(2, 4)})
    assert list(cache.rows) == [b"a"] and cache.bytes == 80
