"""What a training step minimises: named loss terms, each a mean over its own targets.

An objective tells the loop, for one micro-batch (a dict of tensors holding the model's keyword
arguments), how many targets each loss term averages over, and the terms' means:

    class Objective(Protocol):
        names: tuple[str, ...]                  # K loss terms, e.g. ("masked_lm", "masked_img", "alignment")
        weights: tuple[float, ...]              # total loss = sum_k weights[k] * mean_k
        def counts(self, batch) -> Tensor       # (K,) float, targets of each term in this micro-batch
        def __call__(self, model, batch) -> tuple[Tensor, dict[str, Tensor]]
            # -> (K,) per-term means over this micro-batch, and extra statistics as
            #    {name: tensor([sum, count])} (e.g. alignment accuracy), all on the device

With the counts, `loop.train_step` weights each micro-batch so that every term is the mean over the
whole global batch (all ranks, all accumulation steps), as if it ran in one piece: a masked-token
loss does not change when the batch is split differently. Two objectives ship here; finetuning
writes its own in a few lines (see ModelLossObjective).
"""

from __future__ import annotations

import torch


class ModelLossObjective:
    """The model's own `.loss`, taken as a mean over the samples of the batch.

    batch_key names a (B, ...) tensor of the batch used to count samples. Suits any model whose
    output has `.loss` averaged over the batch (e.g. a finetuning head with a per-sample loss).
    """

    names = ("loss",)
    weights = (1.0,)

    def __init__(self, batch_key: str = "input_ids"):
        self.batch_key = batch_key

    def counts(self, batch: dict) -> torch.Tensor:
        tensor = batch[self.batch_key]
        return torch.full((1,), float(tensor.shape[0]), device=tensor.device)

    def __call__(self, model, batch: dict):
        return model(**batch).loss.reshape(1), {}


class PretrainingObjective:
    """ViLBERT pretraining (REFERENCE 2): masked language modelling, masked region modelling and
    image-caption alignment; total = MLM + img_weight * region + alignment.

    Counts: masked tokens (labels >= 0), masked regions (image_label == 1 past row 0), labelled
    samples (next_sentence_label >= 0). The model
    averages each loss over exactly these (MLM over masked tokens, the region loss divided by the
    number of masked regions, alignment over the batch). Statistic: alignment accuracy
    (argmax of the alignment score == next_sentence_label; 0 = aligned).
    """

    names = ("masked_lm", "masked_img", "alignment")

    def __init__(self, img_weight: float = 1.0):
        self.weights = (1.0, float(img_weight), 1.0)

    def counts(self, batch: dict) -> torch.Tensor:
        return torch.stack([
            (batch["masked_lm_labels"] >= 0).sum(),          # -1 = not a target
            (batch["image_label"][:, 1:] == 1).sum(),        # row 0 (global) is never a target
            (batch["next_sentence_label"] >= 0).sum(),       # -1 = ignore
        ]).float()

    def __call__(self, model, batch: dict):
        out = model(**batch)
        terms = torch.stack([out.masked_lm_loss, out.masked_img_loss, out.next_sentence_loss])
        labels = batch["next_sentence_label"]
        correct = (out.seq_relationship_score.argmax(-1) == labels).sum()
        stats = {"alignment_accuracy": torch.stack([correct, (labels >= 0).sum()]).float()}
        return terms, stats
