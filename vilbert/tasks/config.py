"""A tasks file parsed into typed task configs.

Two files ship, parsed alike: `vlbert_tasks.yml` (the seed's five tasks with their ids: VCR 6-7,
Flickr30k 9, RefCOCO+ 11) and `vilbert_tasks.yml` (12-in-1's eighteen tasks with its ids: VCR 5-6,
Flickr30k 8, RefCOCO+ 10). Both keep the originals' layout and field names (REFERENCE 5): one
mapping per task under a `TASKn` key. The task id is the entry's `task_id` field when present (the
beta file keys its entries TASK0..TASK4 but gives them ids 1, 6, 7, 9, 11), otherwise the number in
the key. A task's task-token row is its own field, `task_token`, never its id (see TaskConfig).

Relative paths are resolved against the directory that holds the tasks file, so a tasks file can
travel with its data (`data/demo/vlbert_tasks.yml`). Paths are only checked when a task is used
(`TaskConfig.require`), so a file listing tasks whose data you do not have still loads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml


class TaskConfigError(ValueError):
    """A problem with the tasks file or a task id; the message is one line that names it."""


# The `type` values a tasks file may name and the `loss` values each admits (REFERENCE 2): the
# three types of the seed and the four 12-in-1 adds (REFERENCE 5). Which of them can run is the
# registry's business (vilbert.tasks.registry.TASK_TYPES); a file naming the others still loads.
# 12-in-1's file gives VL-binary-classifier both losses (NLVR2 BCE, Foil cross-entropy).
TYPE_LOSSES = {
    "VL-classifier": ("BCEWithLogitLoss",),
    "VL-logit": ("CrossEntropyLoss",),
    "V-logit": ("BCEWithLogitLoss",),
    "VL-classifier-GQA": ("BCEWithLogitLoss",),
    "VL-binary-classifier": ("BCEWithLogitLoss", "CrossEntropyLoss"),
    "VL-tri-classifier": ("BCEWithLogitLoss",),
    "V-logit-mc": ("BCEWithLogitLoss",),
}

# 12-in-1's `process` values: how its training loop reshapes a task's batch. Our readers shape their
# own batches, so the field is only checked and kept.
PROCESSES = ("normal", "dialog", "expand", "retrieval", "nlvr")

# The row of 12-in-1's 20-row task-token table that each of its tasks was trained with: its TASK<n>
# key (= task_id) in vilbert-multi-task's vilbert_tasks.yml. A task's `task_token` defaults to the
# row of its name, whatever its `task_id` (the seed's file numbers VCR 6-7, Flickr30k 9, RefCOCO+ 11).
TASK_TOKEN_BY_NAME = {
    "VQA": 1, "GenomeQA": 2, "VisualDialog": 3, "Visual7w": 4, "VCR_Q-A": 5, "VCR_QA-R": 6,
    "RetrievalCOCO": 7, "RetrievalFlickr30k": 8, "refcoco": 9, "refcoco+": 10, "refcocog": 11,
    "NLVR2": 12, "VisualEntailment": 13, "GuessWhat": 14, "GQA": 15, "Foil": 16, "GuessWhatPointing": 17,
    "FlickrGrounding": 18,
}

# Which annotation reader a task name uses when its entry has no `reader` field. The names are
# the originals'; a new task whose annotations share a format only needs `reader:` in its entry.
READER_BY_NAME = {
    "VQA": "vqa",
    "VCR_Q-A": "vcr_q2a",
    "VCR_QA-R": "vcr_qa2r",
    "RetrievalFlickr30k": "retrieval",
    "RetrievalCOCO": "retrieval",
    "refcoco+": "refer",
    "refcoco": "refer",
    "refgoogle": "refer",
    "NLVR2": "nlvr2",
    "VisualEntailment": "snli_ve",
    "GQA": "gqa",
    "refcocog": "refer_umd",  # refer toolkit, refs(umd).p
    "GenomeQA": "genome_qa",
    "Foil": "foil",
    "FlickrGrounding": "flickr_grounding",
    "VisualDialog": "visdial",
    "Visual7w": "visual7w_pointing",
    "GuessWhat": "guesswhat",
    "GuessWhatPointing": "guesswhat_pointing",
}


@dataclass
class TaskConfig:
    """One entry of the tasks file. Field names are the originals' (REFERENCE 5)."""

    task_id: int  # the id `--tasks` selects (vlbert_tasks.yml: 1 = VQA, 6/7 = VCR, 9 = Flickr30k, 11 = RefCOCO+)
    key: str  # the entry's key in the file, e.g. "TASK1"
    name: str  # also the folder of refer-toolkit data under dataroot (e.g. "refcoco+")
    type: str  # "VL-classifier" | "VL-logit" | "V-logit" | 12-in-1's: selects head, loss and prediction
    loss: str  # kept for the originals' files; must be one `type` admits (TYPE_LOSSES)
    dataroot: Path  # annotations (and cache/) live here
    features_h5path1: Path  # region-feature store (detections); the name is the originals'
    features_h5path2: Optional[Path]  # ground-truth box store (VCR, RefCOCO+), or None ('')
    train_annotations_jsonpath: Optional[Path]  # None ('') = the reader's file under dataroot
    val_annotations_jsonpath: Optional[Path]
    max_seq_length: int  # tokens, [CLS] and [SEP]s included
    max_region_num: int  # regions, the global region (row 0) included
    batch_size: int
    eval_batch_size: int  # defaults to batch_size (the originals' VCR entries have none)
    train_split: str
    val_split: str
    lr: float
    num_epoch: int
    reader: str  # annotation format: "vqa", "vcr_q2a", "vcr_qa2r", "refer", "retrieval", ...
    # The row of the task-token table (--task_specific_tokens) this task uses: the field
    # `task_token`, else 12-in-1's row for the task's name (TASK_TOKEN_BY_NAME), else None (an
    # error only when task tokens are on). Not the task_id: ids differ between task files.
    task_token: Optional[int]
    process: Optional[str]  # 12-in-1's batch layout (PROCESSES); read and kept, not used
    source: Path  # the tasks file this entry came from (for error messages)

    def describe(self) -> str:
        return f"{self.key} ({self.name}) in {self.source}"

    def require(self, path: Optional[Path], field: str) -> Path:
        """Return `path` if it exists, else raise a one-line error naming the task and field."""
        if path is None:
            raise TaskConfigError(f"{self.describe()}: field '{field}' is empty but this task needs it")
        if not Path(path).exists():
            raise TaskConfigError(f"{self.describe()}: {field} not found: {path}")
        return Path(path)

    def annotations_for(self, split: str) -> Optional[Path]:
        """The annotation file the YAML names for `split` (train_split / val_split), or None."""
        if split == self.train_split and self.train_annotations_jsonpath is not None:
            return self.train_annotations_jsonpath
        if split == self.val_split and self.val_annotations_jsonpath is not None:
            return self.val_annotations_jsonpath
        return None


