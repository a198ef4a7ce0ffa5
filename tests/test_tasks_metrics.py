import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vilbert.tasks import losses
from vilbert.tasks.metrics import (
    ReferEvaluator, RetrievalEvaluator, VCREvaluator, VQAEvaluator, answer_score, box_iou,
    image_to_text_recall, joint_metrics, normalize_answer, process_punctuation, recall_at_k,
    retrieval_ranks, text_to_image_recall, vcr_joint, vqa_accuracy,
)


def test_answer_normalisation_as_the_official_script():
    assert process_punctuation("yes.") == "yes"
    assert process_punctuation("t-shirt") == "t shirt"  # no space around "-": replaced by a space
    assert process_punctuation("yes !") == "yes "  # a space next to it: removed
    assert process_punctuation("3.5") == "3.5"  # a period before a digit stays
    assert normalize_answer("Two Dogs") == "2 dogs"
    assert normalize_answer("the cat") == "cat" and normalize_answer("A") == ""
    assert normalize_answer("dont") == "don't" and normalize_answer("isnt it") == "isn't it"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("  none\t") == "0"


def test_vqa_soft_accuracy_hand_computed():
    gts = ["2", "2", "two"] + ["3"] * 7  # annotators disagree: everything is normalised
    # "two" -> "2", given by 3: leaving out one of those 3 leaves 2 matches (2/3), else 3 (1).
    assert vqa_accuracy("two", gts) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("Three.", gts) == pytest.approx(1.0)
    assert vqa_accuracy("4", gts) == 0.0
    # Unanimous answers are compared as they are (the official script's behaviour).
    assert vqa_accuracy("2", ["2"] * 10) == 1.0 and vqa_accuracy("two", ["2"] * 10) == 0.0
    # The training soft scores are exactly the official accuracy of an answer n annotators gave.
    assert [answer_score(n) for n in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    for n in range(11):
        assert vqa_accuracy("yes", ["yes"] * n + ["no"] * (10 - n)) == pytest.approx(answer_score(n))


def test_box_iou_and_ranks():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([25 / 175, 1.0, 0.0]))

    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.4, 0.4, 0.1]])  # 3 captions x 3 images
    ranks = retrieval_ranks(scores, torch.tensor([0, 0, 1]))
    assert ranks.tolist() == [1, 3, 2]  # a tie counts against the query
    assert recall_at_k(ranks, (1, 2, 3)) == {"R@1": pytest.approx(100 / 3), "R@2": pytest.approx(200 / 3), "R@3": 100.0}
    # Images 0 and 1 each rank all captions; image 0's captions are 0 and 1, image 1's is 2.
    i2t = image_to_text_recall(scores, torch.tensor([0, 0, 1]), ks=(1,))
    assert i2t["R@1"] == pytest.approx(100 * 2 / 3)  # image 0: caption 0 first; image 1: caption 1 first; image 2: none
    assert text_to_image_recall(scores, torch.tensor([0, 0, 1]), ks=(1,))["R@1"] == pytest.approx(100 / 3)


