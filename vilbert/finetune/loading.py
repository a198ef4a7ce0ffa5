"""Setting up a finetuning or evaluation run: tasks and their datasets, the model from any
starting point (our checkpoints, Hugging Face BERT, the originals' files), precision and the
task heads' learning rates."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from vilbert.tasks.config import TaskConfigError
from vilbert.tasks.registry import Task, build_tasks
from vilbert.training import Precision, unwrap_model
from vilbert.training.cli import SetupError, build_on_main_first  # noqa: F401 (re-exported)

# The model's task-head modules (ViLBertForVLTasks): trained at their own learning rate when
# finetuning (REFERENCE 5: 1e-4). The originals matched the substring "vil_", which left the
# RefCOCO+ head `vision_logit` at the body's rate; every head counts here.
TASK_HEAD_PREFIXES = ("vil_prediction", "vil_logit", "vision_logit", "linguisic_logit",
                      "vil_prediction_gqa", "vil_binary_prediction", "vil_tri_prediction")


def load_tasks(spec, tasks_config: Union[str, Path]) -> dict[int, Task]:
    """`--tasks` ids ("1-6-7": dashes separate ids, as the originals) -> {task id: Task}."""
    try:
        return build_tasks(spec, tasks_config)
    except TaskConfigError as exc:
        raise SetupError(str(exc)) from None


def run_directory(output_dir: Union[str, Path], tasks: dict[int, Task], save_name: str) -> Path:
    """`<output_dir>/<task names joined by ->_<save_name>`, as the originals name a run's folder,
    so runs of different tasks with one --save_name do not overwrite each other."""
    from vilbert.data.files import output_path

    names = "-".join(task.name for task in tasks.values())
    try:
        return output_path(output_dir, f"{names}_{save_name}" if save_name else names, "--save_name")
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def build_datasets(tasks: dict[int, Task], tokenizer, split: Optional[str]) -> dict[int, Dataset]:
    """One dataset per task: split "train" = each task's train_split, "val" (or None) = its
    val_split, anything else is passed to every task's reader as it is (e.g. "test")."""
    datasets = {}
    for task_id, task in tasks.items():
        datasets[task_id] = task.dataset(split_name(task, split), tokenizer)
    return datasets


def split_name(task: Task, split: Optional[str]) -> str:
    """The reader's split for a requested split: "train"/"val"/None map to the task's own names."""
    if split == "train":
        return task.config.train_split
    if split in (None, "val"):
        return task.config.val_split
    return split


def classifier_labels(tasks: dict[int, Task], datasets: dict[int, Dataset]) -> Optional[int]:
    """The answer count of the VL-classifier task (VQA), or None when no task uses that head.

    The model has one `vil_prediction` head, so two classifier tasks must share a vocabulary size.
    """
    sizes = {task.name: datasets[task_id].num_labels for task_id, task in tasks.items()
             if task.head == "vil_prediction"}
    if len(set(sizes.values())) > 1:
        raise SetupError(f"tasks {', '.join(sizes)} need classifier heads of different sizes {sorted(sizes.values())}; "
                         "the model has one vil_prediction head: train them in separate runs")
    return next(iter(sizes.values()), None)


