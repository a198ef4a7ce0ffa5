"""Outside checkpoints: THE key map between the originals' names and ours, loading and saving.

`from_pretrained(path)` on every model class comes here. It recognises
1. our own directory: config.json + model.safetensors (written by `save_pretrained`);
2. a Hugging Face BERT directory (or hub name where a network exists): embeddings and text layers
   (and the MLM head of a BertForPreTraining); everything else keeps its fresh init;
3. an original checkpoint of vilbert_beta / vilbert-multi-task: a `.bin` state dict or 12-in-1's
   `pytorch_ckpt_*.tar` dict holding `model_state_dict`.

Our modules have readable names (STYLE 12: `coattention_layers.3.text_attention.query` rather than
`c_layer.3.biattention.query2`); the price is this table, which every load and test goes through.
Accounting is strict: each source key is loaded, or unused by the target model (e.g. the
pretraining heads when loading into ViLBertForVLTasks), or on the short IGNORED list, or reported
as unmapped; model parameters nobody provided are reported as missing.

    python -m vilbert.convert ORIGINAL.bin OUT_DIR --config_file config/bert_base_6layer_6conect.json
"""

import argparse
import dataclasses
import logging
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from vilbert.config import ViLBertConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# (our name, the originals' name). Our names are those of ViLBertForPretraining/ViLBertForVLTasks
# (the two-stream model under "vilbert."); ViLBertModel's own names drop that prefix. Originals'
# names are REFERENCE 3 (HF BERT keys are the bert.embeddings.* / bert.encoder.layer.* rows).
# {i}: a layer index; {p}: weight or bias; {wn}: weight_g, weight_v or bias (weight norm).
KEY_MAP: List[Tuple[str, str]] = [
    # Text embeddings (12-in-1 adds the task-token table).
    ("vilbert.text_embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight"),
    ("vilbert.text_embeddings.position_embeddings.weight", "bert.embeddings.position_embeddings.weight"),
    ("vilbert.text_embeddings.token_type_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"),
    ("vilbert.text_embeddings.task_embeddings.weight", "bert.embeddings.task_embeddings.weight"),
    ("vilbert.text_embeddings.norm.{p}", "bert.embeddings.LayerNorm.{p}"),
    # Region embeddings.
    ("vilbert.region_embeddings.feature_projection.{p}", "bert.v_embeddings.image_embeddings.{p}"),
    ("vilbert.region_embeddings.location_projection.{p}", "bert.v_embeddings.image_location_embeddings.{p}"),
    ("vilbert.region_embeddings.norm.{p}", "bert.v_embeddings.LayerNorm.{p}"),
    # Text layers (HF BERT layer names).
    ("vilbert.text_layers.{i}.attention.query.{p}", "bert.encoder.layer.{i}.attention.self.query.{p}"),
    ("vilbert.text_layers.{i}.attention.key.{p}", "bert.encoder.layer.{i}.attention.self.key.{p}"),
    ("vilbert.text_layers.{i}.attention.value.{p}", "bert.encoder.layer.{i}.attention.self.value.{p}"),
    ("vilbert.text_layers.{i}.attention_output.dense.{p}", "bert.encoder.layer.{i}.attention.output.dense.{p}"),
    ("vilbert.text_layers.{i}.attention_output.norm.{p}", "bert.encoder.layer.{i}.attention.output.LayerNorm.{p}"),
    ("vilbert.text_layers.{i}.feed_forward.up.{p}", "bert.encoder.layer.{i}.intermediate.dense.{p}"),
    ("vilbert.text_layers.{i}.feed_forward.down.dense.{p}", "bert.encoder.layer.{i}.output.dense.{p}"),
    ("vilbert.text_layers.{i}.feed_forward.down.norm.{p}", "bert.encoder.layer.{i}.output.LayerNorm.{p}"),
    # Visual layers: the same sub-keys under v_layer.
    ("vilbert.visual_layers.{i}.attention.query.{p}", "bert.encoder.v_layer.{i}.attention.self.query.{p}"),
    ("vilbert.visual_layers.{i}.attention.key.{p}", "bert.encoder.v_layer.{i}.attention.self.key.{p}"),
    ("vilbert.visual_layers.{i}.attention.value.{p}", "bert.encoder.v_layer.{i}.attention.self.value.{p}"),
    ("vilbert.visual_layers.{i}.attention_output.dense.{p}", "bert.encoder.v_layer.{i}.attention.output.dense.{p}"),
    ("vilbert.visual_layers.{i}.attention_output.norm.{p}", "bert.encoder.v_layer.{i}.attention.output.LayerNorm.{p}"),
    ("vilbert.visual_layers.{i}.feed_forward.up.{p}", "bert.encoder.v_layer.{i}.intermediate.dense.{p}"),
    ("vilbert.visual_layers.{i}.feed_forward.down.dense.{p}", "bert.encoder.v_layer.{i}.output.dense.{p}"),
    ("vilbert.visual_layers.{i}.feed_forward.down.norm.{p}", "bert.encoder.v_layer.{i}.output.LayerNorm.{p}"),
    # Co-attention blocks. The originals' "1" is the visual input, "2" the text input: query1 asks
    # from the regions, key1/value1 are the regions that text queries (query2) attend to.
    ("vilbert.coattention_layers.{i}.visual_attention.query.{p}", "bert.encoder.c_layer.{i}.biattention.query1.{p}"),
    ("vilbert.coattention_layers.{i}.text_attention.key.{p}", "bert.encoder.c_layer.{i}.biattention.key1.{p}"),
    ("vilbert.coattention_layers.{i}.text_attention.value.{p}", "bert.encoder.c_layer.{i}.biattention.value1.{p}"),
    ("vilbert.coattention_layers.{i}.text_attention.query.{p}", "bert.encoder.c_layer.{i}.biattention.query2.{p}"),
    ("vilbert.coattention_layers.{i}.visual_attention.key.{p}", "bert.encoder.c_layer.{i}.biattention.key2.{p}"),
    ("vilbert.coattention_layers.{i}.visual_attention.value.{p}", "bert.encoder.c_layer.{i}.biattention.value2.{p}"),
    ("vilbert.coattention_layers.{i}.visual_attention_output.dense.{p}", "bert.encoder.c_layer.{i}.biOutput.dense1.{p}"),
    ("vilbert.coattention_layers.{i}.visual_attention_output.norm.{p}", "bert.encoder.c_layer.{i}.biOutput.LayerNorm1.{p}"),
    ("vilbert.coattention_layers.{i}.text_attention_output.dense.{p}", "bert.encoder.c_layer.{i}.biOutput.dense2.{p}"),
    ("vilbert.coattention_layers.{i}.text_attention_output.norm.{p}", "bert.encoder.c_layer.{i}.biOutput.LayerNorm2.{p}"),
    ("vilbert.coattention_layers.{i}.visual_feed_forward.up.{p}", "bert.encoder.c_layer.{i}.v_intermediate.dense.{p}"),
    ("vilbert.coattention_layers.{i}.visual_feed_forward.down.dense.{p}", "bert.encoder.c_layer.{i}.v_output.dense.{p}"),
    ("vilbert.coattention_layers.{i}.visual_feed_forward.down.norm.{p}", "bert.encoder.c_layer.{i}.v_output.LayerNorm.{p}"),
    ("vilbert.coattention_layers.{i}.text_feed_forward.up.{p}", "bert.encoder.c_layer.{i}.t_intermediate.dense.{p}"),
    ("vilbert.coattention_layers.{i}.text_feed_forward.down.dense.{p}", "bert.encoder.c_layer.{i}.t_output.dense.{p}"),
    ("vilbert.coattention_layers.{i}.text_feed_forward.down.norm.{p}", "bert.encoder.c_layer.{i}.t_output.LayerNorm.{p}"),
    # Poolers.
    ("vilbert.text_pooler.{p}", "bert.t_pooler.dense.{p}"),
    ("vilbert.visual_pooler.{p}", "bert.v_pooler.dense.{p}"),
    # Pretraining heads (cls.predictions.* also come from a HF BertForPreTraining checkpoint).
    ("mlm_head.bias", "cls.predictions.bias"),
    ("mlm_head.transform.dense.{p}", "cls.predictions.transform.dense.{p}"),
    ("mlm_head.transform.norm.{p}", "cls.predictions.transform.LayerNorm.{p}"),
    ("region_head.transform.dense.{p}", "cls.imagePredictions.transform.dense.{p}"),
    ("region_head.transform.norm.{p}", "cls.imagePredictions.transform.LayerNorm.{p}"),
    ("region_head.decoder.{p}", "cls.imagePredictions.decoder.{p}"),
    ("alignment_head.{p}", "cls.bi_seq_relationship.{p}"),
    # Task heads, beta layout: weight-normed Linear -> ReLU -> Dropout -> weight-normed Linear.
    ("vil_prediction.hidden.{wn}", "vil_prediction.main.0.{wn}"),
    ("vil_prediction.output.{wn}", "vil_prediction.main.3.{wn}"),
    # Task heads, 12-in-1 layout: Linear -> GeLU -> LayerNorm -> Linear, and its extra heads.
    ("vil_prediction.hidden.{p}", "vil_prediction.logit_fc.0.{p}"),
    ("vil_prediction.norm.{p}", "vil_prediction.logit_fc.2.{p}"),
    ("vil_prediction.output.{p}", "vil_prediction.logit_fc.3.{p}"),
    ("vil_prediction_gqa.hidden.{p}", "vil_prediction_gqa.logit_fc.0.{p}"),
    ("vil_prediction_gqa.norm.{p}", "vil_prediction_gqa.logit_fc.2.{p}"),
    ("vil_prediction_gqa.output.{p}", "vil_prediction_gqa.logit_fc.3.{p}"),
    ("vil_binary_prediction.hidden.{p}", "vil_binary_prediction.logit_fc.0.{p}"),
    ("vil_binary_prediction.norm.{p}", "vil_binary_prediction.logit_fc.2.{p}"),
    ("vil_binary_prediction.output.{p}", "vil_binary_prediction.logit_fc.3.{p}"),
    ("vil_tri_prediction.{p}", "vil_tri_prediction.{p}"),
    # Task heads of both.
    ("vil_logit.{p}", "vil_logit.{p}"),
    ("vision_logit.{p}", "vision_logit.{p}"),
    ("linguisic_logit.{p}", "linguisic_logit.{p}"),
]

