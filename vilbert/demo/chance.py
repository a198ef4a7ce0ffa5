"""Chance rates and baselines of the demo world, and the linear probe of its region features.

CHANCE.json (values in percent, like the metrics):
  VQA        majority-answer soft accuracy on minval (always the commonest trainval answer); the
             best answer per question template (colour/shape/size words masked), i.e. the most
             any model can get from the question's form; a bag-of-words logistic regression from
             question to answer (text only), also per answer type next to the majority answer;
             and the oracle (always the top human answer).
  VCR        25 for Q->A and QA->R (4 choices), 6.25 for Q->AR.
  refcoco+   the best fixed rule on val over the detection boxes (largest box, most confident box,
             box nearest the centre, a random box), and the upper bound (refs with any detection of
             IoU > 0.5 with the referred box).
  retrieval  R@1/5/10 of a random ranking of the test pictures (100: 1, 5, 10), finetuned and zero-shot.
  alignment  50: half the pretraining pairs are random captions.
With `make-world --twelve`, vilbert/demo/twelve.py adds the rates of 12-in-1's added tasks, from
the files it writes (majority label, 1 / candidates, a random box or ranking).
"""

from __future__ import annotations

import numpy as np

from .text import question_template, question_words
from .vqa import normalize_answer, soft_scores
from .world import box_iou

MINVAL_SIZE = 3000  # the originals hold the last 3000 val questions (by id) out of trainval


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 300, lr: float = 0.05,
                l2: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch Adam (deterministic) -> (weights, bias).
    x (N, D) float32, y (N,) int class ids."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    w = np.zeros((d, num_classes), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        logits = x @ w + b  # (N, C)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad_logits = (p - onehot) / n
        grads = [x.T @ grad_logits + l2 * w, grad_logits.sum(axis=0)]
        for k, (param, g) in enumerate(zip((w, b), grads)):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            param -= lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    return w, b


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, steps: int = 200) -> float:
    """Accuracy (0-1) of a logistic regression fitted on (train_x, train_y), on the test set.
    Features are standardised with the training statistics first."""
    train_x = np.asarray(train_x, dtype=np.float32)
    test_x = np.asarray(test_x, dtype=np.float32)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    w, b = fit_softmax((train_x - mean) / std, np.asarray(train_y), num_classes, steps=steps)
    predictions = (((test_x - mean) / std) @ w + b).argmax(axis=1)
    return float((predictions == np.asarray(test_y)).mean())


def vqa_splits(val_questions: list[dict], val_annotations: list[dict]):
    """Indices of val questions in trainval and in minval (the last 3000 by question id)."""
    order = sorted(range(len(val_questions)), key=lambda k: val_questions[k]["question_id"])
    cut = max(0, len(order) - MINVAL_SIZE)
    return order[:cut], order[cut:]


def _bag_of_words(questions: list[str], vocabulary: dict[str, int]) -> np.ndarray:
    """Unigram + bigram counts -> (N, V) float32."""
    x = np.zeros((len(questions), len(vocabulary)), dtype=np.float32)
    for row, question in enumerate(questions):
        words = question_words(question)
        for gram in words + [" ".join(p) for p in zip(words, words[1:])]:
            if gram in vocabulary:
                x[row, vocabulary[gram]] += 1
    return x


def text_only_scores(train_questions, train_answers, eval_questions, eval_annotations) -> np.ndarray:
    """Soft score (0-1) per eval question of a bag-of-words logistic regression from question to
    answer (unigrams and bigrams, fitted on the training questions' multiple-choice answers)."""
    grams: dict[str, int] = {}
    for q in train_questions:
        words = question_words(q)
        for gram in words + [" ".join(p) for p in zip(words, words[1:])]:
            grams.setdefault(gram, len(grams))
    answers = sorted(set(train_answers))
    label = {a: k for k, a in enumerate(answers)}
    w, b = fit_softmax(_bag_of_words(train_questions, grams), np.array([label[a] for a in train_answers]),
                       len(answers), steps=200, lr=0.1, l2=1e-3)
    predictions = (_bag_of_words(eval_questions, grams) @ w + b).argmax(axis=1)
    return np.array([soft_scores(a["answers"]).get(answers[p], 0.0) for a, p in zip(eval_annotations, predictions)])


def text_only_accuracy(train_questions, train_answers, eval_questions, eval_annotations) -> float:
    """Soft accuracy (percent) of the bag-of-words model of `text_only_scores`."""
    return 100.0 * float(np.mean(text_only_scores(train_questions, train_answers, eval_questions, eval_annotations)))


def best_answer_per_template(fit_questions, fit_scores, eval_questions, eval_scores, fallback: str) -> float:
    """Soft accuracy (percent) of answering each question template with the answer of highest mean
    soft score on the fitting questions of that template: the best any model can do from the
    question's form alone."""
    totals: dict[str, dict[str, float]] = {}
    for question, scores in zip(fit_questions, fit_scores):
        bucket = totals.setdefault(question_template(question), {})
        for answer, score in scores.items():
            bucket[answer] = bucket.get(answer, 0.0) + score
    best = {t: max(sorted(b), key=b.get) for t, b in totals.items()}
    picks = [best.get(question_template(q), fallback) for q in eval_questions]
    return 100.0 * float(np.mean([s.get(p, 0.0) for s, p in zip(eval_scores, picks)]))


