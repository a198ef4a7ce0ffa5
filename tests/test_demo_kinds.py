import json

from vilbert.demo.__main__ import main
from vilbert.demo.kinds import vcr_by_kind, vqa_by_kind, vqa_kind

QUESTIONS = {
    1: ("Is there a red circle?", "exist"),
    2: ("Is the small circle red?", "verify"),
    3: ("Is the red object a square?", "verify"),
    4: ("Is the star to the left of the blue square?", "relation"),
    5: ("Is the large circle above the green cross?", "relation"),
    6: ("What color is the circle?", "colour/shape"),
    7: ("What is the shape of the red object?", "colour/shape"),
    8: ("How many circles are there?", "count"),
    9: ("What shape is to the left of the green square?", "spatial"),
    10: ("What color is the object above the red star?", "spatial"),
}


def test_question_kinds_follow_the_generator_templates():
    for text, kind in QUESTIONS.values():
        assert vqa_kind(text) == kind, text


def _world(tmp_path):
    vqa = tmp_path / "data" / "vqa"
    vqa.mkdir(parents=True)
    questions = [{"question_id": qid, "image_id": 1, "question": text} for qid, (text, _) in QUESTIONS.items()]
    (vqa / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    # Question 4: 7 "yes" and 3 "no" votes, so "no" earns partial credit.
    votes = {qid: ["yes"] * 10 for qid in QUESTIONS}
    votes[4] = ["yes"] * 7 + ["no"] * 3
    votes[6] = ["red"] * 10
    annotations = [{"question_id": qid, "multiple_choice_answer": v[0], "answers": [{"answer": a} for a in v]}
                   for qid, v in votes.items()]
    (vqa / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    vcr = tmp_path / "data" / "vcr"
    vcr.mkdir()
    records = [{"annot_id": "val-0", "question": ["Where", "is", [0], "?"], "answer_label": 1},
               {"annot_id": "val-1", "question": ["What", "color", "is", [0], "?"], "answer_label": 2},
               {"annot_id": "val-2", "question": ["What", "color", "is", [1], "?"], "answer_label": 0}]
    (vcr / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results = tmp_path / "results" / "eval"
    (results / "tasks1").mkdir(parents=True)
    (results / "tasks6-7").mkdir(parents=True)
    answers = {qid: "yes" for qid in QUESTIONS}
    answers[4] = "no"  # wrong, partial credit
    answers[6] = "blue"  # wrong, no credit
    (results / "tasks1" / "val_VQA_result.json").write_text(
        json.dumps([{"question_id": qid, "answer": a} for qid, a in answers.items()]))
    (results / "tasks6-7" / "val_VCR_Q-A_result.json").write_text(json.dumps([
        {"annot_id": "val-0", "answer_probs": [0.7, 0.1, 0.1, 0.1]},  # wrong
        {"annot_id": "val-1", "answer_probs": [0.1, 0.1, 0.7, 0.1]},  # right
        {"annot_id": "val-2", "answer_probs": [0.7, 0.1, 0.1, 0.1]}]))  # right
    return tmp_path / "data", tmp_path / "results"


def test_breakdowns_score_each_kind(tmp_path):
    data, results = _world(tmp_path)
    vqa = vqa_by_kind(data, results / "eval" / "tasks1" / "val_VQA_result.json")
    assert vqa["relation"]["questions"] == 2
    # "no" with 3 of 10 votes: min(1, matches / 3) over the 10 leave-one-out subsets = (3 * 2/3 + 7) / 10.
    assert abs(vqa["relation"]["accuracy"] - (100 + 90) / 2) < 1e-6
    assert vqa["relation"]["exact"] == 50.0
    assert vqa["colour/shape"]["accuracy"] == 50.0 and vqa["verify"]["accuracy"] == 100.0
    assert vqa["all"]["questions"] == 10
    vcr = vcr_by_kind(data, results / "eval" / "tasks6-7" / "val_VCR_Q-A_result.json")
    assert list(vcr) == ["What ...", "Where ...", "all"]
    assert vcr["Where ..."]["accuracy"] == 0.0 and vcr["What ..."]["accuracy"] == 100.0


def test_cli_prints_tables_and_names_a_missing_result(tmp_path, capsys):
    data, results = _world(tmp_path)
    assert main(["kinds", "--data", str(data), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "| relation | 2 | 95.0 | 50.0 |" in out and "| Where ... | 1 | 0.0 |" in out
    assert main(["kinds", "--data", str(data), "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "val_VQA_result.json" in err
