"""Multi-task finetuning and evaluation: the library side of train_tasks.py, eval_tasks.py and
eval_retrieval.py.

    tasks = load_tasks("1-6-7", "vlbert_tasks.yml")            # {task id: Task}, with loss scales
    datasets = build_on_main_first(lambda: build_datasets(tasks, tokenizer, "train"), dist)
    model = load_task_model(ViLBertForVLTasks, "save/pretrain/checkpoints/step-N", ...)
    runs = [TaskRun(task, train_set, val_set, ...) for ...]     # loaders, objective, progress
    while (run := next_task(runs)) is not None:                 # the task furthest behind goes next
        out = train_step(model, run.next_batches(), run.objective, ...)
    evaluator = evaluate_task(model, task, val_set, loader, precision, dist)
    scores = retrieval_scores(model, dataset, ...)              # (captions, images), every pair

Multi-task training (REFERENCE 2 and 5): each optimizer step trains one task on one (global) batch
of its own data; tasks take turns so that each moves through its own schedule at the same pace,
each task keeps its own number of epochs (the originals gave every task the last task's count,
REFERENCE 7), its loss is scaled by task lr / smallest task lr, and it is evaluated at the end of
each of its epochs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vilbert.data.collate import TEXT_KEYS, collate, model_inputs
from vilbert.tasks.config import TaskConfigError
from vilbert.tasks.registry import Task, build_tasks
from vilbert.training.cli import SetupError  # the scripts import it from here too
from vilbert.training import (DistInfo, EvalSampler, Precision, TrainSampler, all_reduce_sum, batches_per_step,
                              broadcast_object, to_device, unwrap_model)

# The model's task-head modules (ViLBertForVLTasks): trained at their own learning rate when
# finetuning (REFERENCE 5: 1e-4). The originals matched the substring "vil_", which left the
# RefCOCO+ head `vision_logit` at the body's rate; every head counts here.
TASK_HEAD_PREFIXES = ("vil_prediction", "vil_logit", "vision_logit", "linguisic_logit",
                      "vil_prediction_gqa", "vil_binary_prediction", "vil_tri_prediction")
NUM_TASK_TOKENS = 20  # rows of 12-in-1's task-token table (vilbert.model.NUM_TASK_TOKENS)


def load_tasks(spec, tasks_config: Union[str, Path]) -> dict[int, Task]:
    """`--tasks` ids ("1-6-7": dashes separate ids, as the originals) -> {task id: Task}."""
    try:
        return build_tasks(spec, tasks_config)
    except TaskConfigError as exc:
        raise SetupError(str(exc)) from None


def run_directory(output_dir: Union[str, Path], tasks: dict[int, Task], save_name: str) -> Path:
    """`<output_dir>/<task names joined by ->_<save_name>`, as the originals name a run's folder,
    so runs of different tasks with one --save_name do not overwrite each other."""
    names = "-".join(task.name for task in tasks.values())
    return Path(output_dir) / (f"{names}_{save_name}" if save_name else names)


def build_on_main_first(build: Callable[[], object], dist: DistInfo):
    """Run `build` on rank 0 first (it fills the token caches and answer vocabularies), then on the
    other ranks, which read those files. An error on rank 0 stops every rank with its message."""
    result, error = None, None
    if dist.is_main:
        try:
            result = build()
        except (TaskConfigError, FileNotFoundError, ValueError, KeyError) as exc:
            error = str(exc)
    error = broadcast_object(error, dist)  # also the barrier after which the caches exist
    if error:
        raise SetupError(error)
    if not dist.is_main:
        result = build()
    return result


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
                    required: Sequence[str] = (), log: Callable[[str], None] = print):
    """A model of `model_class` (ViLBertForVLTasks or ViLBertForPretraining) from any starting point.

    from_pretrained: our checkpoint directory (its own config.json is used: the weights need it), a
    Hugging Face BERT directory or an original .bin/.tar (config from `config_file`), or '' for a
    random init. num_labels: the classifier's answer count; a checkpoint whose classifier has another
    size keeps the rest and starts that head fresh (reported). Other shape mismatches are errors.
    vl_classifier: the VL-classifier head to build when the checkpoint has none ("beta" or
    "12in1"; a checkpoint's own head always wins). required: modules the checkpoint must provide
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
    kwargs = {} if num_labels is None or model_class.__name__ != "ViLBertForVLTasks" else {"num_labels": num_labels}
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


def task_token_row(task: Task) -> int:
    """The row of the 20-row task-token table a task uses with --task_specific_tokens: its
    `task_token` (by default 12-in-1's row for its name), not its --tasks id, so a 12-in-1
    checkpoint gets the token it was trained with from either tasks file. Every path (training,
    evaluation, retrieval scoring) takes its row from here."""
    row = task.config.task_token
    if row is None:
        raise SetupError(f"--task_specific_tokens: {task.config.describe()} has no task-token row "
                         f"(12-in-1 has no task named {task.name!r}); add 'task_token: <0-{NUM_TASK_TOKENS - 1}>' to it")
    if not 0 <= row < NUM_TASK_TOKENS:
        raise SetupError(f"--task_specific_tokens: {task.config.describe()}: task_token {row} is not a "
                         f"row of the {NUM_TASK_TOKENS}-row task-token table")
    return row


def collate_trimmed_text(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The shared collate, then the text columns no row of the batch uses are cut off.

    Texts are padded to max_seq_length by the readers; most are much shorter, and attention cost
    grows with the padded length. No task has per-token targets, so nothing else needs trimming.
    """
    batch = collate(samples)
    length = int(batch["attention_mask"].sum(1).max())
    for key in TEXT_KEYS:
        batch[key] = batch[key][:, :max(length, 1)]
    return batch


def make_loader(dataset: Dataset, sampler, batch_size: int, num_workers: int, pin_memory: bool,
                seed: int = 0) -> DataLoader:
    """A DataLoader in the order of `sampler` (TrainSampler / EvalSampler with keys=False). Its own
    seeded generator leaves the global torch RNG alone, so a resumed run draws the same dropout."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_trimmed_text, pin_memory=pin_memory, generator=generator,
                      drop_last=False)


def _vl_classifier_score(logits, batch):  # (B, L) -> (B,) soft score of the top answer
    return batch["target"].float().gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)


