"""Tiny configs and random inputs shared by the model and conversion tests."""

from pathlib import Path

import torch

from vilbert.config import ViLBertConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


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
