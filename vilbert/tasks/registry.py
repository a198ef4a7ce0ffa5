"""Task types and annotation readers: what a task id turns into.

A task is an entry of the tasks file (TaskConfig) bound to
- its task type (the YAML `type`): which ViLBertForVLTasks head it reads and its loss;
- its reader (the YAML `reader`, or the default for its name): the dataset class for training,
  the one for evaluation, and the evaluator that turns predictions into metrics and result files.

    tasks = build_tasks("1,6-7", "vlbert_tasks.yml")           # {task id: Task}
    task = tasks[1]
    train = task.dataset(task.config.train_split, tokenizer)
    loader = task.loader(train, train=True, num_workers=2, seed=0)
    out = model(**model_inputs(batch), heads={task.head})
    loss = task.loss(out, batch) * task.loss_scale              # scale = lr / smallest lr
    evaluator = task.evaluator(val_dataset)

Adding a task: an entry in the tasks file; if its annotations are in a new format, one dataset
class (see vilbert/data/vqa.py for the pattern) and one `register_reader(...)` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

import torch

from vilbert.tasks.config import TYPE_LOSSES, TaskConfig, TaskConfigError, load_task_configs, select_tasks
from vilbert.tasks.losses import (label_cross_entropy_loss, top_candidate_score, top_label_score, top_option_score,
                                  top_region_score, v_logit_loss, v_logit_mc_loss, vl_classifier_loss, vl_label_loss,
                                  vl_logit_loss)


@dataclass(frozen=True)
class TaskType:
    """A task type of the originals: the head it reads, the loss on that head's output, and the
    per-sample score (B,) a training batch logs as its running accuracy.

    `loss` is the loss of the first `loss` name the tasks file admits for the type (TYPE_LOSSES);
    `other_losses` holds, by name, those of the others it admits (12-in-1 gives VL-binary-classifier
    both BCEWithLogitLoss and CrossEntropyLoss). A task's loss is picked by its `loss` field.
    """

    name: str
    head: str  # attribute of the ViLBertForVLTasks output (and the name for its `heads=` argument)
    loss: Callable[[torch.Tensor, dict], torch.Tensor]
    train_score: Callable[[torch.Tensor, dict], torch.Tensor]
    other_losses: Mapping[str, Callable[[torch.Tensor, dict], torch.Tensor]] = field(default_factory=dict)

    def loss_for(self, loss_name: str) -> Optional[Callable[[torch.Tensor, dict], torch.Tensor]]:
        """The loss function of a tasks-file `loss` value, or None when this type has none for it."""
        if loss_name == TYPE_LOSSES[self.name][0]:
            return self.loss
        return self.other_losses.get(loss_name)


# 12-in-1's types read the extra heads ViLBertForVLTasks builds with multitask_heads=True.
TASK_TYPES = {
    "VL-classifier": TaskType("VL-classifier", "vil_prediction", vl_classifier_loss, top_label_score),
    "VL-logit": TaskType("VL-logit", "vil_logit", vl_logit_loss, top_option_score),
    "V-logit": TaskType("V-logit", "vision_logit", v_logit_loss, top_region_score),
    # GQA: its own 1533-answer classifier, VQA's loss (one-hot targets).
    "VL-classifier-GQA": TaskType("VL-classifier-GQA", "vil_prediction_gqa", vl_classifier_loss, top_label_score),
    # NLVR2: one row per image of a pair; the head reads the two rows' fused vectors side by side.
    # Foil (one image) gives its image twice; its file names CrossEntropyLoss.
    "VL-binary-classifier": TaskType("VL-binary-classifier", "vil_binary_prediction", vl_label_loss, top_label_score,
                                     {"CrossEntropyLoss": label_cross_entropy_loss}),
    "VL-tri-classifier": TaskType("VL-tri-classifier", "vil_tri_prediction", vl_label_loss, top_label_score),
    # Visual7W / GuessWhat?! pointing: the region head, read at the item's candidate boxes only.
    "V-logit-mc": TaskType("V-logit-mc", "vision_logit", v_logit_mc_loss, top_candidate_score),
}
MULTITASK_HEADS = ("vil_prediction_gqa", "vil_binary_prediction", "vil_tri_prediction")


@dataclass(frozen=True)
class Reader:
    """An annotation format: how to build its datasets and evaluate its predictions.

    train_dataset / eval_dataset: (config, split, tokenizer) -> Dataset. eval_dataset serves
    every split but the training one (retrieval scores all pairs there; the others reuse the
    training class). evaluator: (dataset) -> Evaluator. metrics: the metric names it reports.
    """

    name: str
    train_dataset: Callable
    eval_dataset: Callable
    evaluator: Callable
    metrics: tuple[str, ...]


READERS: dict[str, Reader] = {}
_builtins_registered = False


def register_reader(name: str, *, train_dataset, evaluator, metrics, eval_dataset=None) -> Reader:
    """Add (or replace) an annotation reader; tasks name it in their `reader` field."""
    _register_builtin_readers()
    reader = Reader(name, train_dataset, eval_dataset or train_dataset, evaluator, tuple(metrics))
    READERS[name] = reader
    return reader


def _register_builtin_readers() -> None:
    # Deferred to first use: the readers import the feature store and the tokenizer machinery.
    # register_reader calls this first, so a user's reader of the same name replaces a built-in.
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    from vilbert.data.flickr_grounding import FlickrGroundingDataset
    from vilbert.data.foil import FoilDataset
    from vilbert.data.genome_qa import GenomeQADataset
    from vilbert.data.gqa import GQADataset
    from vilbert.data.guesswhat import GuessWhatDataset, GuessWhatPointingDataset
    from vilbert.data.nlvr2 import NLVR2Dataset
    from vilbert.data.refer import ReferDataset
    from vilbert.data.retrieval import RetrievalEvalDataset, RetrievalTrainDataset
    from vilbert.data.snli_ve import SNLIVEDataset
    from vilbert.data.vcr import VCRDataset
    from vilbert.data.visdial import VisDialEvalDataset, VisDialTrainDataset
    from vilbert.data.visual7w import Visual7wPointingDataset
    from vilbert.data.vqa import VQADataset
    from vilbert.tasks.metrics import (CandidateEvaluator, ReferEvaluator, RetrievalEvaluator, TopLabelEvaluator,
                                       VCREvaluator, VisDialEvaluator, VQAEvaluator)

    def vcr(mode):  # one dataset class, two input layouts
        return lambda config, split, tokenizer: VCRDataset(config, split, tokenizer, mode=mode)

    def refer_umd(config, split, tokenizer):  # RefCOCOg: the toolkit's UMD partition, refs(umd).p
        return ReferDataset(config, split, tokenizer, split_by="umd")

    builtins = [
        Reader("vqa", VQADataset, VQADataset, VQAEvaluator, ("accuracy",)),
        # Q->AR needs both VCR tasks' predictions: metrics.joint_metrics adds it when both ran.
        Reader("vcr_q2a", vcr("q2a"), vcr("q2a"), VCREvaluator, ("q2a",)),
        Reader("vcr_qa2r", vcr("qa2r"), vcr("qa2r"), VCREvaluator, ("qa2r",)),
        Reader("refer", ReferDataset, ReferDataset, ReferEvaluator, ("accuracy",)),
        Reader("retrieval", RetrievalTrainDataset, RetrievalEvalDataset, RetrievalEvaluator, ("R@1", "R@5", "R@10")),
        Reader("snli_ve", SNLIVEDataset, SNLIVEDataset, TopLabelEvaluator, ("accuracy",)),
        Reader("nlvr2", NLVR2Dataset, NLVR2Dataset, TopLabelEvaluator, ("accuracy",)),
        Reader("gqa", GQADataset, GQADataset, TopLabelEvaluator, ("accuracy",)),
        Reader("genome_qa", GenomeQADataset, GenomeQADataset, VQAEvaluator, ("accuracy",)),
        Reader("refer_umd", refer_umd, refer_umd, ReferEvaluator, ("accuracy",)),
        Reader("foil", FoilDataset, FoilDataset, TopLabelEvaluator, ("accuracy",)),
        Reader("flickr_grounding", FlickrGroundingDataset, FlickrGroundingDataset, ReferEvaluator, ("accuracy",)),
        # The first metric picks a task's best checkpoint: MRR is there whenever answers are known.
        Reader("visdial", VisDialTrainDataset, VisDialEvalDataset, VisDialEvaluator,
               ("MRR", "R@1", "R@5", "R@10", "mean_rank", "NDCG")),
        Reader("visual7w_pointing", Visual7wPointingDataset, Visual7wPointingDataset, CandidateEvaluator,
               ("accuracy",)),
        Reader("guesswhat", GuessWhatDataset, GuessWhatDataset, TopLabelEvaluator, ("accuracy",)),
        Reader("guesswhat_pointing", GuessWhatPointingDataset, GuessWhatPointingDataset, CandidateEvaluator,
               ("accuracy",)),
    ]
    for reader in builtins:
        READERS[reader.name] = reader


def get_reader(name: str) -> Reader:
    _register_builtin_readers()
    if name not in READERS:
        raise TaskConfigError(f"unknown reader {name!r} (known: {', '.join(sorted(READERS))})")
    return READERS[name]


@dataclass
class Task:
    """One selected task: its config, type, reader, and its loss scale in this selection."""

    config: TaskConfig
    type: TaskType
    reader: Reader
    loss_scale: float = 1.0  # task lr / smallest lr of the selected tasks (REFERENCE 2)

    @property
    def id(self) -> int:
        return self.config.task_id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def head(self) -> str:
        """The ViLBertForVLTasks output this task reads: pass `heads={task.head}` to the model."""
        return self.type.head

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.reader.metrics

    def dataset(self, split: str, tokenizer):
        """The dataset of `split`: the training dataset for config.train_split, else the eval one."""
        build = self.reader.train_dataset if split == self.config.train_split else self.reader.eval_dataset
        return build(self.config, split, tokenizer)

    def loader(self, dataset, *, train: bool, num_workers: int = 0, seed: int = 0,
               batch_size: Optional[int] = None, distributed: Optional[bool] = None):
        """DataLoader with the shared collate. batch_size (per process) defaults to the config's
        batch_size (training) or eval_batch_size; training shuffles and drops the last partial batch."""
        from vilbert.data.collate import make_loader

        if batch_size is None:
            batch_size = self.config.batch_size if train else self.config.eval_batch_size
        return make_loader(dataset, batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                           num_workers=num_workers, seed=seed, distributed=distributed)

    def head_output(self, output) -> torch.Tensor:
        """This task's head output from a ViLBertForVLTasks result (object or dict)."""
        value = output[self.head] if isinstance(output, dict) else getattr(output, self.head)
        if value is None:
            raise ValueError(f"task {self.id} ({self.name}): the model output has no {self.head}; "
                             f"call the model with heads={{{self.head!r}}}")
        return value

    def loss(self, output, batch: dict) -> torch.Tensor:
        """The unscaled task loss of a training batch (multiply by `loss_scale` in multi-task runs)."""
        return self.type.loss_for(self.config.loss)(self.head_output(output), batch)

    def evaluator(self, dataset):
        """A fresh evaluator for `dataset` (see vilbert.tasks.metrics)."""
        return self.reader.evaluator(dataset)

    def result_file(self, output_dir: Union[str, Path], split: str) -> Path:
        """Where the official result records of this task and split go."""
        return Path(output_dir) / f"{split}_{self.name}_result.json"