_REQUIRED = (
    "name", "type", "loss", "dataroot", "features_h5path1", "features_h5path2",
    "train_annotations_jsonpath", "val_annotations_jsonpath", "max_seq_length", "max_region_num",
    "batch_size", "train_split", "val_split", "lr", "num_epoch",
)
_OPTIONAL = ("task_id", "eval_batch_size", "reader", "task_token", "process")
# Fields of 12-in-1's file that nothing reads (its refcocog entry's start_iteration): checked, dropped.
_IGNORED = ("start_iteration",)
_PATHS = ("dataroot", "features_h5path1")
_OPTIONAL_PATHS = ("features_h5path2", "train_annotations_jsonpath", "val_annotations_jsonpath")
_INTS = ("max_seq_length", "max_region_num", "batch_size", "eval_batch_size", "num_epoch", "task_id", "task_token",
         "start_iteration")
_NON_NEGATIVE = ("task_id", "task_token", "start_iteration")


def _number(value, kind, where: str):
    # PyYAML reads `4e-5` (no dot) as a string, so numbers given as strings are accepted too.
    if isinstance(value, bool):
        raise TaskConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise TaskConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is int and float(value) != number:
        raise TaskConfigError(f"{where} must be an integer, got {value!r}")
    return number


def _parse_entry(key: str, entry, source: Path) -> TaskConfig:
    where = f"{source}: {key}"
    if not isinstance(entry, dict):
        raise TaskConfigError(f"{where} must be a mapping of fields, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL) - set(_IGNORED), key=str)
    if unknown:
        raise TaskConfigError(f"{where}: unknown field {unknown[0]!r}")
    missing = [field for field in _REQUIRED if field not in entry]
    if missing:
        raise TaskConfigError(f"{where}: missing field '{missing[0]}'")

    base = source.parent
    values = dict(entry)
    for field in _INTS:
        if field in values:
            values[field] = _number(values[field], int, f"{where}.{field}")
            if field in _NON_NEGATIVE:
                if values[field] < 0:
                    raise TaskConfigError(f"{where}.{field} must not be negative, got {values[field]}")
            elif values[field] <= 0:
                raise TaskConfigError(f"{where}.{field} must be positive, got {values[field]}")
    for field in _IGNORED:
        values.pop(field, None)
    values["lr"] = _number(values["lr"], float, f"{where}.lr")
    if not math.isfinite(values["lr"]) or values["lr"] <= 0:
        raise TaskConfigError(f"{where}.lr must be a positive number, got {values['lr']!r}")
    for field in ("name", "type", "loss", "train_split", "val_split", "reader", "process"):
        if field in values and not isinstance(values[field], str):
            raise TaskConfigError(f"{where}.{field} must be a string, got {values[field]!r}")
    for field in _PATHS + _OPTIONAL_PATHS:
        value = values[field]
        if value is None or value == "":
            if field in _PATHS:
                raise TaskConfigError(f"{where}.{field} must name a path, got {value!r}")
            values[field] = None
            continue
        if not isinstance(value, str):
            raise TaskConfigError(f"{where}.{field} must be a path string, got {value!r}")
        path = Path(value).expanduser()
        values[field] = path if path.is_absolute() else base / path

    if not re.fullmatch(r"[^/\\]+", values["name"]) or values["name"] in (".", ".."):
        # The name is a folder under dataroot (refer) and part of output file names.
        raise TaskConfigError(f"{where}.name must be a plain name (no '/', not '..'), got {values['name']!r}")
    if values["type"] not in TYPE_LOSSES:
        raise TaskConfigError(f"{where}.type: unknown task type {values['type']!r} (known: {', '.join(TYPE_LOSSES)})")
    if values["loss"] not in TYPE_LOSSES[values["type"]]:
        raise TaskConfigError(
            f"{where}.loss: {values['type']} tasks use {' or '.join(TYPE_LOSSES[values['type']])}, got {values['loss']!r}"
        )
    if values.get("process") not in (None,) + PROCESSES:
        raise TaskConfigError(f"{where}.process: unknown value {values['process']!r} (known: {', '.join(PROCESSES)})")
    values.setdefault("process", None)
    values.setdefault("task_token", TASK_TOKEN_BY_NAME.get(values["name"]))
    match = re.fullmatch(r"TASK(\d+)", key)
    if "task_id" not in values:
        if match is None:
            raise TaskConfigError(f"{where}: the key must be TASK<id> or the entry must have a 'task_id' field")
        values["task_id"] = int(match.group(1))
    values.setdefault("eval_batch_size", values["batch_size"])
    if "reader" not in values:
        if values["name"] not in READER_BY_NAME:
            raise TaskConfigError(
                f"{where}: no reader is known for task name {values['name']!r}; "
                f"add 'reader: <one of {', '.join(sorted(set(READER_BY_NAME.values())))}>'"
            )
        values["reader"] = READER_BY_NAME[values["name"]]
    return TaskConfig(key=key, source=source, **values)


def load_task_configs(path: Union[str, Path]) -> dict[int, TaskConfig]:
    """Read a tasks file -> {task id: TaskConfig}, in file order."""
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise TaskConfigError(f"tasks file not found: {source}")
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise TaskConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or not data:
        raise TaskConfigError(f"{source}: expected a mapping of TASK<id> entries")
    configs: dict[int, TaskConfig] = {}
    for key, entry in data.items():
        if not str(key).isprintable():  # every message names the key: keep them one line
            raise TaskConfigError(f"{source}: entry key {str(key)!r} is not a printable name")
        config = _parse_entry(str(key), entry, source)
        if config.task_id in configs:
            raise TaskConfigError(
                f"{source}: task id {config.task_id} is used by both {configs[config.task_id].key} and {key}"
            )
        configs[config.task_id] = config
    return configs


def parse_task_ids(spec: Union[str, int, list]) -> list[int]:
    """`--tasks` value -> task ids, in order, without repeats.

    Ids are separated by commas or dashes: "1,6-7,9" -> [1, 6, 7, 9]. A dash separates ids as in
    the originals (`--tasks 1-2-3` meant tasks 1, 2 and 3), so "6-7" selects 6 and 7 and "1-11"
    selects 1 and 11, not a range.
    """
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return list(dict.fromkeys(i for item in spec for i in parse_task_ids(item)))
    text = str(spec).strip()
    parts = re.split(r"[,\-]", text) if text else []
    if not parts or any(not part.strip().isdigit() for part in parts):
        raise TaskConfigError(f"--tasks: expected task ids like '1,6-7,9', got {spec!r}")
    return list(dict.fromkeys(int(part) for part in parts))


def select_tasks(configs: dict[int, TaskConfig], spec) -> dict[int, TaskConfig]:
    """The configs `spec` names (see parse_task_ids); an unknown id is a one-line error."""
    selected = {}
    for task_id in parse_task_ids(spec):
        if task_id not in configs:
            source = next(iter(configs.values())).source if configs else "the tasks file"
            known = ", ".join(str(i) for i in configs)
            raise TaskConfigError(f"unknown task id {task_id} (tasks in {source}: {known})")
        selected[task_id] = configs[task_id]
    return selected


def replace(config: TaskConfig, **changes) -> TaskConfig:
    """A copy of `config` with some fields changed (e.g. a smaller batch for a test)."""
    return dataclasses.replace(config, **changes)