# Originals' keys that are deliberately not loaded, with why.
IGNORED: List[Tuple[str, str]] = [
    (r"bert\.encoder\.c_layer\.\d+\.biOutput\.q_dense[12]\.(weight|bias)", "saved but never used by the originals"),
    (r"bert\.pooler\.dense\.(weight|bias)", "BERT's tanh pooler; ViLBERT has its own ReLU poolers"),
    (r"cls\.seq_relationship\.(weight|bias)", "BERT's next-sentence head; ViLBERT aligns image and text instead"),
    (r"bert\.embeddings\.position_ids", "a constant buffer of Hugging Face BERT"),
    (r"cls\.predictions\.decoder\.weight", "tied to the word embeddings"),
    (r"cls\.predictions\.decoder\.bias", "Hugging Face's alias of cls.predictions.bias"),
]

_SLOTS = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)", "{wn}": r"(?P<wn>weight_g|weight_v|bias)"}


def _compile(pattern: str) -> "re.Pattern":
    regex = re.escape(pattern)
    for slot, group in _SLOTS.items():
        regex = regex.replace(re.escape(slot), group)
    return re.compile(regex)


_TO_OURS = [(_compile(theirs), ours) for ours, theirs in KEY_MAP]
_TO_ORIGINAL = [(_compile(ours), theirs) for ours, theirs in KEY_MAP]
_IGNORED = [(re.compile(pattern), why) for pattern, why in IGNORED]


