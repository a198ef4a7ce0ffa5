"""Task-type losses (REFERENCE 2), each `loss(head_output, batch) -> scalar tensor`, and the
cheap per-sample scores a training batch logs, each `score(head_output, batch) -> (B,)`.

They compute in float32 whatever the autocast dtype of the head output, and never leave the
device (no `.item()`), so they can sit inside a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vl_classifier_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """VQA: BCE-with-logits against soft answer scores, mean over (B, L) times L.

    logits (B, L) from `vil_prediction`; batch["target"] (B, L) soft scores in [0, 1]. Multiplying
    the mean by L (= summing over answers, averaging over questions) is the originals' scale.
    """
    return vl_label_loss(logits, batch) * batch["target"].shape[1]


def vl_logit_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """VCR / retrieval: one logit per option, cross-entropy over the options.

    logits (B*O, 1) from `vil_logit` (the collate flattened the options); batch["target"] (B,)
    the index of the right option.
    """
    target = batch["target"].long()
    scores = logits.float().view(target.shape[0], -1)  # (B, O)
    return F.cross_entropy(scores, target)


def v_logit_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """RefCOCO+: per-region BCE-with-logits against the IoU target, padding regions masked out.

    logits (B, R, 1) from `vision_logit`; batch["target"] (B, R) IoU with the referred box (values
    below 0.5 set to 0 for training); batch["image_attention_mask"] (B, R). The originals push
    padding logits to -10000 so their loss is ~0 there and take mean * R; summing the real regions
    and dividing by B is that same number without relying on the push.
    """
    target = batch["target"].float()
    mask = batch["image_attention_mask"].to(target.dtype)
    per_region = F.binary_cross_entropy_with_logits(logits.float().squeeze(-1), target, reduction="none")
    return (per_region * mask).sum() / target.shape[0]


def vl_label_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """SNLI-VE (3 labels), NLVR2 (2): BCE-with-logits against the one-hot label, plain mean.

    logits (B, L) from `vil_tri_prediction` / `vil_binary_prediction`; batch["target"] (B, L)
    one-hot (all zero for an example without a gold label). 12-in-1 takes the mean over (B, L)
    for these types, without the VQA loss's factor L.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), batch["target"].float(), reduction="mean")


def label_cross_entropy_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """A label task whose tasks-file `loss` is CrossEntropyLoss (12-in-1's Foil): softmax
    cross-entropy against the one-hot label, mean over the batch.

    logits (B, L); batch["target"] (B, L) one-hot. An example without a gold label (an all-zero
    row) adds 0 to the sum but still counts in the mean, as vl_label_loss counts it.
    """
    target = batch["target"].float()
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def top_label_score(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B, L) -> (B,): the target's value at the top label (VQA: its soft score; one-hot targets:
    1 when right), 12-in-1's score for every classifier type."""
    return batch["target"].float().gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)


def top_option_score(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B*O, 1) -> (B,): 1 when the top option is the right one."""
    return (logits.view(batch["target"].shape[0], -1).argmax(dim=1) == batch["target"]).float()


def top_region_score(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B, R, 1) -> (B,): 1 when the top region's training target is positive (IoU >= 0.5; the
    targets are 0 below, REFERENCE 4)."""
    top = logits.squeeze(-1).argmax(dim=1, keepdim=True)
    return (batch["target"].gather(1, top).squeeze(1) > 0).float()
