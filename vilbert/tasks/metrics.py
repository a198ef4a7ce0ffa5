"""Task metrics and result writers.

The metric functions are plain (VQA answer normalisation and soft accuracy, box IoU, retrieval
ranks and R@k). The evaluators collect a task's predictions over an evaluation loop and turn them
into metrics (values in percent) and the official result records:

    evaluator = task.evaluator(dataset)
    for batch in loader:
        evaluator.update(task.head_output(model_output), batch)   # stays on the device
    evaluator.sync()                  # under torch.distributed: merge what every rank saw
    evaluator.compute()               # {"accuracy": 71.3}   (rank 0 prints)
    evaluator.write(path)             # official result file  (rank 0 writes)

Every evaluator keeps one slot per dataset item, filled through `batch["index"]`. Merging ranks
is then an element-wise max over the slots (unfilled slots hold a value below any real one), and
an item a DistributedSampler hands out twice is still counted once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from vilbert.tasks.losses import candidate_scores, top_candidate_score, top_label_score

# VQA answer normalisation, as the official evaluation script (VQA v2 `vqaEval.py`).
# Spelled-out contractions and their apostrophe forms; the table is the official one, quirks
# ("somebody'd" -> "somebodyd") included, so scores match the evaluation server.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "id've": "i'd've",
    "i'dve": "i'd've", "im": "i'm", "ive": "i've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The official pattern, including its odd "(?!<=" (meant as a look-behind): a period not followed
# by a digit is removed.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def process_punctuation(text: str) -> str:
    """Drop or space out punctuation as the official script: "yes." -> "yes", "t-shirt" -> "t shirt"."""
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    # The official script passes re.UNICODE where sub() takes `count`, so at most 32 periods go.
    return _PERIOD_STRIP.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, restore contractions: "The Two" -> "2"."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(answer: str) -> str:
    """The normalised form answers are counted and matched in (vocabulary, soft targets).

    The official punctuation and number/article/contraction steps, then commas dropped (so
    "1,000" and "1000" are one answer), as the answer preprocessing the originals' targets use.
    """
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer)).replace(",", "")


# Soft score of an answer given by `n` of the 10 annotators: min(1, n/3) averaged over the 10
# leave-one-out subsets of 9 annotators, which is exactly 0, 0.3, 0.6, 0.9 and then 1.
ANSWER_SCORES = (0.0, 0.3, 0.6, 0.9)


def answer_score(count: int) -> float:
    """Soft target for an answer `count` annotators gave (0, .3, .6, .9, 1)."""
    return ANSWER_SCORES[count] if count < len(ANSWER_SCORES) else 1.0


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy (0..1) of one predicted answer against the human answers.

    As the official script: whitespace cleaned; when the annotators disagree, both the prediction
    and the human answers are normalised; then min(1, matches/3) averaged over leaving out each
    annotator in turn.
    """
    clean = lambda s: s.replace("\n", " ").replace("\t", " ").strip()  # noqa: E731
    gts = [clean(a) for a in gt_answers]
    prediction = clean(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        prediction = process_digit_article(process_punctuation(prediction))
    scores = []
    for left_out in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != left_out and a == prediction)
        scores.append(min(1.0, matches / 3.0))
    return sum(scores) / len(scores) if scores else 0.0


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (..., 4) x1, y1, x2, y2 with boxes broadcastable to them -> (...).

    Continuous coordinates (area = w * h), as torchvision; the originals' "+1 pixel" convention
    changes IoU only for tiny boxes.
    """
    x1 = torch.maximum(boxes_a[..., 0], boxes_b[..., 0])
    y1 = torch.maximum(boxes_a[..., 1], boxes_b[..., 1])
    x2 = torch.minimum(boxes_a[..., 2], boxes_b[..., 2])
    y2 = torch.minimum(boxes_a[..., 3], boxes_b[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]).clamp(min=0) * (boxes_a[..., 3] - boxes_a[..., 1]).clamp(min=0)
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]).clamp(min=0) * (boxes_b[..., 3] - boxes_b[..., 1]).clamp(min=0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def retrieval_ranks(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-scored positive in each row.

    scores (Q, C): query x candidate scores (caption x image for text->image retrieval);
    positives (Q,) long: the one right candidate per query, or (Q, C) bool: all right candidates.
    Ties count against the query (a positive tied with a negative ranks below it).
    """
    if positives.dim() == 1:
        best_positive = scores.gather(1, positives[:, None].long())  # (Q, 1)
    else:
        best_positive = scores.masked_fill(~positives.bool(), float("-inf")).amax(dim=1, keepdim=True)
        positives_mask = positives.bool()
    above = scores >= best_positive
    if positives.dim() == 1:
        above.scatter_(1, positives[:, None].long(), False)
    else:
        above &= ~positives_mask
    return above.sum(dim=1) + 1


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@k": percent of queries whose rank <= k}."""
    ranks = ranks.float()
    return {f"R@{k}": float((ranks <= k).float().mean() * 100) for k in ks}


