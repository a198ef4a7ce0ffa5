"""The three task-type losses (REFERENCE 2), each `loss(head_output, batch) -> scalar tensor`.

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
    target = batch["target"].float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="mean")
    return loss * target.shape[1]


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
