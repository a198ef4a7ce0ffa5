"""Visual Dialog's ranking metrics (R@k, MRR, mean rank, NDCG) and the V-logit-mc loss, score and
accuracy (Visual7W / GuessWhat?! pointing), each against a hand-computed case."""

import math

import pytest
import torch

from _taskdata_helpers import load_test_tokenizer
from _taskdata_twelve_b import build_one_task, visdial_world
from vilbert.tasks import losses
from vilbert.tasks.metrics import CandidateEvaluator, answer_rank_metrics, ndcg, option_ranks


def test_option_ranks_are_one_based_and_break_ties_by_option_order():
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0], [0.1, 0.4, 0.3, 0.2]])
    assert option_ranks(scores).tolist() == [[3, 1, 2, 4], [4, 1, 2, 3]]


def test_answer_rank_metrics_by_hand():
    metrics = answer_rank_metrics(torch.tensor([1, 3, 7, 20]))
    assert metrics == pytest.approx({"MRR": 100 * (1 + 1 / 3 + 1 / 7 + 1 / 20) / 4, "R@1": 25.0, "R@5": 50.0,
                                     "R@10": 75.0, "mean_rank": 31 / 4})


def test_ndcg_by_hand_cuts_at_the_number_of_relevant_options():
    relevance = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0]])
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5],  # order 0, 1, 3, 2: gains 0, 1 in the top K = 2
                           [0.0, 0.9, 0.8, 0.1]])  # the ideal order
    ideal = 1 + 0.5 / math.log2(3)
    expected = [(0 / math.log2(2) + 1 / math.log2(3)) / ideal, 1.0]
    torch.testing.assert_close(ndcg(scores, relevance), torch.tensor(expected))


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def test_visdial_evaluator_by_hand(tmp_path, tokenizer):
    visdial_world(tmp_path, val_rounds=3)
    task = build_one_task(tmp_path, "TASK3", name="VisualDialog", type="VL-logit", loss="CrossEntropyLoss",
                          dataroot="visdial", features_h5path1="visdial/coco.lmdb")
    val = task.dataset("val", tokenizer)  # 2 dialogs x 3 rounds; round r of dialog d: answer (3r + d) % 100
    assert len(val) == 600 and val.gt_index.tolist() == [2, 5, 8, 3, 6, 9]
    option = torch.arange(600) % 100
    scores = -option.float()[:, None]  # option 0 first: the answer's rank is its option + 1

    evaluator = task.evaluator(val)
    evaluator.update(scores, {"index": torch.arange(600)})
    ranks = [3, 6, 9, 4, 7, 10]
    # Dense annotations: image 3 round 2 (relevant options 0, 1, 50: 1, .5, .5) and image 4 round 1
    # (options 1, 2, 50); K = 3 relevant options; the ranking is by option number.
    ideal = 1 + 0.5 / math.log2(3) + 0.5 / 2
    ndcg_3 = (1 + 0.5 / math.log2(3)) / ideal
    ndcg_4 = (1 / math.log2(3) + 0.5 / 2) / ideal
    assert evaluator.compute() == pytest.approx({
        "MRR": 100 * sum(1 / r for r in ranks) / 6, "R@1": 0.0, "R@5": 100 * 2 / 6, "R@10": 100.0,
        "mean_rank": sum(ranks) / 6, "NDCG": 100 * (ndcg_3 + ndcg_4) / 2})
    records = evaluator.results()
    assert [(r["image_id"], r["round_id"]) for r in records] == [(3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3)]
    assert records[0]["ranks"] == list(range(1, 101))

    partial = task.evaluator(val)  # rounds 0 and 1 complete, round 2 half scored: left out
    partial.update(scores[:250], {"index": torch.arange(250)})
    assert partial.compute() == pytest.approx({"MRR": 100 * (1 / 3 + 1 / 6) / 2, "R@1": 0.0, "R@5": 50.0,
                                               "R@10": 100.0, "mean_rank": 4.5, "NDCG": 100 * ndcg_3})
    assert len(partial.results()) == 2


def test_dialog_targets_of_several_questions_per_item():
    torch.manual_seed(0)
    logits = torch.randn(2 * 3 * 4, 1)  # 2 dialogs x 3 rounds x 4 options, rounds in order
    target = torch.tensor([[0, 1, 3], [2, 0, 0]])
    expected = torch.nn.functional.cross_entropy(logits.view(6, 4), target.view(6))
    torch.testing.assert_close(losses.vl_logit_loss(logits, {"target": target}), expected)
    right = (logits.view(6, 4).argmax(1) == target.view(6)).float()
    torch.testing.assert_close(losses.top_option_score(logits, {"target": target}), right)


def _pointing_batch():
    # 2 items, 5 regions; item 0 has 3 candidates (regions 1, 2, 3), item 1 has 2 (regions 4, 1).
    return {"candidate_regions": torch.tensor([[1, 2, 3, 0], [4, 1, 0, 0]]),
            "candidate_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
            "target": torch.tensor([[0.0, 0.8, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), "index": torch.tensor([0, 1])}


def test_v_logit_mc_loss_by_hand_leaves_padding_candidates_out():
    batch = _pointing_batch()
    logits = torch.tensor([[9.0, 1.0, -1.0, 2.0, 0.5], [9.0, 0.0, 0.3, -0.2, 1.5]])[..., None]  # (2, 5, 1)

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    terms = [bce(1.0, 0.0), bce(-1.0, 0.8), bce(2.0, 1.0), bce(1.5, 1.0), bce(0.0, 0.0)]
    assert float(losses.v_logit_mc_loss(logits, batch)) == pytest.approx(sum(terms) / 2, rel=1e-5)
    # Without padding candidates it is 12-in-1's mean over (B, C) times C.
    full = {"candidate_regions": torch.tensor([[1, 2], [4, 1]]), "candidate_mask": torch.ones(2, 2),
            "target": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}
    scores = logits.squeeze(-1).gather(1, full["candidate_regions"])
    original = torch.nn.functional.binary_cross_entropy_with_logits(scores, full["target"]) * 2
    torch.testing.assert_close(losses.v_logit_mc_loss(logits, full), original)


def test_the_top_candidate_must_be_the_answer_box_and_padding_is_never_chosen():
    batch = _pointing_batch()
    # Region 0 (a padding candidate's row) scores highest everywhere; item 0 picks region 2 (IoU 0.8,
    # not the answer), item 1 picks region 4 (the answer).
    logits = torch.tensor([[9.0, 0.0, 3.0, 1.0, 0.0], [9.0, 0.0, 0.0, 0.0, 2.0]])[..., None]
    assert losses.top_candidate_score(logits, batch).tolist() == [0.0, 1.0]
    assert losses.candidate_scores(logits, batch).argmax(1).tolist() == [1, 0]

    class Dataset(list):
        def result_record(self, item, candidate):
            return {"item": item, "candidate": candidate}

    evaluator = CandidateEvaluator(Dataset([0, 1, 2]))
    evaluator.update(logits, batch)
    assert evaluator.compute() == pytest.approx({"accuracy": 50.0})  # item 2 was not seen
    assert evaluator.results() == [{"item": 0, "candidate": 1}, {"item": 1, "candidate": 0}]
