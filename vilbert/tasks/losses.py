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
    """VCR / retrieval / Visual Dialog: one logit per option, cross-entropy over the options.

    logits (B*O, 1) from `vil_logit` (the collate flattened the options); batch["target"] (B,)
    the index of the right option, or (B, Q) for items of Q questions of O options each (a dialog's
    rounds, rows in that order): the mean over the B*Q questions, as 12-in-1's dialog batches.
    """
    target = batch["target"].long().reshape(-1)  # (B*Q,)
    scores = logits.float().view(target.shape[0], -1)  # (B*Q, O)
    return F.cross_entropy(scores, target)


def v_logit_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """RefCOCO+: per-region BCE-with-logits against the IoU target, padding regions masked out.

    logits (B, R, 1) from `vision_logit`; batch["target"] (B, R) IoU with the referred box (values
    below 0.5 set to 0 for training); batch["image_attention_mask"] (B, R). The originals push
    padding logits to -10000 so their loss is ~0 there and take mean * R; summing the real regions
    and dividing by B is that same number without relying on the push.
    """
    return _masked_bce(logits.float().squeeze(-1), batch["target"].float(), batch["image_attention_mask"])


def _masked_bce(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits of (B, N) scores summed over the positions where mask is 1, divided by B."""
    per_position = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
    return (per_position * mask.to(target.dtype)).sum() / target.shape[0]


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
    """(B*O, 1) -> (B,) (or (B*Q,) for items of Q questions): 1 when the top option is the right one."""
    target = batch["target"].reshape(-1)
    return (logits.view(target.shape[0], -1).argmax(dim=1) == target).float()


def top_region_score(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B, R, 1) -> (B,): 1 when the top region's training target is positive (IoU >= 0.5; the
    targets are 0 below, REFERENCE 4)."""
    top = logits.squeeze(-1).argmax(dim=1, keepdim=True)
    return (batch["target"].gather(1, top).squeeze(1) > 0).float()


def candidate_scores(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """V-logit-mc: (B, R, 1) `vision_logit` -> (B, C) float32 scores of each item's candidate boxes,
    -inf at padding candidates. batch["candidate_regions"] (B, C) long: the region row of each
    candidate; batch["candidate_mask"] (B, C): 1 = a real candidate."""
    scores = logits.float().squeeze(-1).gather(1, batch["candidate_regions"])
    return scores.masked_fill(batch["candidate_mask"] == 0, float("-inf"))


def v_logit_mc_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Visual7W / GuessWhat?! pointing: BCE-with-logits on the candidate boxes' logits only.

    logits (B, R, 1) from `vision_logit`; batch["target"] (B, C) the IoU of each candidate with the
    answer box (values below 0.5 set to 0), candidates as in candidate_scores. 12-in-1 takes the
    mean over (B, C) times C, which is this sum over candidates divided by B; it pads GuessWhat's
    candidates to 204 with a padding row whose terms it counts, where padding candidates are
    masked out here.
    """
    scores = logits.float().squeeze(-1).gather(1, batch["candidate_regions"])  # (B, C)
    return _masked_bce(scores, batch["target"].float(), batch["candidate_mask"])


def top_candidate_score(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """(B, R, 1) -> (B,): 1 when the top-scored candidate is the answer box (its target is the
    largest of the item's, as 12-in-1 compares the argmax of scores and targets)."""
    target = batch["target"].float()
    picked = target.gather(1, candidate_scores(logits, batch).argmax(dim=1, keepdim=True)).squeeze(1)
    best = target.max(dim=1).values
    return ((picked >= best) & (best > 0)).float()
