import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from vilbert.config import ViLBertConfig
from vilbert.convert import main as convert_main
from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks, ViLBertModel
from vilbert.tokenization import load_tokenizer

from _model_helpers import CONFIG_DIR, NUM_LABELS, original_state_dict, random_inputs, tiny_config


def _attend(q, k, v, mask, heads):
    Bn, Tq, D = q.shape
    split = lambda x: x.view(Bn, -1, heads, D // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(D // heads) + (1.0 - mask[:, None, None, :]) * -10000.0
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(Bn, Tq, D)


def original_coattention(sd, i, visual, visual_mask, text, text_mask, heads):
    """Co-attention block i computed plainly from the originals' tensors and their semantics:
    "1" is the visual input, "2" the text input; text queries (query2) read key1/value1."""
    p = f"bert.encoder.c_layer.{i}."

    def lin(name, x):
        return x @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

    def ln(name, x):
        return F.layer_norm(x, x.shape[-1:], sd[p + name + ".weight"], sd[p + name + ".bias"], 1e-12)

    text_ctx = _attend(lin("biattention.query2", text), lin("biattention.key1", visual),
                       lin("biattention.value1", visual), visual_mask, heads)
    visual_ctx = _attend(lin("biattention.query1", visual), lin("biattention.key2", text),
                         lin("biattention.value2", text), text_mask, heads)
    v = ln("biOutput.LayerNorm1", lin("biOutput.dense1", visual_ctx) + visual)
    t = ln("biOutput.LayerNorm2", lin("biOutput.dense2", text_ctx) + text)
    v = ln("v_output.LayerNorm", lin("v_output.dense", F.gelu(lin("v_intermediate.dense", v))) + v)
    t = ln("t_output.LayerNorm", lin("t_output.dense", F.gelu(lin("t_intermediate.dense", t))) + t)
    return v, t


def _outputs(out):
    return {k: v for k, v in vars(out).items() if torch.is_tensor(v)}


@pytest.mark.parametrize("layout", ["beta", "12in1"])
def test_original_checkpoint_loads_with_nothing_unmapped(tmp_path, layout):
    config = tiny_config()
    sd = original_state_dict(layout, config)
    path = tmp_path / "pytorch_model_9.bin"
    torch.save(sd, path)
    model = ViLBertForVLTasks.from_pretrained(path, config=config).eval()
    report = model.load_report
    assert report.unmapped == [] and report.missing == [] and report.mismatched == []
    assert sorted(report.ignored) == sorted(
        [k for k in sd if ".q_dense" in k] + ["cls.predictions.decoder.weight"])
    assert all(k.startswith("cls.") for k in report.unused)  # the pretraining heads: not in a task model
    assert model.config.vl_classifier == layout and model.num_labels == NUM_LABELS
    assert model.multitask_heads == (layout == "12in1") and model.config.task_specific_tokens == (layout == "12in1")

    # The co-attention mapping means what the originals meant: compare a plain computation on
    # their tensors with our block, padding on both streams.
    g = torch.Generator().manual_seed(1)
    visual = torch.randn(2, 6, config.v_hidden_size, generator=g)
    text = torch.randn(2, 5, config.hidden_size, generator=g)
    visual_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]).float()
    text_mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]).float()
    from vilbert.model import additive_mask

    for i, block in enumerate(model.vilbert.coattention_layers):
        v, t, _, _ = block(visual, additive_mask(visual_mask), text, additive_mask(text_mask))
        v_ref, t_ref = original_coattention(sd, i, visual, visual_mask, text, text_mask, config.bi_num_attention_heads)
        torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t, t_ref, atol=1e-5, rtol=1e-5)

    # The VL-classifier, plainly from the originals' tensors.
    x = torch.randn(3, config.bi_hidden_size, generator=g)
    if layout == "beta":
        def wn(p, h):
            w = sd[p + ".weight_g"] * sd[p + ".weight_v"] / sd[p + ".weight_v"].norm()
            return h @ w.T + sd[p + ".bias"]
        expected = wn("vil_prediction.main.3", F.relu(wn("vil_prediction.main.0", x)))
    else:
        h = F.gelu(x @ sd["vil_prediction.logit_fc.0.weight"].T + sd["vil_prediction.logit_fc.0.bias"])
        h = F.layer_norm(h, h.shape[-1:], sd["vil_prediction.logit_fc.2.weight"], sd["vil_prediction.logit_fc.2.bias"], 1e-12)
        expected = h @ sd["vil_prediction.logit_fc.3.weight"].T + sd["vil_prediction.logit_fc.3.bias"]
    torch.testing.assert_close(model.vil_prediction(x), expected, atol=1e-5, rtol=1e-5)

    # The whole model runs, and so does the pretraining model from the same file.
    kwargs = {"task_tokens": torch.tensor([1, 2, 3])} if layout == "12in1" else {}
    model(**random_inputs(config), **kwargs)
    pretraining = ViLBertForPretraining.from_pretrained(path, config=config)
    assert pretraining.load_report.unmapped == [] and pretraining.load_report.missing == []
    assert torch.equal(pretraining.mlm_head.decoder.weight, sd["bert.embeddings.word_embeddings.weight"])
    assert all(k.startswith(("vil_", "vision_logit", "linguisic_logit")) for k in pretraining.load_report.unused)