def _translate(key: str, table) -> Optional[str]:
    for regex, template in table:
        match = regex.fullmatch(key)
        if match:
            out = template
            for name, value in match.groupdict().items():
                out = out.replace("{" + name + "}", value)
            return out
    return None


def to_our_key(original_key: str) -> Optional[str]:
    """The originals' key (after normalize_original_key) -> our name, or None if unmapped."""
    return _translate(original_key, _TO_OURS)


def to_original_key(our_key: str) -> Optional[str]:
    """Our name (with the "vilbert." prefix of the task/pretraining models) -> the originals' key."""
    return _translate(our_key, _TO_ORIGINAL)


def ignored_reason(original_key: str) -> Optional[str]:
    for regex, why in _IGNORED:
        if regex.fullmatch(original_key):
            return why
    return None


def normalize_original_key(key: str) -> str:
    """Bring a source key to the originals' spelling: no DataParallel `module.` prefix, the `bert.`
    prefix on HF BertModel keys, LayerNorm `weight`/`bias` for TF-era `gamma`/`beta`."""
    while key.startswith("module."):
        key = key[len("module."):]
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return re.sub(r"(LayerNorm\d?)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm\d?)\.beta$", r"\1.bias", key))


@dataclass
class LoadReport:
    """What a `from_pretrained` did with every key. Lists hold names as the source spells them,
    except `missing` (our parameter names)."""

    source: str
    format: str  # "vilbert" (ours), "huggingface-bert" or "original"
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # model parameters the source did not provide
    unmapped: List[str] = field(default_factory=list)  # source keys the table does not know
    unused: List[str] = field(default_factory=list)  # known keys for heads this model does not have
    ignored: List[str] = field(default_factory=list)  # on the IGNORED list
    mismatched: List[str] = field(default_factory=list)  # skipped on shape (skip_mismatched=True)
    notes: List[str] = field(default_factory=list)  # config adjustments made to fit the checkpoint

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.format})"]
        for name in ("missing", "unmapped", "unused", "ignored", "mismatched"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {name} ({len(keys)}): {shown}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class _Inert:
    """Stands in for a class a checkpoint names but that we will not import or run."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __setitem__(self, key, value):
        pass


class _InertUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; every other class becomes an inert placeholder.

    Used only when `torch.load(weights_only=True)` refuses a file because it also holds training
    objects (12-in-1's `pytorch_ckpt_*.tar` pickles its logger and task-stop controller). Nothing
    named by the file is imported or called except the allow-listed tensor rebuilders.
    """

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"),
        ("torch", "Size"), ("torch", "device"),
    }
    BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "int", "float", "complex", "bool", "str",
                "bytes", "bytearray", "slice"}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "builtins" and name in self.BUILTINS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(f"Inert[{module}.{name}]", (_Inert,), {})