def is_vilbert_checkpoint(path: Union[str, Path]) -> bool:
    """Whether `path` is a directory written by our save_pretrained (it carries its own config)."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return "vilbert_class" in (f.metadata() or {})


def load_task_model(model_class, from_pretrained: str, config_file: Optional[str], *, num_labels: Optional[int] = None,
                    task_specific_tokens: bool = False, vl_classifier: Optional[str] = None,
                    multitask_heads: bool = False, required: Sequence[str] = (), log: Callable[[str], None] = print):
    """A model of `model_class` (ViLBertForVLTasks or ViLBertForPretraining) from any starting point.

    from_pretrained: our checkpoint directory (its own config.json is used: the weights need it), a
    Hugging Face BERT directory or an original .bin/.tar (config from `config_file`), or '' for a
    random init. num_labels: the classifier's answer count; a checkpoint whose classifier has another
    size keeps the rest and starts that head fresh (reported). Other shape mismatches are errors.
    vl_classifier: the VL-classifier head to build when the checkpoint has none ("beta" or
    "12in1"; a checkpoint's own head always wins). multitask_heads: build 12-in-1's GQA, binary and
    three-way heads even when the checkpoint has none (a checkpoint that has them always gets
    them). required: modules the checkpoint must provide
    (e.g. the head an evaluation reads), so that a pretraining checkpoint is not evaluated with a
    randomly initialised task head.
    """
    from vilbert.config import ViLBertConfig

    ours = bool(from_pretrained) and is_vilbert_checkpoint(from_pretrained)
    config_path = Path(from_pretrained) / "config.json" if ours else config_file
    if not config_path:
        raise SetupError("--config_file is needed with this --from_pretrained (it carries no ViLBERT config)")
    try:
        config = ViLBertConfig.from_json_file(config_path)
    except (FileNotFoundError, ValueError) as exc:
        raise SetupError(str(exc)) from None
    if task_specific_tokens:
        config.task_specific_tokens = True
    if vl_classifier is not None:
        config.vl_classifier = vl_classifier
    task_model = model_class.__name__ == "ViLBertForVLTasks"
    kwargs = {} if num_labels is None or not task_model else {"num_labels": num_labels}
    if multitask_heads and task_model:
        kwargs["multitask_heads"] = True
    if not from_pretrained:
        return model_class(config, **kwargs)
    try:
        model = model_class.from_pretrained(from_pretrained, config=config, skip_mismatched=True, **kwargs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SetupError(f"--from_pretrained {from_pretrained}: {exc}") from None
    report = model.load_report
    body = [m for m in report.mismatched if not m.startswith(("vil_prediction.", "vil_prediction_gqa."))]
    if body:
        raise SetupError(f"--from_pretrained {from_pretrained}: shapes differ from the config for {body[0]}"
                         + (f" (and {len(body) - 1} more)" if len(body) > 1 else ""))
    for module in required:
        if any(name.startswith(module + ".") for name in report.missing):
            raise SetupError(f"--from_pretrained {from_pretrained}: the checkpoint has no trained {module} "
                             f"(a {report.format} checkpoint of another kind; evaluate a checkpoint that has it)")
    log(report.summary())
    return model


def needs_multitask_heads(tasks: dict[int, Task]) -> bool:
    """Whether a task reads one of 12-in-1's extra heads (GQA, NLVR2, SNLI-VE types)."""
    from vilbert.tasks.registry import MULTITASK_HEADS

    return any(task.head in MULTITASK_HEADS for task in tasks.values())


def init_vil_logit_from_alignment(model, from_pretrained: str) -> bool:
    """Start the matching head `vil_logit` (VCR, retrieval) from a pretraining checkpoint's
    image-text alignment head: vil_logit = aligned score - random-caption score, i.e. weight
    W[0] - W[1], bias b[0] - b[1]. A finetuned run then starts where zero-shot retrieval stands
    instead of from a random head. Returns False (and changes nothing) when the checkpoint holds no
    alignment head. The originals start vil_logit fresh (train_tasks.py --vil_logit_init fresh)."""
    from vilbert.convert import read_tensors

    tensors = read_tensors(from_pretrained, ("alignment_head.weight", "alignment_head.bias"))
    weight, bias = tensors.get("alignment_head.weight"), tensors.get("alignment_head.bias")
    if weight is None or bias is None:
        return False
    head = model.vil_logit
    if tuple(weight.shape) != (2, head.in_features):
        raise SetupError(f"--from_pretrained {from_pretrained}: alignment_head.weight is {tuple(weight.shape)}, "
                         f"vil_logit needs (2, {head.in_features})")
    with torch.no_grad():
        head.weight.copy_((weight[0] - weight[1]).unsqueeze(0))
        head.bias.copy_((bias[0] - bias[1]).reshape(1))
    return True


def create_precision(mode: Optional[str], device: torch.device) -> Precision:
    """vilbert.training.Precision, with a bad --precision as a one-line SetupError."""
    try:
        return Precision.create(mode, device)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def task_head_learning_rates(model: torch.nn.Module, head_lr: float) -> dict[str, float]:
    """{parameter-name prefix: lr} for vilbert.training.build_optimizer(lr_by_prefix=...)."""
    names = {name.split(".")[0] for name, _ in unwrap_model(model).named_parameters()}
    return {f"{prefix}.": head_lr for prefix in TASK_HEAD_PREFIXES if prefix in names}