def text_to_image_recall(scores: torch.Tensor, caption_image_index: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Image retrieval (the originals' metric): scores (captions, images), the image of each caption."""
    return recall_at_k(retrieval_ranks(scores, caption_image_index), ks)


def image_to_text_recall(scores: torch.Tensor, caption_image_index: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Caption retrieval: each image ranks all captions; its best-ranked own caption counts."""
    num_images = scores.shape[1]
    positives = caption_image_index[None, :] == torch.arange(num_images, device=scores.device)[:, None]
    return recall_at_k(retrieval_ranks(scores.t(), positives), ks)


def write_json(path: Union[str, Path], obj) -> Path:
    """Write JSON (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


class Evaluator:
    """Collects one task's predictions over an evaluation pass. Subclasses define the slots."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.size = len(dataset)
        self.slots: dict[str, torch.Tensor] = {}

    def _slot(self, name: str, tail: tuple, dtype: torch.dtype, device, fill) -> torch.Tensor:
        if name not in self.slots:
            self.slots[name] = torch.full((self.size, *tail), fill, dtype=dtype, device=device)
        return self.slots[name]

    def _mark_seen(self, index: torch.Tensor) -> None:
        self._slot("seen", (), torch.bool, index.device, False)[index] = True

    def seen(self) -> torch.Tensor:
        """(N,) bool: the items the evaluation covered."""
        if "seen" not in self.slots:
            return torch.zeros(self.size, dtype=torch.bool)
        return self.slots["seen"].cpu()

    def sync(self) -> None:
        """Merge the slots of every rank (element-wise max) when torch.distributed is running."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for name, slot in self.slots.items():
            as_number = slot.to(torch.uint8) if slot.dtype == torch.bool else slot
            torch.distributed.all_reduce(as_number, op=torch.distributed.ReduceOp.MAX)
            self.slots[name] = as_number.bool() if slot.dtype == torch.bool else as_number

    def update(self, output: torch.Tensor, batch: dict) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def results(self) -> list[dict]:
        raise NotImplementedError

    def write(self, path: Union[str, Path]) -> Path:
        """Write the official result records (`results()`) as JSON."""
        return write_json(path, self.results())


class TopLabelEvaluator(Evaluator):
    """Classifier accuracy: the mean over items of the target at the top label (12-in-1's score
    for every classifier type: soft VQA scores, one-hot labels elsewhere), in percent. Results:
    the dataset's `result_record(item, label)` of each item's top label."""

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        index = batch["index"].to(logits.device)
        prediction = logits.argmax(dim=1)  # (B,)
        self._slot("prediction", (), torch.long, logits.device, -1)[index] = prediction
        if "target" in batch:
            score = top_label_score(logits, {"target": batch["target"].to(logits.device)})  # (B,) soft score
            self._slot("score", (), torch.float32, logits.device, -1.0)[index] = score
        self._mark_seen(index)

    def compute(self) -> dict[str, float]:
        seen = self.seen()
        if "score" not in self.slots or not seen.any():
            return {}
        return {"accuracy": float(self.slots["score"].cpu()[seen].mean() * 100)}

    def results(self) -> list[dict]:
        seen = self.seen()
        predictions = self.slots["prediction"].cpu()
        return [self.result_record(i, int(predictions[i])) for i in torch.nonzero(seen).flatten().tolist()]

    def result_record(self, item: int, label: int) -> dict:
        return self.dataset.result_record(item, label)


class VQAEvaluator(TopLabelEvaluator):
    """VQA soft accuracy; results [{"question_id", "answer"}] (the test-dev/test-std submission)."""

    def result_record(self, item: int, label: int) -> dict:
        return {"question_id": int(self.dataset.question_ids[item]), "answer": self.dataset.label2ans[label]}


class VCREvaluator(Evaluator):
    """VCR Q->A (`q2a`) or QA->R (`qa2r`) accuracy; results hold each option's probability."""

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        index = batch["index"].to(logits.device)
        probs = logits.float().view(index.shape[0], -1).softmax(dim=1)  # (B, options)
        self._slot("probs", (probs.shape[1],), torch.float32, logits.device, -1.0)[index] = probs
        self._mark_seen(index)

    def correct(self) -> torch.Tensor:
        """(N,) bool over the seen items with labels: the highest-probability option is right."""
        labels = torch.as_tensor(self.dataset.labels)
        return self.slots["probs"].cpu().argmax(dim=1) == labels

    def compute(self) -> dict[str, float]:
        seen = self.seen()
        if not seen.any() or not self.dataset.has_labels:
            return {}
        return {self.dataset.metric_name: float(self.correct()[seen].float().mean() * 100)}

    def results(self) -> list[dict]:
        seen = self.seen()
        probs = self.slots["probs"].cpu()
        key = "answer_probs" if self.dataset.mode == "q2a" else "rationale_probs"
        records = []
        for i in torch.nonzero(seen).flatten().tolist():
            record = {"annot_id": self.dataset.annot_ids[i], key: probs[i].tolist()}
            if self.dataset.answer_indices is not None:  # QA->R on the test split: one per answer
                record["answer_index"] = int(self.dataset.answer_indices[i])
            records.append(record)
        return records


def vcr_joint(q2a: VCREvaluator, qa2r: VCREvaluator) -> tuple[dict[str, float], list[dict]]:
    """Q->AR: an annotation counts when both its answer and its rationale are picked right.

    Returns ({"q2ar": percent}, records with both probability lists per annot_id). Only
    annotations both evaluators saw (and that have labels) count.
    """
    def by_annot(evaluator):
        seen = evaluator.seen()
        correct = evaluator.correct() if evaluator.dataset.has_labels else None
        probs = evaluator.slots["probs"].cpu() if "probs" in evaluator.slots else None
        out = {}
        for i in torch.nonzero(seen).flatten().tolist():
            out[evaluator.dataset.annot_ids[i]] = (None if correct is None else bool(correct[i]), probs[i].tolist())
        return out

    answers, rationales = by_annot(q2a), by_annot(qa2r)
    common = [a for a in answers if a in rationales]
    records, both_right = [], []
    for annot_id in common:
        (a_ok, a_probs), (r_ok, r_probs) = answers[annot_id], rationales[annot_id]
        record = {"annot_id": annot_id, "answer_probs": a_probs, "rationale_probs": r_probs}
        if a_ok is not None and r_ok is not None:
            record["q2ar_correct"] = a_ok and r_ok
            both_right.append(a_ok and r_ok)
        records.append(record)
    metrics = {"q2ar": 100.0 * sum(both_right) / len(both_right)} if both_right else {}
    return metrics, records


def joint_metrics(evaluators: dict) -> dict[str, dict[str, float]]:
    """Metrics that need two tasks' predictions: Q->AR, added to both VCR tasks when both ran.

    `evaluators` maps task name -> evaluator (as eval_tasks.py holds them). Returns
    {task name: {metric: value}} to merge into the per-task metrics.
    """
    q2a = [(n, e) for n, e in evaluators.items() if isinstance(e, VCREvaluator) and e.dataset.mode == "q2a"]
    qa2r = [(n, e) for n, e in evaluators.items() if isinstance(e, VCREvaluator) and e.dataset.mode == "qa2r"]
    extra: dict[str, dict[str, float]] = {}
    if len(q2a) == 1 and len(qa2r) == 1:
        metrics, _ = vcr_joint(q2a[0][1], qa2r[0][1])
        for name in (q2a[0][0], qa2r[0][0]):
            extra.setdefault(name, {}).update(metrics)
    return extra


class ReferEvaluator(Evaluator):
    """Grounding accuracy (RefCOCO+, RefCOCOg, Flickr30k Entities): the top-scored region is right
    when its IoU with the referred box > 0.5.

    Results: [{<the dataset's result_ids> (refer: "ref_id", "sent_id", "image_id"), "box" [x1, y1,
    x2, y2] pixels, "iou", "correct"}].
    """

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        device = logits.device
        index = batch["index"].to(device)
        mask = batch["image_attention_mask"].to(device)
        scores = logits.float().squeeze(-1).masked_fill(mask == 0, float("-inf"))  # (B, R)
        chosen = scores.argmax(dim=1)  # (B,)
        boxes = batch["region_boxes"].to(device).float()  # (B, R, 4) pixels
        box = boxes.gather(1, chosen[:, None, None].expand(-1, 1, 4)).squeeze(1)  # (B, 4)
        iou = box_iou(box, batch["ref_box"].to(device).float())  # (B,)
        self._slot("iou", (), torch.float32, device, -1.0)[index] = iou
        self._slot("box", (4,), torch.float32, device, -1.0)[index] = box
        self._mark_seen(index)

    def compute(self) -> dict[str, float]:
        seen = self.seen()
        if not seen.any():
            return {}
        return {"accuracy": float((self.slots["iou"].cpu()[seen] > 0.5).float().mean() * 100)}

    def results(self) -> list[dict]:
        seen = self.seen()
        iou, box = self.slots["iou"].cpu(), self.slots["box"].cpu()
        records = []
        for i in torch.nonzero(seen).flatten().tolist():
            records.append({**self.dataset.result_ids(i), "box": [round(v, 2) for v in box[i].tolist()],
                            "iou": round(float(iou[i]), 4), "correct": bool(iou[i] > 0.5)})
        return records


class RetrievalEvaluator(Evaluator):
    """Flickr30k image retrieval over every (caption, image) pair: R@1, R@5, R@10 (text->image).

    The dataset enumerates pairs (caption c, image i) as index i * num_captions + c; `update`
    takes the (B, 1) `vil_logit` of such pairs. Results: per caption, the rank of its image and
    the ten best images.
    """

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        index = batch["index"].to(logits.device)
        self._slot("score", (), torch.float32, logits.device, float("-inf"))[index] = logits.float().view(-1)
        self._mark_seen(index)

    def score_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(captions, images) scores and a (captions,) bool of the captions scored against every image."""
        shape = (self.dataset.num_images, self.dataset.num_captions)  # image-major item order
        scores = self.slots["score"].cpu().view(shape).t()  # (captions, images)
        complete = self.seen().view(shape).all(dim=0)
        return scores, complete

    def compute(self) -> dict[str, float]:
        if "score" not in self.slots:
            return {}
        scores, complete = self.score_matrix()
        if not complete.any():
            return {}
        gt = torch.as_tensor(self.dataset.caption_image_index)
        return text_to_image_recall(scores[complete], gt[complete])

    def results(self) -> list[dict]:
        scores, complete = self.score_matrix()
        gt = torch.as_tensor(self.dataset.caption_image_index)
        ranks = retrieval_ranks(scores, gt)
        top = scores.topk(min(10, scores.shape[1]), dim=1).indices
        image_ids = self.dataset.image_ids
        records = []
        for c in torch.nonzero(complete).flatten().tolist():
            records.append(
                {
                    "caption_index": c,
                    "caption": self.dataset.captions[c],
                    "image_id": image_ids[int(gt[c])],
                    "rank": int(ranks[c]),
                    "top_image_ids": [image_ids[j] for j in top[c].tolist()],
                }
            )
        return records


def option_ranks(scores: torch.Tensor) -> torch.Tensor:
    """(N, O) scores -> (N, O) long: the 1-based rank of each option in its row, best first, ties
    in option order (the official VisDial `scores_to_ranks`, with a stable sort)."""
    order = scores.argsort(dim=1, descending=True, stable=True)  # (N, O) option at each rank
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def answer_rank_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """Visual Dialog's sparse metrics from the right answer's rank in each round (N,):
    MRR and R@1/5/10 in percent, mean rank as a rank."""
    ranks = ranks.float()
    return {"MRR": float(ranks.reciprocal().mean() * 100), **recall_at_k(ranks), "mean_rank": float(ranks.mean())}


def ndcg(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """(N,) NDCG of each row's ranking, as the official VisDial evaluation: NDCG@K with K the row's
    number of options of nonzero relevance, gain = relevance, discount log2(position + 1)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    gains = relevance.float().gather(1, order)  # (N, O) relevance in the predicted order
    ideal = relevance.float().sort(dim=1, descending=True).values
    positions = torch.arange(scores.shape[1], device=scores.device)
    weights = (positions < (relevance != 0).sum(dim=1, keepdim=True)) / torch.log2(positions + 2.0)  # (N, O)
    return (gains * weights).sum(dim=1) / (ideal * weights).sum(dim=1)


class VisDialEvaluator(Evaluator):
    """Visual Dialog: each round's 100 answer options ranked by their `vil_logit` (items are
    (round, option) pairs, item = round * 100 + option). Metrics over the rounds whose 100 options
    were all scored: MRR, R@1/5/10, mean rank (rounds with a right answer) and NDCG (rounds with
    dense annotations). Results: [{"image_id", "round_id", "ranks"}] (the EvalAI submission)."""

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        index = batch["index"].to(logits.device)
        self._slot("score", (), torch.float32, logits.device, float("-inf"))[index] = logits.float().view(-1)
        self._mark_seen(index)

    def round_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rounds, options) scores and a (rounds,) bool of the rounds with every option scored."""
        options = len(self.dataset) // len(self.dataset.round_rows)
        return self.slots["score"].cpu().view(-1, options), self.seen().view(-1, options).all(dim=1)

    def compute(self) -> dict[str, float]:
        if "score" not in self.slots:
            return {}
        scores, complete = self.round_scores()
        gt = torch.as_tensor(self.dataset.gt_index)
        answered = complete & (gt >= 0)
        metrics = {}
        if answered.any():
            metrics.update(answer_rank_metrics(option_ranks(scores[answered]).gather(1, gt[answered, None]).squeeze(1)))
        dense = complete & torch.as_tensor(self.dataset.has_relevance)
        if dense.any():
            metrics["NDCG"] = float(ndcg(scores[dense], torch.as_tensor(self.dataset.relevance)[dense]).mean() * 100)
        return metrics

    def results(self) -> list[dict]:
        scores, complete = self.round_scores()
        ranks = option_ranks(scores)
        records = []
        for m in torch.nonzero(complete).flatten().tolist():
            image_id, round_id = self.dataset.round_key(m)
            records.append({"image_id": image_id, "round_id": round_id, "ranks": ranks[m].tolist()})
        return records


class CandidateEvaluator(TopLabelEvaluator):
    """V-logit-mc (Visual7W, GuessWhat?! pointing) accuracy: the top-scored candidate box is the
    answer. Results: the dataset's `result_record(item, candidate)` of the chosen candidate."""

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        device = logits.device
        index = batch["index"].to(device)
        batch = {key: batch[key].to(device) for key in ("candidate_regions", "candidate_mask", "target")}
        self._slot("prediction", (), torch.long, device, -1)[index] = candidate_scores(logits, batch).argmax(dim=1)
        self._slot("score", (), torch.float32, device, -1.0)[index] = top_candidate_score(logits, batch)
        self._mark_seen(index)
