"""Preflight check of a run's data: a few seconds before a run instead of a crash hours into it.

    python -m vilbert.check --tasks 1-6 [--tasks_config vlbert_tasks.yml] [--config_file CONFIG] [--full]
    python -m vilbert.check --features STORE [STORE ...] [--config_file CONFIG] [--full]

For each selected task, its training and validation splits are read by the task's own reader
(vilbert.tasks.registry), so the files exist and parse exactly as training reads them; every image
id of the annotations is looked up in the task's feature store(s); a sample of items is built end to
end; and for the answer-classifier tasks the answer vocabulary must cover the training answers. For
each feature store a sample of records (`--full`: every record, with a progress bar) is decoded and
checked: the feature width against the config's v_feature_size, NaN or inf in features, boxes and
class distributions, boxes inside their image. It prints counts and the first few offenders of each
problem, and exits with status 1 when there is a problem (2 when the task file or flags are wrong).

The scripts call `preflight(args, dist)` first thing: it checks the command-line values (always:
bad values, output names that would leave --output_dir) and the data (unless --skip_check), and
turns the first problem into a one-line SetupError.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

SAMPLE_RECORDS = 500  # store records decoded per store without --full
SAMPLE_ITEMS = 16  # dataset items built end to end per split
SAMPLE_CAPTION_IDS = 2000  # pretraining image ids looked up without --full
MAX_EXAMPLES = 5  # offenders printed per problem
MAX_UNANSWERED = 0.5  # share of training items without an answer in the vocabulary that is a problem
BOX_TOLERANCE = 1.0  # pixels a box may overhang its image (detectors clip to W or W - 1)


@dataclass
class Problem:
    """One kind of problem: how often it was seen and the first offenders (one line each)."""

    count: int = 0
    examples: list = field(default_factory=list)


@dataclass
class CheckReport:
    """What a check found: informational lines, and problems with a count and the first offenders."""

    lines: list = field(default_factory=list)
    problems: dict = field(default_factory=dict)  # description -> Problem

    def note(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, what: str, offender) -> None:
        entry = self.problems.setdefault(what, Problem())
        entry.count += 1
        if len(entry.examples) < MAX_EXAMPLES:
            text = " ".join(str(offender).split())  # exception texts may span lines; the report may not
            entry.examples.append(text if len(text) <= 300 else text[:297] + "...")

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self, what: str) -> str:
        entry = self.problems[what]
        shown = "; ".join(entry.examples) + ("; ..." if entry.count > len(entry.examples) else "")
        return f"{what}: {entry.count} (first: {shown})"

    def first_problem(self) -> str:
        """The first problem as one line, with a hint at the full report."""
        more = len(self.problems) - 1
        return (self.describe(next(iter(self.problems)))
                + (f" [and {more} more problem(s)]" if more else "")
                + "; run `python -m vilbert.check` for the full report, or pass --skip_check")

    def format(self) -> str:
        out = list(self.lines)
        out += [f"PROBLEM {self.describe(what)}" for what in self.problems]
        out.append("OK: no problem found" if self.ok else f"{len(self.problems)} problem(s) found")
        return "\n".join(out)


def record_problems(record, feature_size: Optional[int] = None, class_size: Optional[int] = None) -> list[str]:
    """What is wrong with one decoded store record (vilbert.features.store.RawRecord), as problem
    descriptions (the caller names the record)."""
    from vilbert.features.store import nonfinite_fields

    found = [f"records whose {name} contain NaN or inf"
             for name in nonfinite_fields(record.boxes, record.features, record.cls_prob)]
    width = record.features.shape[1]
    if feature_size is not None and width != feature_size:
        found.append(f"records with {width}-wide features, but the config's v_feature_size is {feature_size}")
    if class_size is not None:
        if record.cls_prob is None:
            found.append("records without cls_prob, the class distributions --visual_target 0 needs")
        elif record.cls_prob.shape[1] != class_size:
            found.append(f"records with {record.cls_prob.shape[1]}-wide cls_prob, but the config's v_target_size "
                         f"is {class_size}")
    boxes = np.asarray(record.boxes, dtype=np.float64)
    finite = np.isfinite(boxes).all(axis=1)
    h, w = record.image_h + BOX_TOLERANCE, record.image_w + BOX_TOLERANCE
    outside = finite & ((boxes[:, 0] < -BOX_TOLERANCE) | (boxes[:, 1] < -BOX_TOLERANCE)
                        | (boxes[:, 2] > w) | (boxes[:, 3] > h))
    inverted = finite & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if outside.any():
        found.append("records with boxes outside their image")
    if inverted.any():
        found.append("records with boxes whose x2 < x1 or y2 < y1")
    return found


def check_store(path, report: CheckReport, *, feature_size: Optional[int] = None, class_size: Optional[int] = None,
                full: bool = False, sample: int = SAMPLE_RECORDS) -> None:
    """Decode the first `sample` records of each store at `path` (a store, a folder of shards or a
    list; every record with `full`, with a progress bar) and add their problems to `report`."""
    from tqdm import tqdm

    from vilbert.features.reader import find_stores
    from vilbert.features.store import FeatureStoreError, decode_record, environment

    try:
        stores = find_stores(path)
    except FeatureStoreError as exc:
        report.problem("feature stores that cannot be opened", exc)
        return
    for store in stores:
        checked = 0
        with environment(store).begin(buffers=True) as txn:
            total = txn.stat()["entries"]
            bar = tqdm(total=total, desc=f"check {store.name}", unit="rec", disable=not full, dynamic_ncols=True)
            for key, value in txn.cursor():
                if not full and checked >= sample:
                    break
                name = bytes(key).decode(errors="replace")
                checked += 1
                bar.update(1)
                try:
                    record = decode_record(name, bytes(value), str(store))
                except FeatureStoreError as exc:
                    report.problem(f"unreadable records in {store}", exc)
                    continue
                for what in record_problems(record, feature_size, class_size):
                    report.problem(f"{what} ({store})", f"key {name!r}")
            bar.close()
        scope = "all" if full or checked == total else f"a sample of {checked}"
        report.note(f"feature store {store}: {total} records, {scope} checked")


def annotation_image_ids(dataset) -> list:
    """The image ids a task dataset's annotations name (image pairs flattened), for the readers that
    keep them as `image_ids` (VQA, VCR, retrieval, GQA, NLVR2, ...) or in `entries` (refer, pointing)."""
    ids = getattr(dataset, "image_ids", None)
    if ids is None:
        entries = getattr(dataset, "entries", [])
        ids = [e.get("image_id") if isinstance(e, dict) else getattr(e, "image_id", None) for e in entries]
        ids = [i for i in ids if i is not None]
    flat = []
    for image_id in ids:
        flat.extend(image_id if isinstance(image_id, (list, tuple)) else [image_id])
    return list(dict.fromkeys(str(i) for i in flat))


def unanswered_items(dataset) -> Optional[list[int]]:
    """Indices of the training items whose answers are all outside the answer vocabulary, for the
    readers with one (VQA: `targets`, GQA: `labels`); None for the others."""
    if not hasattr(dataset, "label2ans"):
        return None
    targets, labels = getattr(dataset, "targets", None), getattr(dataset, "labels", None)
    try:
        if targets is not None:  # (labels, scores) per item
            return [i for i, (item_labels, _) in enumerate(targets) if not len(item_labels)]
        return None if labels is None else [i for i, label in enumerate(labels) if label < 0]
    except (TypeError, ValueError):  # a reader of another layout: not checked
        return None


def _item_name(dataset, index: int) -> str:
    for attribute in ("question_ids", "annot_ids", "pair_ids", "identifiers"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) > index:
            return f"{attribute[:-1]} {values[index]}"
    return f"item {index}"


def check_split(task, split: str, tokenizer, report: CheckReport, *, sample: int = SAMPLE_ITEMS) -> None:
    """One split of a task: read by its reader, image ids in its stores, a sample of items built."""
    where = f"task {task.id} ({task.name}) {split}"
    try:
        dataset = task.dataset(split, tokenizer)
    except Exception as exc:  # any reader failure is the finding: the report names it
        report.problem(f"{where}: annotations or stores that cannot be read", f"{type(exc).__name__}: {exc}")
        return
    ids = annotation_image_ids(dataset)
    report.note(f"{where}: {len(dataset)} items, {len(ids)} images")
    stores = ((getattr(dataset, "features", None), "features_h5path1"),
              (getattr(dataset, "gt_features", None), "features_h5path2"))
    for reader, field_name in stores:
        if reader is None:
            continue
        for image_id in ids:
            if image_id not in reader:
                report.problem(f"{where}: image ids without features in {field_name}", image_id)
    for index in np.random.default_rng(0).permutation(len(dataset))[:sample]:
        try:
            dataset[int(index)]
        except Exception as exc:  # a sample that fails to build is what the check looks for
            report.problem(f"{where}: items that fail to load", f"{_item_name(dataset, int(index))}: {exc}")
    if split == task.config.train_split:
        unanswered = unanswered_items(dataset)
        if unanswered is not None and len(dataset):
            share = len(unanswered) / len(dataset)
            report.note(f"{where}: {len(dataset.label2ans)} answers in the vocabulary; {len(unanswered)} items "
                        f"({100 * share:.1f}%) have none of them")
            if share > MAX_UNANSWERED:
                what = (f"{where}: more than {100 * MAX_UNANSWERED:g}% of the training items have no answer in "
                        "the answer vocabulary (a vocabulary of another dataset or split?)")
                for index in unanswered:
                    report.problem(what, _item_name(dataset, index))


def check_tasks(spec, tasks_config="vlbert_tasks.yml", *, model_config=None, tokenizer=None,
                bert_model: Optional[str] = None, splits=("train", "val"), full: bool = False,
                report: Optional[CheckReport] = None) -> CheckReport:
    """Check the data of the tasks `spec` selects ("1-6", see vilbert.tasks.parse_task_ids).

    splits: "train" (each task's train_split), "val" (its val_split) or a split name for every task.
    model_config: a ViLBertConfig whose v_feature_size the stores must match (None: not checked).
    tokenizer (or bert_model, a BERT directory): the readers tokenise their texts, filling the
    same caches training reads. A bad task file or id raises TaskConfigError.
    """
    from vilbert.tasks.registry import build_tasks

    report = report if report is not None else CheckReport()
    tasks = build_tasks(spec, tasks_config)
    if tokenizer is None:
        from vilbert.tokenization import load_tokenizer

        tokenizer = load_tokenizer(bert_model or "bert-base-uncased")
    feature_size = None if model_config is None else model_config.v_feature_size
    stores_seen = set()
    for task in tasks.values():
        named = {"train": task.config.train_split, "val": task.config.val_split}
        for split in dict.fromkeys(named.get(split, split) for split in splits):
            check_split(task, split, tokenizer, report)
        for path in (task.config.features_h5path1, task.config.features_h5path2):
            if path is not None and Path(path).exists() and str(path) not in stores_seen:
                stores_seen.add(str(path))
                check_store(path, report, feature_size=feature_size, full=full)
    return report


def check_pretraining(paths, *, model_config=None, visual_target: int = 0, full: bool = False,
                      report: Optional[CheckReport] = None) -> CheckReport:
    """Check Conceptual Captions data (a vilbert.data.concap.ConcapPaths): caption files parse, their
    images are in the stores (a sample of ids; all with `full`), the store records are sound."""
    from vilbert.data.concap import read_captions
    from vilbert.features import FeatureReader
    from vilbert.features.store import FeatureStoreError

    report = report if report is not None else CheckReport()
    try:
        reader = FeatureReader(paths.features)
    except FeatureStoreError as exc:
        report.problem("feature stores that cannot be opened", exc)
        reader = None
    for captions_path in (paths.train_captions, paths.val_captions):
        try:
            captions, image_ids = read_captions(captions_path)
        except (FileNotFoundError, ValueError, UnicodeDecodeError) as exc:
            report.problem("caption files that cannot be read", exc)
            continue
        unique = np.unique(image_ids)
        looked_up = unique if full else np.random.default_rng(0).permutation(unique)[:SAMPLE_CAPTION_IDS]
        missing = [i for i in looked_up if reader is not None and str(i) not in reader]
        report.note(f"{captions_path}: {len(captions)} captions of {len(unique)} images; {len(missing)} of "
                    f"{len(looked_up)} image ids looked up have no features")
        if looked_up.size and len(missing) == len(looked_up):
            for image_id in missing:
                report.problem(f"{captions_path}: no looked-up image id has features in {paths.features}", image_id)
    if reader is not None:
        feature_size = None if model_config is None else model_config.v_feature_size
        class_size = None if model_config is None or visual_target != 0 else model_config.v_target_size
        check_store(paths.features, report, feature_size=feature_size, class_size=class_size, full=full)
    return report


# Numeric flags argparse lets through with any value (nan, inf, 0, negatives); flags a script does
# not have, and None values (defaults taken from the tasks file), are skipped.
_POSITIVE_FLAGS = ("learning_rate", "head_learning_rate", "num_train_epochs", "max_grad_norm", "adam_epsilon",
                   "train_iter_multiplier")
_FLAG_MINIMUM = {
    "weight_decay": 0, "bert_lr_scale": 0, "img_weight": 0, "text_prefix_cache_gb": 0, "warmup_proportion": 0,
    "num_workers": 0, "max_steps": 0, "val_subset": 0, "keep_last": 0, "eval_every": 0, "save_every": -1,
    "freeze": -1, "train_batch_size": 1, "eval_batch_size": 1, "batch_size": 1, "gradient_accumulation_steps": 1,
    "log_every": 1, "train_iter_gap": 1,
    "max_region_num": 2, "max_seq_length": 3,  # the global region + a box; [CLS] token [SEP]
}
_FLAG_MAXIMUM = {"warmup_proportion": 1}
# Flags whose value becomes a file or folder name under --output_dir.
_OUTPUT_NAME_FLAGS = ("save_name", "split")


def check_arguments(args: argparse.Namespace) -> None:
    """Command-line values argparse lets through (nan, inf, negative sizes, names with '..'): a
    ValueError naming the flag."""
    from vilbert.data.files import output_path

    for name in (*_POSITIVE_FLAGS, *_FLAG_MINIMUM):
        value = getattr(args, name, None)
        if value is None or isinstance(value, bool):
            continue
        low, high = _FLAG_MINIMUM.get(name), _FLAG_MAXIMUM.get(name)
        if not math.isfinite(value) or (low is None and value <= 0) or (low is not None and value < low) \
                or (high is not None and value > high):
            requirement = ("a positive number" if low is None else f"at least {low}"
                           + (f" and at most {high}" if high is not None else ""))
            raise ValueError(f"--{name} must be {requirement}, got {value}")
    for name in _OUTPUT_NAME_FLAGS:
        value = getattr(args, name, None)
        if value:
            output_path(getattr(args, "output_dir", "."), value, f"--{name}")


def _model_config(args):
    """The config the run's model will have: our checkpoint's own, else --config_file (None when
    neither can be read here: loading the model reports that). A BERT directory's config.json is
    not a ViLBERT config and is passed over."""
    from vilbert.config import ViLBertConfig

    from_pretrained = getattr(args, "from_pretrained", "") or ""
    candidates = [Path(from_pretrained) / "config.json"] if from_pretrained else []
    if getattr(args, "config_file", None):
        candidates.append(Path(args.config_file))
    for path in candidates:
        if path.is_file():
            try:
                return ViLBertConfig.from_json_file(path)
            except ValueError:
                continue
    return None


def preflight(args: argparse.Namespace, dist=None) -> None:
    """The scripts' start-up check (train_tasks.py, eval_tasks.py, train_concap.py): the flag values
    always, the data unless --skip_check (on rank 0, the other ranks wait for its verdict). Raises
    SetupError with one line naming the flag or the first problem found."""
    from vilbert.tasks.config import TaskConfigError
    from vilbert.training.cli import SetupError, build_on_main_first

    try:
        check_arguments(args)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    if getattr(args, "skip_check", False):
        return

    def check():
        if dist is not None and not dist.is_main:
            return
        config = _model_config(args)
        if hasattr(args, "tasks"):
            splits = [getattr(args, "split", None) or "val"] if hasattr(args, "split") else ("train", "val")
            report = check_tasks(args.tasks, args.tasks_config, model_config=config, bert_model=args.bert_model,
                                 splits=splits)
        else:
            from vilbert.data.concap import ConcapPaths

            paths = ConcapPaths.from_dir(args.file_path, args.train_captions, args.val_captions, args.features)
            report = check_pretraining(paths, model_config=config, visual_target=args.visual_target)
        if not report.ok:
            raise ValueError(f"preflight check: {report.first_problem()}")

    if dist is None:
        try:
            check()
        except (TaskConfigError, ValueError) as exc:
            raise SetupError(str(exc)) from None
        return
    build_on_main_first(check, dist, errors=(TaskConfigError, ValueError, FileNotFoundError, RuntimeError))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vilbert.check", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", help="task ids of the tasks file: '1', '6-7', '1,9,11'")
    p.add_argument("--tasks_config", default="vlbert_tasks.yml", help="the tasks file (YAML)")
    p.add_argument("--features", nargs="+", help="check these feature stores alone (no --tasks)")
    p.add_argument("--config_file", default=None,
                   help="model config whose v_feature_size the stores must match (default: not checked)")
    p.add_argument("--bert_model", default="bert-base-uncased",
                   help="tokenizer the readers use (a BERT directory); the same as training's fills its caches")
    p.add_argument("--full", action="store_true", help="check every record of every store (slower, with progress)")
    args = p.parse_args(argv)
    if not args.tasks and not args.features:
        p.error("give --tasks IDS or --features STORE")
    from vilbert.config import ViLBertConfig
    from vilbert.tasks.config import TaskConfigError

    try:
        config = ViLBertConfig.from_json_file(args.config_file) if args.config_file else None
        report = CheckReport()
        if args.tasks:
            check_tasks(args.tasks, args.tasks_config, model_config=config, bert_model=args.bert_model,
                        full=args.full, report=report)
        for store in args.features or ():
            check_store(store, report, feature_size=None if config is None else config.v_feature_size,
                        full=args.full)
    except (TaskConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