def test_losses_match_the_originals_scales():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 5), torch.rand(3, 5)
    expected = F.binary_cross_entropy_with_logits(logits, target) * 5
    torch.testing.assert_close(losses.vl_classifier_loss(logits, {"target": target}), expected)

    option_logits, label = torch.randn(8, 1), torch.tensor([2, 0])
    torch.testing.assert_close(losses.vl_logit_loss(option_logits, {"target": label}),
                               F.cross_entropy(option_logits.view(2, 4), label))

    # V-logit: the originals add -10000 to padding logits and take mean * R; we mask instead.
    region_logits, iou = torch.randn(2, 6, 1), torch.rand(2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    iou = iou * mask
    pushed = region_logits.squeeze(-1) + (1 - mask) * -10000.0
    original = F.binary_cross_entropy_with_logits(pushed, iou) * 6
    ours = losses.v_logit_loss(region_logits, {"target": iou, "image_attention_mask": mask})
    torch.testing.assert_close(ours, original)


def test_vqa_evaluator_and_submission(tmp_path):
    dataset = SimpleNamespace(question_ids=np.array([7, 8, 9]), label2ans=["yes", "no", "2"])
    evaluator = VQAEvaluator(_Sized(dataset, 3))
    target = torch.tensor([[1.0, 0, 0], [0, 0.3, 0.9], [0, 0, 0]])
    logits = torch.tensor([[5.0, 0, 0], [0, 3, 1], [0, 0, 4]])
    evaluator.update(logits[:2], {"index": torch.tensor([0, 1]), "target": target[:2]})
    evaluator.update(logits[2:], {"index": torch.tensor([2]), "target": target[2:]})
    assert evaluator.compute() == {"accuracy": pytest.approx((1 + 0.3 + 0) / 3 * 100)}
    path = evaluator.write(tmp_path / "out" / "vqa.json")
    assert json.loads(path.read_text()) == [
        {"question_id": 7, "answer": "yes"}, {"question_id": 8, "answer": "no"}, {"question_id": 9, "answer": "2"}]


class _Sized:
    """A stand-in dataset: attributes of `inner`, and a length."""

    def __init__(self, inner, n):
        self.__dict__.update(vars(inner))
        self.n = n

    def __len__(self):
        return self.n


def _vcr(mode, labels):
    inner = SimpleNamespace(mode=mode, metric_name=mode, labels=np.array(labels), has_labels=True,
                            annot_ids=[f"val-{i}" for i in range(len(labels))], answer_indices=None)
    return _Sized(inner, len(labels))


def test_vcr_evaluators_and_q2ar():
    q2a, qa2r = VCREvaluator(_vcr("q2a", [0, 1, 2])), VCREvaluator(_vcr("qa2r", [3, 3, 0]))
    # Option logits (B*4, 1): answers right for items 0 and 1; rationales right for 0 and 2.
    q2a.update(torch.tensor([9.0, 0, 0, 0, 0, 9, 0, 0, 9, 0, 0, 0])[:, None], {"index": torch.tensor([0, 1, 2])})
    qa2r.update(torch.tensor([0, 0, 0, 9.0, 9, 0, 0, 0, 9, 0, 0, 0])[:, None], {"index": torch.tensor([0, 1, 2])})
    assert q2a.compute() == {"q2a": pytest.approx(200 / 3)} and qa2r.compute() == {"qa2r": pytest.approx(200 / 3)}
    metrics, records = vcr_joint(q2a, qa2r)
    assert metrics == {"q2ar": pytest.approx(100 / 3)}  # only item 0 has both right
    assert records[0]["annot_id"] == "val-0" and records[0]["q2ar_correct"] is True
    assert sum(records[1]["answer_probs"]) == pytest.approx(1.0)
    assert joint_metrics({"VCR_Q-A": q2a, "VCR_QA-R": qa2r, "VQA": None}) == {
        "VCR_Q-A": {"q2ar": pytest.approx(100 / 3)}, "VCR_QA-R": {"q2ar": pytest.approx(100 / 3)}}


def test_refer_evaluator_uses_iou_of_the_chosen_box():
    entries = [{"ref_id": 1, "sent_id": 10, "image_id": 5}, {"ref_id": 2, "sent_id": 11, "image_id": 5}]
    evaluator = ReferEvaluator(_Sized(SimpleNamespace(result_ids=entries.__getitem__), 2))
    boxes = torch.tensor([[0.0, 0, 100, 100], [0, 0, 10, 10], [50, 50, 60, 60]]).expand(2, 3, 4)
    logits = torch.tensor([[[0.0], [5.0], [1.0]], [[0.0], [1.0], [9.0]]])  # item 1's best is padding
    batch = {"index": torch.tensor([0, 1]), "region_boxes": boxes,
             "image_attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "ref_box": torch.tensor([[0.0, 0, 10, 12], [50, 50, 60, 60]])}
    evaluator.update(logits, batch)
    assert evaluator.compute() == {"accuracy": 50.0}
    first, second = evaluator.results()
    assert first["box"] == [0, 0, 10, 10] and first["iou"] == pytest.approx(100 / 120, abs=1e-4) and first["correct"]
    assert second["box"] == [0, 0, 10, 10] and not second["correct"]  # padding row 2 was never chosen
    assert {k: first[k] for k in entries[0]} == entries[0]  # the dataset's ids open each record


def test_retrieval_evaluator_ranks_pairs_in_image_major_order():
    inner = SimpleNamespace(num_captions=3, num_images=2, caption_image_index=np.array([0, 1, 1]),
                            image_ids=["a", "b"], captions=["c0", "c1", "c2"])
    evaluator = RetrievalEvaluator(_Sized(inner, 6))
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])  # (captions, images)
    pair_scores = scores.t().reshape(-1, 1)  # item k = image * 3 + caption
    evaluator.update(pair_scores[:4], {"index": torch.arange(4)})
    assert evaluator.compute() == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}  # caption 0 alone is complete
    evaluator.update(pair_scores[4:], {"index": torch.arange(4, 6)})
    # Captions: 0 -> image a first (right), 1 -> b first (right), 2 -> a first (wrong, rank 2).
    assert evaluator.compute() == {"R@1": pytest.approx(200 / 3), "R@5": 100.0, "R@10": 100.0}
    records = evaluator.results()
    assert [r["rank"] for r in records] == [1, 1, 2]
    assert records[2] == {"caption_index": 2, "caption": "c2", "image_id": "b", "rank": 2, "top_image_ids": ["a", "b"]}


class _Questions:
    """A picklable stand-in VQA dataset of 5 questions (for the spawned ranks below)."""

    question_ids = np.arange(10, 15)
    label2ans = ["yes", "no"]

    def __len__(self):
        return 5


def _sync_rank(rank, world_size, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    evaluator = VQAEvaluator(_Questions())
    target = torch.tensor([[1.0, 0], [0, 1], [0.3, 0.6], [1, 0], [0, 0.9]])
    logits = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 0], [0, 1]])  # scores 1, 0, 0.6, 1, 0.9
    # A DistributedSampler's split of 5 items over 2 ranks: rank 1 gets item 0 again as padding.
    index = torch.tensor([[0, 2, 4], [1, 3, 0]][rank])
    evaluator.update(logits[index], {"index": index, "target": target[index]})
    evaluator.sync()
    if rank == 0:
        torch.save({"metrics": evaluator.compute(), "results": evaluator.results()}, out_file)
    torch.distributed.destroy_process_group()


def test_evaluator_sync_counts_each_item_once_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_sync_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["metrics"] == {"accuracy": pytest.approx((1 + 0 + 0.6 + 1 + 0.9) / 5 * 100)}
    assert [r["question_id"] for r in out["results"]] == [10, 11, 12, 13, 14]