def _vl_logit_score(logits, batch):  # (B*O, 1) -> (B,) 1 when the top option is the right one
    return (logits.view(batch["target"].shape[0], -1).argmax(dim=1) == batch["target"]).float()


def _v_logit_score(logits, batch):  # (B, R, 1) -> (B,) 1 when the top region's target IoU is >= 0.5
    # Training targets are 0 below IoU 0.5 (REFERENCE 4), so a positive target means a hit.
    top = logits.squeeze(-1).argmax(dim=1, keepdim=True)
    return (batch["target"].gather(1, top).squeeze(1) > 0).float()


# How well a training batch went, by task type: a cheap running accuracy for the logs (percent).
TRAIN_SCORES = {"VL-classifier": _vl_classifier_score, "VL-logit": _vl_logit_score, "V-logit": _v_logit_score}


class TaskObjective:
    """One task's loss for vilbert.training.train_step: the task-type loss, weighted by the task's
    loss scale (task lr / smallest task lr), averaged over the samples of the global batch."""

    names = ("loss",)

    def __init__(self, task: Task, task_tokens: bool = False):
        self.task = task
        self.weights = (float(task.loss_scale),)
        self.task_token = task_token_row(task) if task_tokens else None

    def extra_inputs(self, batch: dict) -> dict:
        if self.task_token is None:
            return {}
        rows = batch["input_ids"].shape[0]
        return {"task_tokens": torch.full((rows, 1), self.task_token, dtype=torch.long, device=batch["input_ids"].device)}

    def counts(self, batch: dict) -> torch.Tensor:
        # Every loss is a mean over the batch's samples (items, not the B*options rows).
        target = batch["target"]
        return torch.full((1,), float(target.shape[0]), device=target.device)

    def __call__(self, model, batch: dict):
        out = model(**model_inputs(batch), heads={self.task.head}, **self.extra_inputs(batch))
        loss = self.task.loss(out, batch)
        score = TRAIN_SCORES[self.task.type.name](self.task.head_output(out).detach(), batch)
        stats = {"accuracy": torch.stack([score.sum() * 100, torch.tensor(float(score.shape[0]), device=score.device)])}
        return loss.reshape(1), stats


