"""Load the originals' model file (vilbert-multi-task's `vilbert/vilbert.py`) beside ours, for speed
comparisons with the same weights and inputs.

The file is never part of this repository: keep a copy of `vilbert/vilbert.py` and
`vilbert/utils.py` of facebookresearch/vilbert-multi-task in a folder outside it and pass that
folder (`bench_model.py --original DIR`). Its imports of 2019 (boto3, requests, `torch._six`) are
met by inert stand-ins, so the file runs unchanged on today's PyTorch; apex is absent, so its
LayerNorm is its own Python fallback, as on any machine without a CUDA build of apex.

    original = load_original_module("/path/to/orig_vilbert")
    model = build_original_pretraining(original, our_config, our_state_dict)
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import torch

from vilbert.config import ViLBertConfig
from vilbert.convert import to_original_key

PACKAGE = "_original_vilbert"


def _stub_module(name: str, **attrs) -> None:
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module


def load_original_module(directory) -> types.ModuleType:
    """Import DIR/vilbert.py (with DIR/utils.py beside it) as a package of its own."""
    directory = Path(directory)
    for name in ("vilbert.py", "utils.py"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: the originals' model file is needed "
                                    "(vilbert-multi-task's vilbert/vilbert.py and vilbert/utils.py)")
    if f"{PACKAGE}.vilbert" in sys.modules:
        return sys.modules[f"{PACKAGE}.vilbert"]

    class _ClientError(Exception):
        pass

    _stub_module("boto3")
    _stub_module("requests")
    _stub_module("botocore")
    _stub_module("botocore.exceptions", ClientError=_ClientError)
    _stub_module("torch._six", inf=math.inf, string_classes=(str, bytes))

    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(directory)]
    sys.modules[PACKAGE] = package
    for name in ("utils", "vilbert"):
        spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", directory / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[f"{PACKAGE}.vilbert"]


def original_config(module: types.ModuleType, config: ViLBertConfig):
    """The originals' BertConfig with the same fields as ours (dropout included)."""
    values = {key: value for key, value in config.to_dict().items()}
    original = module.BertConfig(vocab_size_or_config_json_file=values.pop("vocab_size"))
    for key, value in values.items():
        setattr(original, key, value)
    original.visual_target = config.visual_target
    original.fast_mode = False
    original.fixed_v_layer = config.fixed_v_layer
    original.fixed_t_layer = config.fixed_t_layer
    original.task_specific_tokens = config.task_specific_tokens
    original.model = "bert"
    original.visualization = False
    original.dynamic_attention = False
    original.with_coattention = True
    original.in_batch_pairs = False
    original.fusion_method = config.fusion_method
    return original


def load_our_weights(original_model: torch.nn.Module, our_state: dict) -> None:
    """Copy our state dict into the original model through the converter's key map (all keys)."""
    theirs = original_model.state_dict()
    loaded = set()
    with torch.no_grad():
        for name, tensor in our_state.items():
            key = to_original_key(name)
            if key is None or key not in theirs:
                continue
            theirs[key].copy_(tensor)
            loaded.add(key)
    # The tied decoder shares the word embeddings; q_dense* are never used by the originals.
    missing = [k for k in theirs if k not in loaded and "q_dense" not in k and k != "cls.predictions.decoder.weight"]
    if missing:
        raise KeyError(f"original model keys not filled from ours: {missing[:5]} ({len(missing)} in all)")


def build_original_pretraining(module: types.ModuleType, config: ViLBertConfig, our_state: dict) -> torch.nn.Module:
    model = module.BertForMultiModalPreTraining(original_config(module, config))
    load_our_weights(model, our_state)
    return model


def build_original_vl_tasks(module: types.ModuleType, config: ViLBertConfig, our_state: dict,
                            num_labels: int) -> torch.nn.Module:
    model = module.VILBertForVLTasks(original_config(module, config), num_labels=num_labels)
    load_our_weights(model, our_state)
    return model