class _TrainingLogger:
    """Stands for 12-in-1's tbLogger in a pytorch_ckpt_*.tar: unpickling it runs code."""

    def __reduce__(self):
        return (_record_side_effect, ("the logger was rebuilt",))


SIDE_EFFECTS = []


def _record_side_effect(message):
    SIDE_EFFECTS.append(message)
    return message


@pytest.mark.parametrize("zip_format", [True, False])  # torch >= 1.6 zip files, and 2019's legacy format
def test_12in1_training_checkpoint_tar_loads_without_running_its_objects(tmp_path, zip_format):
    config = tiny_config()
    sd = {"module." + k: v for k, v in original_state_dict("12in1", config).items()}
    path = tmp_path / "pytorch_ckpt_latest.tar"
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "global_step": 10, "epoch_id": 0, "tb_logger": _TrainingLogger()}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(Exception):  # torch's safe loader refuses the logger...
        torch.load(path, weights_only=True)
    model = ViLBertForVLTasks.from_pretrained(path, config=config)  # ...our reader replaces it
    assert SIDE_EFFECTS == []
    assert model.load_report.unmapped == [] and model.load_report.missing == []
    assert torch.equal(model.vilbert.text_embeddings.task_embeddings.weight, sd["module.bert.embeddings.task_embeddings.weight"])


def test_shape_mismatch_is_one_line_naming_key_and_shapes(tmp_path):
    config = tiny_config()
    path = tmp_path / "beta.bin"
    torch.save(original_state_dict("beta", config), path)
    with pytest.raises(ValueError) as info:
        ViLBertForVLTasks.from_pretrained(path, config=config, num_labels=NUM_LABELS + 1)
    message = str(info.value)
    assert "\n" not in message and "vil_prediction.main.3" in message
    assert f"({NUM_LABELS}, 96)" in message or f"({NUM_LABELS},)" in message
    model = ViLBertForVLTasks.from_pretrained(path, config=config, num_labels=NUM_LABELS + 1, skip_mismatched=True)
    assert len(model.load_report.mismatched) == 2  # weight_v and bias; the scalar weight_g fits


def test_unknown_keys_are_reported_and_strict_fails(tmp_path):
    config = tiny_config()
    sd = original_state_dict("beta", config)
    sd["bert.encoder.c_layer.0.biattention.logit1.weight"] = torch.zeros(4, 40)
    del sd["bert.v_pooler.dense.bias"]
    path = tmp_path / "odd.bin"
    torch.save(sd, path)
    report = ViLBertForVLTasks.from_pretrained(path, config=config).load_report
    assert report.unmapped == ["bert.encoder.c_layer.0.biattention.logit1.weight"]
    assert report.missing == ["vilbert.visual_pooler.bias"]
    with pytest.raises(ValueError, match="logit1"):
        ViLBertForVLTasks.from_pretrained(path, config=config, strict=True)
    with pytest.raises(ValueError, match="carry no ViLBERT config"):
        ViLBertForVLTasks.from_pretrained(path)


@pytest.mark.parametrize("make", ["base", "pretraining", "beta", "12in1"])
def test_save_pretrained_round_trip_is_exact(tmp_path, make):
    torch.manual_seed(0)
    if make == "base":
        model = ViLBertModel(tiny_config())
    elif make == "pretraining":
        model = ViLBertForPretraining(tiny_config(visual_target=1))
    else:
        model = ViLBertForVLTasks(tiny_config(vl_classifier=make, task_specific_tokens=make == "12in1"),
                                  num_labels=5, multitask_heads=make == "12in1")
    with torch.no_grad():  # move every parameter off its init value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    inputs = random_inputs(model.config, batch=4)
    if model.config.task_specific_tokens:
        inputs["task_tokens"] = torch.tensor([0, 1, 2, 3])
    expected = model(**inputs)
    model.save_pretrained(tmp_path / "saved")

    loaded = type(model).from_pretrained(tmp_path / "saved").eval()
    assert loaded.config == model.config
    assert loaded.load_report.missing == [] and loaded.load_report.unmapped == [] and loaded.load_report.unused == []
    got = loaded(**inputs)
    if make == "base":
        pairs = [(getattr(expected, k), getattr(got, k)) for k in ("sequence_output_t", "sequence_output_v",
                                                                    "pooled_output_t", "pooled_output_v")]
    else:
        assert _outputs(expected).keys() == _outputs(got).keys()
        pairs = [(v, _outputs(got)[k]) for k, v in _outputs(expected).items()]
    assert all(torch.equal(a, b) for a, b in pairs)
    if make == "pretraining":
        with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f:
            assert "mlm_head.decoder.weight" not in f.keys()
        assert loaded.mlm_head.decoder.weight is loaded.vilbert.text_embeddings.word_embeddings.weight