class TaskRun:
    """One task of a finetuning run: its loaders and objective, and where it is in its schedule.

    global_batch: samples per optimizer step over all ranks and accumulation steps (the YAML's
    batch_size, as the originals divide it by the number of GPUs). num_epochs: this task's own.
    val_subset: validate on the first N validation items only (retrieval: N captions against
    every image), to keep frequent validation cheap; 0 = all.
    """

    def __init__(self, task: Task, train_set: Dataset, val_set: Optional[Dataset], *, global_batch: int,
                 accumulation: int, num_epochs: float, dist: DistInfo, num_workers: int = 0, seed: int = 0,
                 eval_batch_size: Optional[int] = None, task_tokens: bool = False, val_subset: int = 0):
        self.task = task
        self.train_set, self.val_set = train_set, val_set
        if global_batch % (dist.world_size * accumulation):
            raise SetupError(f"task {task.id} ({task.name}): batch size {global_batch} is not divisible by "
                             f"{dist.world_size} processes x {accumulation} accumulation steps")
        try:
            self.sampler = TrainSampler(len(train_set), global_batch, dist.rank, dist.world_size, seed=seed + task.id,
                                        keys=False)
        except ValueError as exc:
            raise SetupError(f"task {task.id} ({task.name}): {exc}") from None
        self.accumulation = accumulation
        self.micro_batch = global_batch // (dist.world_size * accumulation)
        pin = dist.device.type == "cuda"
        self.loader = make_loader(train_set, self.sampler, self.micro_batch, num_workers, pin, seed=seed + task.id)
        self.val_loader = None
        self.val_subset = val_subset
        if val_set is not None:
            # The evaluators score only the items they saw, so a shorter sampler is a subset.
            size = min(len(val_set), val_subset) if val_subset else len(val_set)
            sampler = EvalSampler(size, dist.rank, dist.world_size, keys=False)
            self.val_loader = make_loader(val_set, sampler, eval_batch_size or task.config.eval_batch_size,
                                          num_workers, pin)
        self.objective = TaskObjective(task, task_tokens)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.num_epochs = num_epochs
        self.total_steps = max(1, math.ceil(num_epochs * self.steps_per_epoch))
        self.epoch, self.step_in_epoch, self.steps_done = 0, 0, 0
        self.best: dict = {}  # {"metric", "value", "step", "epoch", "metrics"} of the best evaluation
        self.evaluated_at = -1  # steps_done of the latest evaluation
        self._batches = None

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.total_steps

    @property
    def epoch_finished(self) -> bool:
        return self.step_in_epoch >= self.steps_per_epoch

    def next_batches(self) -> list[dict]:
        """This rank's micro-batches of the task's next optimizer step (on the CPU)."""
        if self._batches is None:
            self.sampler.set_epoch(self.epoch, self.step_in_epoch)
            self._batches = batches_per_step(self.loader, self.accumulation)
        batches = next(self._batches)
        self.steps_done += 1
        self.step_in_epoch += 1
        return batches

    def start_next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._batches = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "steps_done": self.steps_done,
                "best": self.best, "evaluated_at": self.evaluated_at}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.steps_done, self.best = int(state["steps_done"]), dict(state["best"])
        self.evaluated_at = int(state["evaluated_at"])
        if self.epoch_finished:  # saved right at the end of an epoch
            self.start_next_epoch()
        self._batches = None


def next_task(runs: Sequence[TaskRun]) -> Optional[TaskRun]:
    """The unfinished task furthest behind its own schedule (first in order on a tie), or None.

    Comparing where in its schedule each task's next step falls (its midpoint, as a fraction of
    the task's steps) interleaves the tasks in proportion to their lengths: a task of 2N steps runs
    twice for every step of a task of N (a b a a b a), and all tasks finish together. It depends
    only on the tasks' progress, so a resumed run continues the same sequence.
    """
    pending = [run for run in runs if not run.finished]
    if not pending:
        return None
    return min(pending, key=lambda run: (run.steps_done + 0.5) / run.total_steps)