def vqa_rates(train: tuple, val: tuple) -> dict:
    """VQA rates on minval from (questions, annotations) of train and val (official dicts)."""
    train_q, train_a = train[:2]
    val_q, val_a = val[:2]
    in_trainval, in_minval = vqa_splits(val_q, val_a)
    fit_q = [q["question"] for q in train_q] + [val_q[k]["question"] for k in in_trainval]
    fit_annotations = list(train_a) + [val_a[k] for k in in_trainval]
    fit_a = [normalize_answer(a["multiple_choice_answer"]) for a in fit_annotations]
    eval_q = [val_q[k]["question"] for k in in_minval]
    eval_a = [val_a[k] for k in in_minval]
    eval_scores = [soft_scores(a["answers"]) for a in eval_a]

    values, counts = np.unique(fit_a, return_counts=True)
    majority = str(values[int(np.argmax(counts))])
    template = best_answer_per_template(fit_q, [soft_scores(a["answers"]) for a in fit_annotations],
                                        eval_q, eval_scores, majority)
    majority_scores = np.array([s.get(majority, 0.0) for s in eval_scores])
    text_scores = text_only_scores(fit_q, fit_a, eval_q, eval_a)
    # Where the text-only model gains: on yes/no questions it can do no better than the majority
    # answer; on the others, whatever each template's answer prior allows.
    by_type = {}
    for answer_type in sorted({a["answer_type"] for a in eval_a}):
        rows = np.array([a["answer_type"] == answer_type for a in eval_a])
        by_type[answer_type] = {
            "questions": int(rows.sum()),
            "majority": round(100.0 * float(majority_scores[rows].mean()), 2),
            "text_only": round(100.0 * float(text_scores[rows].mean()), 2),
        }
    return {
        "majority_answer": majority,
        "accuracy": round(100.0 * float(majority_scores.mean()), 2),
        "best_answer_per_question_template": round(template, 2),
        "text_only_bag_of_words": round(100.0 * float(text_scores.mean()), 2),
        "by_answer_type": by_type,
        "oracle": round(100.0 * float(np.mean([max(s.values()) for s in eval_scores])), 2),
        "split": "minval",
    }


def refcoco_rates(refs: list[dict], instances: dict, detected: dict, split: str = "val") -> dict:
    """Accuracy (IoU > 0.5) of fixed box-picking rules on the detection boxes of `split`."""
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    hits = {"largest_box": [], "most_confident_box": [], "box_nearest_center": [], "random_box": [], "upper_bound": []}
    for ref in refs:
        if ref["split"] != split:
            continue
        x, y, w, h = anns[ref["ann_id"]]["bbox"]
        entry = detected[str(ref["image_id"])]
        boxes = np.asarray(entry["boxes"], dtype=np.float64)
        probs = np.asarray(entry["cls_prob"], dtype=np.float64)
        good = box_iou(boxes, np.array([[x, y, x + w, y + h]]))[:, 0] > 0.5
        image = images[ref["image_id"]]
        centre = np.array([image["width"], image["height"]]) / 2
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        distances = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
        for _ in ref["sentences"]:  # accuracy is over expressions, as the metric
            hits["largest_box"].append(good[int(np.argmax(areas))])
            hits["most_confident_box"].append(good[int(np.argmin(probs[:, 0]))])
            hits["box_nearest_center"].append(good[int(np.argmin(distances))])
            hits["random_box"].append(good.mean())
            hits["upper_bound"].append(good.any())
    rates = {k: round(100.0 * float(np.mean(v)), 2) for k, v in hits.items()}
    rules = {k: v for k, v in rates.items() if k != "upper_bound"}
    best = max(rules, key=rules.get)
    return {"accuracy": rules[best], "rule": best, "rules": rules, "upper_bound": rates["upper_bound"], "split": split}


def chance_rates(vqa_train, vqa_val, refs, instances, detected, retrieval_images: int = 100) -> dict:
    """The content of CHANCE.json (see the module docstring)."""
    recall = {f"R@{k}": round(min(100.0, 100.0 * k / retrieval_images), 2) for k in (1, 5, 10)}
    return {
        "VQA": vqa_rates(vqa_train, vqa_val),
        "VCR_Q-A": {"accuracy": 25.0},
        "VCR_QA-R": {"accuracy": 25.0},
        "VCR_Q-AR": {"accuracy": 6.25},
        "refcoco+": refcoco_rates(refs, instances, detected),
        "RetrievalFlickr30k": {**recall, "images": retrieval_images},
        "RetrievalFlickr30k_zero_shot": {**recall, "images": retrieval_images},
        "alignment": {"accuracy": 50.0},
    }