def build_task(config: TaskConfig, loss_scale: float = 1.0) -> Task:
    """A runnable task. A tasks file may name types and readers that do not exist here yet (12-in-1's
    file): selecting such a task is a one-line error naming what is missing."""
    _register_builtin_readers()
    missing = []
    if config.type not in TASK_TYPES:
        missing.append(f"unsupported task type {config.type!r} (supported: {', '.join(TASK_TYPES)})")
    elif TASK_TYPES[config.type].loss_for(config.loss) is None:
        missing.append(f"no {config.loss} for task type {config.type}")
    if config.reader not in READERS:
        missing.append(f"unknown reader {config.reader!r} (registered: {', '.join(sorted(READERS))})")
    if missing:
        raise TaskConfigError(f"{config.describe()} cannot run here yet: {'; '.join(missing)}")
    return Task(config, TASK_TYPES[config.type], READERS[config.reader], loss_scale)


def build_tasks(spec, tasks_file: Union[str, Path] = "vlbert_tasks.yml") -> dict[int, Task]:
    """Tasks selected by `spec` ("1,6-7", a list of ids, ...) from a tasks file, with loss scales."""
    configs = select_tasks(load_task_configs(tasks_file), spec)
    if not configs:
        raise TaskConfigError("no tasks selected")
    smallest_lr = min(c.lr for c in configs.values())
    return {task_id: build_task(c, c.lr / smallest_lr) for task_id, c in configs.items()}