def primary_metric(task: Task) -> str:
    """The metric that picks a task's best checkpoint: the first one its reader reports."""
    return task.metrics[0]


@torch.no_grad()
def evaluate_task(model: torch.nn.Module, task: Task, dataset: Dataset, loader: Optional[DataLoader],
                  precision: Precision, dist: DistInfo, *, task_tokens: bool = False, batch_size: int = 128,
                  subset: int = 0, progress: bool = False):
    """Run `task`'s evaluator over `dataset` (the items `loader` yields) on every rank; returns the
    evaluator, merged over ranks (`.compute()` -> metrics in percent, `.write(path)` -> the
    official result file).

    Retrieval evaluation (every caption x image pair) goes through retrieval_scores, which encodes
    each caption's image-independent text layers once instead of once per pair; `subset` > 0 ranks
    only the first `subset` captions there (against every image).
    """
    from vilbert.tasks.metrics import RetrievalEvaluator

    bare = unwrap_model(model)
    was_training = bare.training
    bare.eval()
    evaluator = task.evaluator(dataset)
    token = task_token_row(task) if task_tokens else None
    if isinstance(evaluator, RetrievalEvaluator):
        scores = retrieval_scores(bare, dataset, precision=precision, dist=dist, batch_size=batch_size,
                                  task_token=token, captions=subset, progress=progress)  # (captions, images)
        # The evaluator's items are image-major pairs: item = image * num_captions + caption.
        pairs = torch.arange(dataset.num_images)[:, None] * dataset.num_captions + torch.arange(scores.shape[0])
        evaluator.update(scores.t().reshape(-1, 1), {"index": pairs.reshape(-1)})
    else:
        objective = TaskObjective(task, task_tokens)
        batches = loader
        if progress and dist.is_main:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"{task.name}", dynamic_ncols=True, leave=False)
        for batch in batches:
            batch = to_device(batch, dist.device)
            with precision.autocast():
                out = bare(**model_inputs(batch), heads={task.head}, **objective.extra_inputs(batch))
            evaluator.update(task.head_output(out), batch)
        evaluator.sync()
    bare.train(was_training)
    return evaluator


def _pair_scores(model, inputs: dict, text_prefix: torch.Tensor, zero_shot: bool) -> torch.Tensor:
    """Scores (N,) of N (caption, image) pairs whose caption prefix is already encoded."""
    if not zero_shot:
        out = model(**inputs, heads={"vil_logit"}, text_prefix=text_prefix)
        return out.vil_logit.float().squeeze(-1)
    # Pretraining checkpoint: the alignment head alone (ViLBertForPretraining.forward would also
    # run the MLM decoder over every token, which costs more than the encoder). Label 0 = aligned.
    from vilbert.model import fuse

    out = model.vilbert(**inputs, text_prefix=text_prefix, pooled_only_t=True, pooled_only_v=True)
    pooled = fuse(out.pooled_output_t, out.pooled_output_v, model.config.fusion_method)
    return model.alignment_head(pooled).float().softmax(dim=-1)[:, 0]