def test_our_directory_loads_across_classes(tmp_path):
    torch.manual_seed(0)
    pretrained = ViLBertForPretraining(tiny_config())
    pretrained.save_pretrained(tmp_path / "pre")
    tasks = ViLBertForVLTasks.from_pretrained(tmp_path / "pre", num_labels=4)
    assert tasks.load_report.missing and all(n.startswith(("vil_", "vision_", "linguisic_")) for n in tasks.load_report.missing)
    assert torch.equal(tasks.vilbert.text_pooler.weight, pretrained.vilbert.text_pooler.weight)
    base = ViLBertModel.from_pretrained(tmp_path / "pre")
    assert base.load_report.missing == [] and torch.equal(base.visual_pooler.weight, pretrained.vilbert.visual_pooler.weight)
    base.save_pretrained(tmp_path / "base")
    again = ViLBertForPretraining.from_pretrained(tmp_path / "base")
    assert torch.equal(again.vilbert.visual_layers[0].attention.key.weight, pretrained.vilbert.visual_layers[0].attention.key.weight)


def test_convert_cli_writes_a_loadable_directory(tmp_path):
    config = tiny_config()
    path = tmp_path / "beta.bin"
    torch.save(original_state_dict("beta", config), path)
    assert convert_main([str(path), str(tmp_path / "out"), "--config_file", str(CONFIG_DIR / "vilbert_tiny.json")]) == 0
    converted = ViLBertForVLTasks.from_pretrained(tmp_path / "out").eval()
    direct = ViLBertForVLTasks.from_pretrained(path, config=converted.config).eval()
    inputs = random_inputs(config)
    assert torch.equal(converted(**inputs).vil_prediction, direct(**inputs).vil_prediction)


# Hugging Face BERT checkpoints


def test_minilm_text_layers_match_transformers(minilm_dir):
    """Parity with an independent implementation: embeddings and the text layers before the first
    co-attention block, loaded from the offline MiniLM, against transformers.BertModel."""
    from transformers import BertModel

    config = ViLBertConfig.from_json_file(CONFIG_DIR / "demo_minilm.json")
    ours = ViLBertModel.from_pretrained(minilm_dir, config=config).eval()
    assert ours.load_report.unmapped == []
    reference = BertModel.from_pretrained(str(minilm_dir)).eval()
    batch = load_tokenizer(minilm_dir)(["a small red circle to the left of a blue square", "two green triangles"],
                                       padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch, output_hidden_states=True).hidden_states
        embeddings = ours.text_embeddings(batch["input_ids"], batch["token_type_ids"])
        prefix = ours.encode_text_prefix(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(embeddings, hidden[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix[real], hidden[config.t_biattention_id[0]][real], atol=1e-5, rtol=0)


def test_huggingface_pretraining_checkpoint_fills_text_and_mlm_head(tmp_path):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = tiny_config()
    hf = BertForPreTraining(BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                       num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                                       intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = ViLBertForPretraining.from_pretrained(tmp_path / "hf", config=config).eval()
    assert ours.load_report.unmapped == []
    assert "cls.predictions.transform.dense.weight" in ours.load_report.loaded
    assert all(n.startswith(("vilbert.region", "vilbert.visual", "vilbert.coattention", "vilbert.text_pooler",
                             "region_head", "alignment_head")) for n in ours.load_report.missing)
    ids = torch.randint(1, config.vocab_size, (2, 6))
    with torch.no_grad():
        hidden = hf.bert(ids, output_hidden_states=True).hidden_states
        prefix = ours.vilbert.encode_text_prefix(ids)
        torch.testing.assert_close(prefix, hidden[config.t_biattention_id[0]], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.mlm_head(prefix), hf.cls.predictions(prefix), atol=1e-5, rtol=0)

    # A TF-era BertModel file: no "bert." prefix, LayerNorm gamma/beta, pytorch_model.bin.
    old = {}
    for key, value in hf.bert.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old[key] = value
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "pytorch_model.bin")
    from_old = ViLBertModel.from_pretrained(tmp_path / "old", config=config)
    assert from_old.load_report.unmapped == []
    assert torch.equal(from_old.text_layers[1].feed_forward.down.norm.weight,
                       hf.bert.encoder.layer[1].output.LayerNorm.weight)


def test_tokenizer_loads_offline_and_fails_clearly(minilm_dir, tmp_path):
    tokenizer = load_tokenizer(minilm_dir)
    assert tokenizer.is_fast  # (transformers 5 spells BertTokenizerFast as BertTokenizer)
    assert tokenizer("A red square.")["input_ids"][0] == tokenizer.cls_token_id
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(RuntimeError, match="no-such-bert-model"):
        load_tokenizer("no-such-bert-model")
