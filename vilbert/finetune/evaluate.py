"""Evaluating a task (every reader's evaluator; retrieval through retrieval_scores, which
scores every caption x image pair with each caption's text prefix encoded once), and writing
metrics and best checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vilbert.data.collate import TEXT_KEYS, model_inputs
from vilbert.finetune.run import TaskObjective, task_token_row
from vilbert.tasks.registry import Task
from vilbert.training import DistInfo, Precision, all_reduce_sum, to_device, unwrap_model

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


def pair_scores(model, inputs: dict, text_prefix: torch.Tensor, zero_shot: bool) -> torch.Tensor:
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
        lengths = mask.sum(1).clamp(min=1).tolist()  # padding columns are masked anyway: cut them (one sync a block)
        for j, (caption, length) in enumerate(zip(block.tolist(), lengths)):
            keep = length + (prefix.shape[1] - ids.shape[1])  # the task token, if any, adds a column
            for start in range(0, num_images, batch_size):
                stop = min(start + batch_size, num_images)
                # One caption against many images: batch-1 text tensors are shared by every image.
                inputs = dict(input_ids=ids[j:j + 1, :length], token_type_ids=types[j:j + 1, :length],
                              attention_mask=mask[j:j + 1, :length], image_feat=image_feat[start:stop],
                              image_loc=image_loc[start:stop], image_attention_mask=image_mask[start:stop])
                with precision.autocast():
                    scores[caption, start:stop] = pair_scores(bare, inputs, prefix[j:j + 1, :keep], zero_shot)
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

    from vilbert.training.checkpoint import recover_directory, replace_directory

    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unwrap_model(model).save_pretrained(tmp)
    write_metrics(tmp / "metrics.json", record)
    # Swap by renames so a crash at any point leaves a complete best directory (new, or old in .old-*).
    recover_directory(directory)
    replace_directory(tmp, directory)