@torch.no_grad()
def retrieval_scores(model: torch.nn.Module, dataset, *, precision: Precision, dist: DistInfo, batch_size: int = 128,
                     zero_shot: bool = False, task_token: Optional[int] = None, captions: int = 0,
                     progress: bool = False) -> torch.Tensor:
    """(captions, images) float32 scores of every pair of a retrieval evaluation dataset.

    Finetuned models score with `vil_logit`; `zero_shot` scores a pretraining model with
    softmax(alignment)[aligned] (REFERENCE 4). Each caption's text layers before the first
    co-attention block are computed once (encode_text_prefix) and shared by all images; pairs go
    through the rest of the model `batch_size` images at a time. Under torch.distributed each rank
    scores every world_size-th caption and the matrix is summed over ranks. captions > 0: only the
    first that many captions (rows).
    """
    bare = unwrap_model(model)
    device = dist.device
    images = [dataset.image_arrays(i) for i in range(dataset.num_images)]
    image_feat = torch.from_numpy(np.stack([im["image_feat"] for im in images])).to(device)  # (I, R, D)
    image_loc = torch.from_numpy(np.stack([im["image_loc"] for im in images])).to(device)  # (I, R, 5)
    image_mask = torch.from_numpy(np.stack([im["image_attention_mask"] for im in images])).long().to(device)  # (I, R)
    text = {key: torch.from_numpy(np.asarray(dataset.text[key])).long() for key in TEXT_KEYS}  # (C, T)
    num_captions, num_images = dataset.num_captions, dataset.num_images
    if captions:
        num_captions = min(num_captions, captions)

    scores = torch.zeros(num_captions, num_images, device=device)
    mine = torch.arange(dist.rank, num_captions, dist.world_size)
    blocks = list(mine.split(max(1, batch_size)))
    if progress and dist.is_main:
        from tqdm import tqdm

        blocks = tqdm(blocks, desc="retrieval", unit="block", dynamic_ncols=True, leave=False)
    for block in blocks:
        ids, types, mask = (text[key][block].to(device) for key in TEXT_KEYS)  # (c, T)
        task_tokens = None if task_token is None else torch.full((len(block), 1), task_token, device=device)
        with precision.autocast():
            prefix = bare.vilbert.encode_text_prefix(ids, types, mask, task_tokens=task_tokens)  # (c, T', H)
        for j, caption in enumerate(block.tolist()):
            length = max(int(mask[j].sum()), 1)  # padding columns are masked anyway: cut them
            keep = length + (prefix.shape[1] - ids.shape[1])  # the task token, if any, adds a column
            for start in range(0, num_images, batch_size):
                stop = min(start + batch_size, num_images)
                # One caption against many images: batch-1 text tensors are shared by every image.
                inputs = dict(input_ids=ids[j:j + 1, :length], token_type_ids=types[j:j + 1, :length],
                              attention_mask=mask[j:j + 1, :length], image_feat=image_feat[start:stop],
                              image_loc=image_loc[start:stop], image_attention_mask=image_mask[start:stop])
                with precision.autocast():
                    scores[caption, start:stop] = _pair_scores(bare, inputs, prefix[j:j + 1, :keep], zero_shot)
    all_reduce_sum(scores, dist)
    return scores.cpu()


def retrieval_metrics(scores: torch.Tensor, caption_image_index) -> dict[str, float]:
    """R@1/5/10 of text->image retrieval (the originals' metric) and of image->text (`i2t_R@k`)."""
    from vilbert.tasks.metrics import image_to_text_recall, text_to_image_recall

    gt = torch.as_tensor(np.asarray(caption_image_index), dtype=torch.long)
    metrics = text_to_image_recall(scores, gt)
    metrics.update({f"i2t_{k}": v for k, v in image_to_text_recall(scores, gt).items()})
    return metrics


def metrics_table(metrics: dict[str, dict[str, float]], split: Optional[str] = None) -> str:
    """{task name: {metric: value}} as a markdown table (values in percent, 2 decimals)."""
    lines = ["| task | split | metric | value |", "|---|---|---|---|"] if split else \
        ["| task | metric | value |", "|---|---|---|"]
    for name, values in metrics.items():
        for metric, value in values.items():
            cells = [name] + ([split] if split else []) + [metric, f"{value:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_metrics(path: Union[str, Path], metrics: dict) -> Path:
    """Write `{task name: {metric: value}}` (or any JSON) atomically enough for one writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def save_best(model: torch.nn.Module, directory: Path, record: dict) -> None:
    """Rank 0: a task's best weights so far, loadable by eval_tasks.py --from_pretrained (config.json,
    model.safetensors, and metrics.json saying when and how well)."""
    import shutil

    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    unwrap_model(model).save_pretrained(tmp)
    write_metrics(tmp / "metrics.json", record)
    # Swap by renames so a crash at any point leaves a complete best directory (new, or old in .old).
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.replace(old)
    tmp.replace(directory)
    shutil.rmtree(old, ignore_errors=True)