class _InertPickleModule:
    """The `pickle_module` torch.load calls: our unpickler, nothing else."""

    __name__ = "vilbert_inert_pickle"
    Unpickler = _InertUnpickler

    @staticmethod
    def load(file, **kwargs):
        return _InertUnpickler(file, **kwargs).load()


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """Tensors of an original checkpoint file: a plain state dict (.bin/.pth) or a dict holding
    `model_state_dict` (12-in-1's `pytorch_ckpt_*.tar`), or a .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        logger.info("%s holds more than weights; reading its tensors with a restricted unpickler", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_InertPickleModule)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{path}: entry {bad[0]!r} of the state dict is not a named tensor")
    return dict(obj)


@dataclass
class _Source:
    format: str
    tensors: Dict[str, torch.Tensor]  # our names (vilbert.* prefix) or originals' names
    config: Optional[ViLBertConfig] = None
    model_class: Optional[str] = None


def _resolve(path) -> Tuple[Path, str]:
    """A local path, or a hub name fetched to the local cache where a network exists."""
    local = Path(path)
    if local.exists():
        return local, str(local)
    if local.is_absolute() or str(path).startswith(".") or local.suffix in (".bin", ".tar", ".pt", ".pth", ".safetensors"):
        raise FileNotFoundError(f"{path}: no such file or directory")
    try:
        from huggingface_hub import snapshot_download

        fetched = snapshot_download(str(path), allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"])
        return Path(fetched), str(path)
    except Exception as exc:
        raise FileNotFoundError(
            f"{path}: no such file or directory, and not fetchable from the Hugging Face hub "
            f"({type(exc).__name__}); pass a local BERT directory or checkpoint file") from None


def read_source(path) -> _Source:
    """Read any of the three formats; tensors stay under the source's own names."""
    local, label = _resolve(path)
    if local.is_file():
        return _Source("original", read_state_dict(local))
    weights = local / WEIGHTS_NAME
    if weights.is_file():
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(weights), "pt") as f:
            metadata = f.metadata() or {}
        if "vilbert_class" in metadata:
            config = ViLBertConfig.from_json_file(local / CONFIG_NAME)
            return _Source("vilbert", load_file(str(weights)), config, metadata["vilbert_class"])
        return _Source("huggingface-bert", load_file(str(weights)))
    for name in ("pytorch_model.bin", "model.bin", "pytorch_model.pth"):
        if (local / name).is_file():
            return _Source("huggingface-bert", read_state_dict(local / name))
    raise FileNotFoundError(f"{label}: directory holds neither {WEIGHTS_NAME} nor pytorch_model.bin")


