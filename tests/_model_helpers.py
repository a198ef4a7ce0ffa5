"""Tiny configs, random inputs and hand-built original checkpoints shared by the model, conversion
and task-token tests."""

from pathlib import Path

import torch

from vilbert.config import ViLBertConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
NUM_LABELS = 6  # VQA answers of the hand-built original checkpoints


def tiny_config(**overrides) -> ViLBertConfig:
    """config/vilbert_tiny.json with dropout off, so outputs are deterministic."""
    config = ViLBertConfig.from_json_file(CONFIG_DIR / "vilbert_tiny.json")
    values = config.to_dict()
    values.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  v_hidden_dropout_prob=0.0, v_attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return ViLBertConfig.from_dict(values)


def random_inputs(config: ViLBertConfig, batch=3, tokens=7, regions=5, seed=0, pad=True):
    """input_ids, image_feat, image_loc, attention_mask, image_attention_mask; with padding in
    both streams (text of row 0 ends early, row 1 has fewer regions) when pad."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.vocab_size, (batch, tokens), generator=g)
    image_feat = torch.randn(batch, regions, config.v_feature_size, generator=g)
    image_loc = torch.rand(batch, regions, 5, generator=g)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    image_attention_mask = torch.ones(batch, regions, dtype=torch.long)
    if pad:
        attention_mask[0, tokens - 2:] = 0
        input_ids[0, tokens - 2:] = 0
        image_attention_mask[1, regions - 2:] = 0
    return dict(input_ids=input_ids, image_feat=image_feat, image_loc=image_loc,
                attention_mask=attention_mask, image_attention_mask=image_attention_mask)


def original_state_dict(layout: str, config: ViLBertConfig, seed: int = 0, num_labels: int = NUM_LABELS):
    """A state dict with the exact key names and shapes of REFERENCE 3 at the tiny config's sizes,
    written out here by hand (not by our code): layout "beta" (weight-norm VQA head) or "12in1"
    (GeLU+LayerNorm heads, extra heads, task tokens); num_labels: the VQA classifier's answers."""
    g = torch.Generator().manual_seed(seed)
    H, V, B = config.hidden_size, config.v_hidden_size, config.bi_hidden_size
    sd = {}

    def put(name, *shape):
        sd[name] = torch.randn(*shape, generator=g) * 0.2

    def linear(name, out_size, in_size):
        put(name + ".weight", out_size, in_size)
        put(name + ".bias", out_size)

    def layer_norm(name, size):
        sd[name + ".weight"] = 1.0 + torch.randn(size, generator=g) * 0.1
        put(name + ".bias", size)

    put("bert.embeddings.word_embeddings.weight", config.vocab_size, H)
    put("bert.embeddings.position_embeddings.weight", config.max_position_embeddings, H)
    put("bert.embeddings.token_type_embeddings.weight", config.type_vocab_size, H)
    layer_norm("bert.embeddings.LayerNorm", H)
    if layout == "12in1":
        put("bert.embeddings.task_embeddings.weight", 20, H)
    linear("bert.v_embeddings.image_embeddings", V, config.v_feature_size)
    linear("bert.v_embeddings.image_location_embeddings", V, 5)
    layer_norm("bert.v_embeddings.LayerNorm", V)
    for stack, count, size, inner in [("layer", config.num_hidden_layers, H, config.intermediate_size),
                                      ("v_layer", config.v_num_hidden_layers, V, config.v_intermediate_size)]:
        for i in range(count):
            p = f"bert.encoder.{stack}.{i}."
            linear(p + "attention.self.query", size, size)
            linear(p + "attention.self.key", size, size)
            linear(p + "attention.self.value", size, size)
            linear(p + "attention.output.dense", size, size)
            layer_norm(p + "attention.output.LayerNorm", size)
            linear(p + "intermediate.dense", inner, size)
            linear(p + "output.dense", size, inner)
            layer_norm(p + "output.LayerNorm", size)
    for i in range(len(config.v_biattention_id)):
        p = f"bert.encoder.c_layer.{i}."
        for stream, size in (("1", V), ("2", H)):  # 1 = visual stream in, 2 = text stream in
            for proj in ("query", "key", "value"):
                linear(f"{p}biattention.{proj}{stream}", B, size)
        linear(p + "biOutput.dense1", V, B)
        layer_norm(p + "biOutput.LayerNorm1", V)
        linear(p + "biOutput.q_dense1", V, B)
        linear(p + "biOutput.dense2", H, B)
        layer_norm(p + "biOutput.LayerNorm2", H)
        linear(p + "biOutput.q_dense2", H, B)
        linear(p + "v_intermediate.dense", config.v_intermediate_size, V)
        linear(p + "v_output.dense", V, config.v_intermediate_size)
        layer_norm(p + "v_output.LayerNorm", V)
        linear(p + "t_intermediate.dense", config.intermediate_size, H)
        linear(p + "t_output.dense", H, config.intermediate_size)
        layer_norm(p + "t_output.LayerNorm", H)
    linear("bert.t_pooler.dense", B, H)
    linear("bert.v_pooler.dense", B, V)
    # Pretraining heads (the originals' task models carry them too).
    put("cls.predictions.bias", config.vocab_size)
    linear("cls.predictions.transform.dense", H, H)
    layer_norm("cls.predictions.transform.LayerNorm", H)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
    linear("cls.bi_seq_relationship", 2, B)
    linear("cls.imagePredictions.transform.dense", V, V)
    layer_norm("cls.imagePredictions.transform.LayerNorm", V)
    linear("cls.imagePredictions.decoder", config.v_target_size, V)
    if layout == "beta":
        sd["vil_prediction.main.0.weight_g"] = torch.tensor(3.0)
        put("vil_prediction.main.0.weight_v", 2 * B, B)
        put("vil_prediction.main.0.bias", 2 * B)
        sd["vil_prediction.main.3.weight_g"] = torch.tensor(2.0)
        put("vil_prediction.main.3.weight_v", num_labels, 2 * B)
        put("vil_prediction.main.3.bias", num_labels)
    else:
        for head, in_size, out_size in [("vil_prediction", B, num_labels), ("vil_prediction_gqa", B, 1533),
                                        ("vil_binary_prediction", 2 * B, 2)]:
            linear(f"{head}.logit_fc.0", 2 * B, in_size)
            layer_norm(f"{head}.logit_fc.2", 2 * B)
            linear(f"{head}.logit_fc.3", out_size, 2 * B)
        linear("vil_tri_prediction", 3, B)
    linear("vil_logit", 1, B)
    linear("vision_logit", 1, V)
    linear("linguisic_logit", 1, H)
    return sd


def pretraining_batch(config, seed=0):
    """random_inputs (3 rows, 7 tokens, 5 regions) with every pretraining label: tokens 1-3 and
    regions 1-2 of each row are targets."""
    inputs = random_inputs(config, batch=3, tokens=7, regions=5, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.full_like(inputs["input_ids"], -1)
    labels[:, 1:4] = inputs["input_ids"][:, 1:4]
    image_label = torch.zeros(3, 5, dtype=torch.long)
    image_label[:, 1:3] = 1
    target = torch.softmax(torch.randn(3, 5, config.region_target_size, generator=g), -1)
    return dict(inputs, masked_lm_labels=labels, image_label=image_label, image_target=target,
                next_sentence_label=torch.tensor([0, 1, 0]))
