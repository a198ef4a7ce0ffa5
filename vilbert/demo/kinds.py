"""The demo's VQA and VCR results by question kind: which questions the model answers from the picture.

    python -m vilbert.demo kinds --data data/demo --results results/demo

Reads the official val files of the demo world and the result files `eval_tasks.py` wrote under
`<results>/eval/` (`val_VQA_result.json`, `val_VCR_Q-A_result.json`). VQA questions are grouped by
the generator's kinds (vilbert/demo/vqa.py): existence, verify (one object's colour or shape),
relation (two objects' places), colour/shape (open), count, spatial ("what is left of / above");
each with the official soft accuracy and the share of exact answers (a yes/no kind answered at
chance scores about 50% exact but 65-70% soft: dissenting votes give partial credit). VCR Q->A is
grouped by the question's first word ("What color is [i]?" against "Where is [i]?").
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from vilbert.tasks.metrics import normalize_answer, vqa_accuracy

VQA_KINDS = ("exist", "verify", "relation", "colour/shape", "count", "spatial")
_RELATION = re.compile(r"^Is the .+ (to the left of|above) the .+\?$")


def vqa_kind(question: str) -> str:
    """The generator's kind of a demo VQA question (vilbert/demo/vqa.py templates)."""
    if question.startswith("Is there "):
        return "exist"
    if _RELATION.match(question):
        return "relation"
    if question.startswith("Is the "):
        return "verify"
    if question.startswith("How many "):
        return "count"
    if " left of the " in question or " above the " in question:
        return "spatial"
    return "colour/shape"


def _find(results: Path, name: str) -> Path:
    found = sorted(results.glob(f"eval/**/{name}"))
    if not found:
        raise FileNotFoundError(f"{results}/eval: no {name} (run the demo, or eval_tasks.py --split val, first)")
    return found[0]


def vqa_by_kind(data: Path, result_file: Path) -> dict[str, dict]:
    """{kind: {"questions", "accuracy", "exact"}} (percent) over the val questions answered in result_file."""
    vqa = data / "vqa"
    questions = json.loads((vqa / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    annotations = json.loads((vqa / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    text = {q["question_id"]: q["question"] for q in questions}
    annotation = {a["question_id"]: a for a in annotations}
    scores: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for row in json.loads(result_file.read_text()):
        qid = row["question_id"]
        if qid not in annotation:
            raise ValueError(f"{result_file}: question_id {qid} is not in the val annotations of {vqa}")
        answers = [a["answer"] for a in annotation[qid]["answers"]]
        score = vqa_accuracy(row["answer"], answers)
        exact = normalize_answer(row["answer"]) == normalize_answer(annotation[qid]["multiple_choice_answer"])
        scores[vqa_kind(text[qid])].append((score, exact))
        scores["all"].append((score, exact))
    return {kind: {"questions": len(rows), "accuracy": 100 * sum(s for s, _ in rows) / len(rows),
                   "exact": 100 * sum(e for _, e in rows) / len(rows)}
            for kind in (*VQA_KINDS, "all") if (rows := scores.get(kind))}


def vcr_by_kind(data: Path, result_file: Path) -> dict[str, dict]:
    """{question's first word: {"questions", "accuracy"}} of VCR Q->A on val (percent)."""
    probs = {row["annot_id"]: row["answer_probs"] for row in json.loads(result_file.read_text())}
    hits: dict[str, list[bool]] = defaultdict(list)
    with open(data / "vcr" / "val.jsonl") as lines:
        for line in lines:
            record = json.loads(line)
            p = probs.get(record["annot_id"])
            if p is None:
                continue
            first = record["question"][0]
            kind = f"{first} ..." if isinstance(first, str) else "other"
            hit = max(range(len(p)), key=p.__getitem__) == record["answer_label"]
            hits[kind].append(hit)
            hits["all"].append(hit)
    order = sorted(hits, key=lambda kind: (kind == "all", kind))  # "all" last
    return {kind: {"questions": len(hits[kind]), "accuracy": 100 * sum(hits[kind]) / len(hits[kind])} for kind in order}


def report(data, results) -> str:
    """Markdown tables of both breakdowns."""
    data, results = Path(data), Path(results)
    lines = ["| VQA minval: question kind | questions | soft accuracy | exact answer |", "|---|---|---|---|"]
    for kind, row in vqa_by_kind(data, _find(results, "val_VQA_result.json")).items():
        lines.append(f"| {kind} | {row['questions']} | {row['accuracy']:.1f} | {row['exact']:.1f} |")
    lines += ["", "| VCR Q->A val: question | questions | accuracy |", "|---|---|---|"]
    for kind, row in vcr_by_kind(data, _find(results, "val_VCR_Q-A_result.json")).items():
        lines.append(f"| {kind} | {row['questions']} | {row['accuracy']:.1f} |")
    return "\n".join(lines) + "\n"