def _our_full_name(model, name: str) -> str:
    """A parameter name of `model` in the table's spelling (the two-stream part under vilbert.)."""
    from vilbert.model import ViLBertModel

    return "vilbert." + name if isinstance(model, ViLBertModel) else name


def _to_our_names(source: _Source, report: LoadReport) -> Dict[str, Tuple[str, torch.Tensor]]:
    """{our full name: (source key, tensor)}; unmapped and ignored keys go to the report."""
    out = {}
    for key, tensor in source.tensors.items():
        if source.format == "vilbert":
            ours = "vilbert." + key if source.model_class == "ViLBertModel" else key
        else:
            original = normalize_original_key(key)
            if ignored_reason(original):
                report.ignored.append(key)
                continue
            ours = to_our_key(original)
            if ours is None:
                report.unmapped.append(key)
                continue
        out[ours] = (key, tensor)
    return out


def read_tensors(path, names, source: Optional[_Source] = None) -> Dict[str, torch.Tensor]:
    """Tensors of a checkpoint in any of the three formats, by our parameter names (e.g.
    "alignment_head.weight"); a name the checkpoint lacks is left out. `source`: the checkpoint
    already read by `read_source(path)` (a large file is then not read again)."""
    source = source if source is not None else read_source(path)
    tensors = _to_our_names(source, LoadReport(str(path), source.format))
    return {name: tensors[name][1] for name in names if name in tensors}


def _fit_config(cls, config: ViLBertConfig, names, kwargs, report: LoadReport) -> ViLBertConfig:
    """Adjust config and constructor arguments to what the checkpoint holds (task head layout,
    number of answers, 12-in-1 extra heads, task tokens)."""
    from vilbert.model import ViLBertForVLTasks

    changes = {}
    if "vilbert.text_embeddings.task_embeddings.weight" in names and not config.task_specific_tokens:
        changes["task_specific_tokens"] = True
    if issubclass(cls, ViLBertForVLTasks):
        if "vil_prediction.hidden.weight_v" in names:
            variant = "beta"
        elif "vil_prediction.hidden.weight" in names:
            variant = "12in1"
        else:
            variant = config.vl_classifier
        if variant != config.vl_classifier:
            changes["vl_classifier"] = variant
        if "num_labels" not in kwargs and "vil_prediction.output.bias" in names:
            kwargs["num_labels"] = names["vil_prediction.output.bias"][1].shape[0]
            report.notes.append(f"num_labels = {kwargs['num_labels']} from the checkpoint")
        if "multitask_heads" not in kwargs and "vil_prediction_gqa.output.bias" in names:
            kwargs["multitask_heads"] = True
            report.notes.append("built 12-in-1's extra heads (the checkpoint has them)")
    for key, value in changes.items():
        report.notes.append(f"config {key} = {value!r} to fit the checkpoint")
    return dataclasses.replace(config, **changes) if changes else config


