"""Checkpoints and answer vocabularies for vilbert.predict.

    model, info, alignment_head = load_checkpoint("multi_task_model.bin")   # or our directory
    info.heads                   # the heads it has weights for: vil_prediction, vision_logit, vil_logit, alignment
    label2ans = read_label2ans(find_label2ans("save/VQA/best/VQA", tasks_config="vlbert_tasks.yml"))

Our directories carry their config; a released `.bin`/`.tar` of vilbert_beta or 12-in-1 is read
through vilbert/convert.py with `config_file` (default config/bert_base_6layer_6conect.json, the
config of every released model). A checkpoint with task heads becomes a ViLBertForVLTasks, any
other a ViLBertForPretraining.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from vilbert.predict.errors import PredictError

DEFAULT_ORIGINAL_CONFIG = Path(__file__).resolve().parents[2] / "config" / "bert_base_6layer_6conect.json"
TASK_HEADS = ("vil_prediction", "vision_logit", "vil_logit")

logger = logging.getLogger(__name__)

@dataclass
class CheckpointInfo:
    """What was loaded, and which of its heads this module can use."""

    path: str
    format: str  # "vilbert" (our directory) or "original" (a released .bin/.tar)
    model_class: str  # ViLBertForVLTasks or ViLBertForPretraining
    heads: list  # of "vil_prediction", "vision_logit", "vil_logit", "alignment"
    task_tokens: bool  # the model has 12-in-1's task-token table
    num_labels: Optional[int]  # answers of vil_prediction
    trained_for: Optional[str] = None  # the task a best/<task> directory was kept for
    report: str = ""  # the converter's load report


def _head_names(model, report) -> list:
    """Heads the checkpoint provided weights for (a head left at its fresh init is not one)."""
    from vilbert.model import ViLBertForVLTasks

    provided = lambda prefix: not any(name.startswith(prefix + ".") for name in report.missing)  # noqa: E731
    if isinstance(model, ViLBertForVLTasks):
        return [head for head in TASK_HEADS if provided(head)]
    return ["alignment"] if provided("alignment_head") else []


def load_checkpoint(path, config_file=None):
    """(model in eval mode, CheckpointInfo, alignment head or None) from any checkpoint.

    Task heads in the checkpoint -> ViLBertForVLTasks; else ViLBertForPretraining. The alignment
    head of an original task checkpoint (the originals' task models keep the pretraining heads) is
    read too, so that a 12-in-1 model can also score captions zero-shot.
    """
    from vilbert.config import ViLBertConfig
    from vilbert.convert import normalize_original_key, read_source, read_tensors
    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks

    where = f"--checkpoint {path}"
    if not Path(path).exists():
        raise PredictError(f"{where}: no such file or directory")
    try:
        source = read_source(path)
    except (FileNotFoundError, ValueError) as exc:
        raise PredictError(f"{where}: {exc}") from None
    if source.format == "huggingface-bert":
        raise PredictError(f"{where}: a BERT checkpoint, not a ViLBERT one (no task or alignment heads)")
    if source.format == "vilbert":
        model_class = ViLBertForVLTasks if source.model_class == "ViLBertForVLTasks" else ViLBertForPretraining
        config_path = None  # its own config.json: the weights were saved with it
    else:
        keys = [normalize_original_key(key) for key in source.tensors]
        heads = any(key.startswith(("vil_", "vision_logit", "linguisic_logit")) for key in keys)
        model_class = ViLBertForVLTasks if heads else ViLBertForPretraining
        config_path = config_file or DEFAULT_ORIGINAL_CONFIG
    if config_path and not Path(config_path).is_file():
        raise PredictError(f"--config_file {config_path}: no such file (the model config a released checkpoint needs)")
    try:
        config = ViLBertConfig.from_json_file(config_path) if config_path else None
        model = model_class.from_pretrained(path, config=config, source=source)
    except (FileNotFoundError, ValueError) as exc:  # a shape mismatch names the key and both shapes
        message = " ".join(str(exc).split())
        raise PredictError(f"{where}: {message.removeprefix(f'{path}: ')}") from None
    report = model.load_report
    if report.unmapped:
        logger.warning("%s", report.summary())
    heads = _head_names(model, report)
    alignment = model.alignment_head if "alignment" in heads else None
    if alignment is None and isinstance(model, ViLBertForVLTasks):
        tensors = read_tensors(path, ("alignment_head.weight", "alignment_head.bias"), source=source)
        width = model.config.bi_hidden_size
        if len(tensors) == 2 and tuple(tensors["alignment_head.weight"].shape) == (2, width):
            alignment = torch.nn.Linear(width, 2)
            with torch.no_grad():
                alignment.weight.copy_(tensors["alignment_head.weight"])
                alignment.bias.copy_(tensors["alignment_head.bias"])
            heads.append("alignment")
    trained_for = None
    metrics = Path(path) / "metrics.json"
    if metrics.is_file():
        try:
            trained_for = json.loads(metrics.read_text()).get("task")
        except (OSError, ValueError, AttributeError):
            pass
    info = CheckpointInfo(str(path), source.format, type(model).__name__, heads, model.config.task_specific_tokens,
                          getattr(model, "num_labels", None) if "vil_prediction" in heads else None, trained_for,
                          report.summary())
    return model.eval(), info, alignment


def read_label2ans(path) -> list:
    """An answer vocabulary: our JSON list, or the originals' pickle (a list, or an ans2label
    dict), read with the restricted unpickler. Index = the classifier's label."""
    path = Path(path)
    where = f"answer vocabulary {path}"
    if not path.is_file():
        raise PredictError(f"{where}: no such file")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            from vilbert.safe_pickle import safe_load

            data = safe_load(path)
    except Exception as exc:  # a bad JSON or a refused pickle: one line either way
        raise PredictError(f"{where}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if isinstance(data, dict):  # ans2label: {answer: label}
        if sorted(data.values()) != list(range(len(data))):
            raise PredictError(f"{where}: a dict, but its values are not the labels 0..{len(data) - 1}")
        data = sorted(data, key=data.get)
    from vilbert.data.vqa import check_label2ans

    try:
        return check_label2ans(data, where)  # the VQA reader's check: a list of answer strings
    except ValueError as exc:
        raise PredictError(str(exc)) from None


def find_label2ans(checkpoint, answers=None, tasks_config=None) -> Optional[Path]:
    """Where the VQA answer vocabulary is (module docstring: the order looked in), or None."""
    if answers:
        return Path(answers)
    folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    for name in ("label2ans.json", "trainval_label2ans.json", "trainval_label2ans.pkl"):
        if (folder / name).is_file():
            return folder / name
    if tasks_config:
        from vilbert.tasks.config import TaskConfigError, load_task_configs

        try:
            configs = load_task_configs(tasks_config)
        except TaskConfigError as exc:
            raise PredictError(f"--tasks_config: {exc}") from None
        for config in configs.values():
            if config.reader == "vqa":
                for suffix in (".json", ".pkl"):
                    path = Path(config.dataroot) / "cache" / f"{config.train_split}_label2ans{suffix}"
                    if path.is_file():
                        return path
    return None