def load_pretrained(cls, path, config: Optional[ViLBertConfig] = None, *, strict: bool = False,
                    skip_mismatched: bool = False, source: Optional[_Source] = None, **model_kwargs):
    """Build `cls(config, **model_kwargs)` and load `path` into it (module docstring: formats).

    config: required for BERT and original checkpoints (they carry none); for our directories the
    saved config is used unless one is given. For ViLBertForVLTasks, the VL-classifier variant,
    num_labels and the 12-in-1 extra heads follow the checkpoint unless given.
    strict: raise if any source key is unmapped or any model parameter is missing.
    skip_mismatched: leave parameters whose shape differs at their init (reported) instead of
    raising, e.g. an answer head of another size.
    source: `read_source(path)` when the caller has read it already (to choose the class).
    The LoadReport is logged and kept as `model.load_report`.
    """
    source = source if source is not None else read_source(path)
    config = config if config is not None else source.config
    if config is None:
        raise ValueError(f"{path}: {source.format} checkpoints carry no ViLBERT config; pass config="
                         "ViLBertConfig.from_json_file(...)")
    report = LoadReport(source=str(path), format=source.format)
    names = _to_our_names(source, report)
    config = _fit_config(cls, config, names, model_kwargs, report)
    model = cls(config, **model_kwargs)

    tied = model.tied_parameter_names()
    targets = dict(model.state_dict(keep_vars=True))
    by_full_name = {_our_full_name(model, name): name for name in targets}
    provided = set()
    with torch.no_grad():
        for ours, (key, tensor) in names.items():
            name = by_full_name.get(ours)
            if name is None:
                report.unused.append(key)
                continue
            target = targets[name]
            if tuple(target.shape) != tuple(tensor.shape):
                if skip_mismatched:
                    report.mismatched.append(f"{key} {tuple(tensor.shape)} vs {name} {tuple(target.shape)}")
                    continue
                raise ValueError(f"{path}: shape mismatch for {key} -> {name}: checkpoint "
                                 f"{tuple(tensor.shape)}, model {tuple(target.shape)}")
            target.copy_(tensor.to(target.dtype))
            provided.add(name)
            report.loaded.append(key)
    report.missing = [n for n in targets if n not in provided and n not in tied]
    model.load_report = report
    level = logging.WARNING if report.unmapped else logging.INFO
    logger.log(level, "%s", report.summary())
    if strict and (report.unmapped or report.missing):
        raise ValueError(f"{path}: strict load failed\n{report.summary()}")
    return model


def save_pretrained(model, directory) -> None:
    """config.json + model.safetensors; a tied alias is stored once (under its owner's name)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(directory / CONFIG_NAME)
    tied = model.tied_parameter_names()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "vilbert_class": type(model).__name__})


def _guess_model_class(source: _Source):
    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks, ViLBertModel

    keys = [normalize_original_key(k) for k in source.tensors]
    if any(k.startswith(("vil_", "vision_logit", "linguisic_logit")) for k in keys):
        return ViLBertForVLTasks
    if any(k.startswith("cls.") for k in keys):
        return ViLBertForPretraining
    return ViLBertModel


def main(argv=None) -> int:
    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks, ViLBertModel

    parser = argparse.ArgumentParser(prog="python -m vilbert.convert",
                                     description="Convert an original ViLBERT checkpoint (or a BERT directory) to our format.")
    parser.add_argument("source", help="original .bin/.tar checkpoint, BERT directory, or our directory")
    parser.add_argument("output_dir", help="where to write config.json + model.safetensors")
    parser.add_argument("--config_file", required=True, help="model config JSON (original field names)")
    parser.add_argument("--model", choices=["auto", "base", "pretraining", "tasks"], default="auto",
                        help="model class to build (auto: tasks if the checkpoint has task heads, "
                             "pretraining if it has cls.*, else base)")
    parser.add_argument("--num_labels", type=int, default=None, help="answers of the VL-classifier (default: from the checkpoint)")
    parser.add_argument("--strict", action="store_true", help="fail on unmapped source keys or missing parameters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    classes = {"base": ViLBertModel, "pretraining": ViLBertForPretraining, "tasks": ViLBertForVLTasks}
    try:
        config = ViLBertConfig.from_json_file(args.config_file)
        cls = classes.get(args.model) or _guess_model_class(read_source(args.source))
        kwargs = {"num_labels": args.num_labels} if args.num_labels is not None and cls is ViLBertForVLTasks else {}
        model = load_pretrained(cls, args.source, config=config, strict=args.strict, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model.save_pretrained(args.output_dir)
    print(f"wrote {cls.__name__} to {args.output_dir}")
    return 1 if model.load_report.unmapped else 0


if __name__ == "__main__":
    sys.exit(main())
