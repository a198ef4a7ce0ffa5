"""train_tasks.py, eval_tasks.py and eval_retrieval.py end to end (real command lines, subprocesses)
on a tiny demo world with a tiny model, plus the library pieces they stand on (vilbert.finetune)."""

import json
import shutil
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _scripts_helpers import (REPO, make_tiny_world, metrics_records, python, run, save_pretraining_checkpoint,
                              tiny_config, write_task_file)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("scripts")
    world = make_tiny_world(root)
    config = tiny_config(root / "tiny.json")
    pretrained = save_pretraining_checkpoint(config, root / "pretrained")
    return SimpleNamespace(root=root, world=world, config=config, pretrained=pretrained, bert=minilm_dir,
                           tasks=world / "vlbert_tasks.yml")


def weights(run_dir: Path, step: int) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{step}" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"weights differ by {worst}"


def test_readme_command_on_two_processes(setup):
    """The seed README's command as written (plus where to write), with --nproc_per_node=2 on CPU;
    then eval_tasks.py on 2 processes gives exactly what it gives on one."""
    launch = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", "--nnodes=1", "--node_rank=0"]
    result = run([*launch, f"--master_port={free_port()}", REPO / "train_tasks.py", "--bert_model", setup.bert,
                  "--from_pretrained", setup.pretrained, "--config_file", setup.config, "--learning_rate", "4e-5",
                  "--num_workers", "2", "--tasks", "1", "--save_name", "pretrained", "--tasks_config", setup.tasks,
                  "--output_dir", setup.root / "readme", "--num_train_epochs", "1"])
    # 120 trainval questions, the task file's global batch 32 split over the 2 ranks: 3 steps.
    assert "global batch 32 = 2 x 1 x 16" in result.stderr and "on 2 process(es)" in result.stderr
    run_dir = setup.root / "readme" / "VQA_pretrained"
    trained, initial = weights(run_dir, 3), load_file(str(setup.pretrained / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert not torch.equal(trained["vilbert.text_pooler.weight"], initial["vilbert.text_pooler.weight"])
    best = json.loads((run_dir / "best" / "VQA" / "metrics.json").read_text())
    assert best["task"] == "VQA" and best["split"] == "minval" and set(best["metrics"]) == {"accuracy"}
    assert json.loads((run_dir / "val_metrics.json").read_text()) == {"VQA": best["metrics"]}

    evaluate = ["--bert_model", setup.bert, "--from_pretrained", run_dir / "best" / "VQA", "--tasks", "1",
                "--tasks_config", setup.tasks, "--num_workers", "0", "--batch_size", "7"]
    run([*launch, f"--master_port={free_port()}", REPO / "eval_tasks.py", *evaluate, "--output_dir", setup.root / "e2"])
    run(python("eval_tasks.py", *evaluate, "--output_dir", setup.root / "e1"))
    for name in ("val_metrics.json", "val_VQA_result.json"):
        assert (setup.root / "e2" / name).read_text() == (setup.root / "e1" / name).read_text()
    assert json.loads((setup.root / "e1" / "val_metrics.json").read_text())["VQA"] == best["metrics"]


def test_five_tasks_interleave_keep_their_epochs_and_resume(setup):
    # Each task its own batch and epochs; RefCOCO+ at twice the lr (loss scale 2).
    tasks = write_task_file(setup.world, setup.root / "five.yml",
                            TASK1={"batch_size": 16, "num_epoch": 2}, TASK6={"batch_size": 8, "num_epoch": 1},
                            TASK7={"batch_size": 8, "num_epoch": 1}, TASK9={"batch_size": 8, "num_epoch": 1},
                            TASK11={"batch_size": 8, "num_epoch": 2, "lr": 0.0002})
    flags = ["--bert_model", setup.bert, "--from_pretrained", setup.pretrained, "--tasks", "1-6-7-9-11",
             "--tasks_config", tasks, "--output_dir", setup.root / "five", "--save_name", "t", "--num_workers", "0",
             "--learning_rate", "1e-4", "--log_every", "1", "--keep_last", "0", "--val_subset", "3",
             "--vl_classifier", "12in1", "--task_specific_tokens"]
    result = run(python("train_tasks.py", *flags))
    run_dir = setup.root / "five" / "VQA-VCR_Q-A-VCR_QA-R-RetrievalFlickr30k-refcoco+_t"
    assert "loss scale 2" in result.stderr  # RefCOCO+

    # Steps: VQA 7/epoch x 2, VCR 16 annotations / 8 = 2 each, Flickr30k 40 captions / 8 = 5, RefCOCO+ 4 x 2.
    total = 14 + 2 + 2 + 5 + 8
    records = metrics_records(run_dir)
    evaluations = {}
    for record in records:
        for key in record:
            if key.startswith("val/"):
                evaluations.setdefault(key.split("/")[1], set()).add(record["step"])
    assert {name: len(steps) for name, steps in evaluations.items()} == {
        "VQA": 2, "VCR_Q-A": 1, "VCR_QA-R": 1, "RetrievalFlickr30k": 1, "refcoco+": 2}
    # With --log_every 1 each step's record names the one task it trained: the tasks took turns in
    # proportion to their lengths (next_task), each for its own number of steps.
    order = [key.split("/")[1] for record in records for key in record if key.endswith("/loss")]
    lengths = {"VQA": 14, "VCR_Q-A": 2, "VCR_QA-R": 2, "RetrievalFlickr30k": 5, "refcoco+": 8}
    assert order == simulate_turns(lengths)
    assert order[:6] == ["VQA", "refcoco+", "RetrievalFlickr30k", "VQA", "VQA", "refcoco+"]
    best = json.loads((run_dir / "val_metrics.json").read_text())
    assert set(best) == set(evaluations) and set(best["RetrievalFlickr30k"]) == {"R@1", "R@5", "R@10"}
    for name in best:
        assert (run_dir / "best" / name / "model.safetensors").is_file()
    # --val_subset 3: 3 VQA questions (soft scores in thirds of multiples of 0.1), 3 captions x 4 pictures.
    assert min(abs(best["RetrievalFlickr30k"]["R@1"] - 100 * k / 3) for k in range(4)) < 1e-3
    config = json.loads((run_dir / "best" / "VQA" / "config.json").read_text())
    assert config["vl_classifier"] == "12in1" and config["task_specific_tokens"]

    # Resume: drop the final checkpoint, continue from the last one saved at an epoch end.
    final = weights(run_dir, total)
    shutil.rmtree(run_dir / "checkpoints" / f"step-{total}")
    resumed_from = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").iterdir())
    assert resumed_from < total
    result = run(python("train_tasks.py", *flags, "--resume", "auto"))
    assert f"resumed from" in result.stderr and f"at step {resumed_from}" in result.stderr
    assert_same_weights(weights(run_dir, total), final)


def test_a_rerun_trains_the_same_weights(setup):
    """Retrieval draws its negatives with Python's `random`: in the main process (--num_workers 0)
    that generator is seeded from --seed too, so a second run is the same run."""
    finals = []
    for name in ("first", "second"):
        flags = ["--bert_model", setup.bert, "--from_pretrained", setup.pretrained, "--tasks", "9",
                 "--tasks_config", setup.world / "vlbert_tasks.yml", "--output_dir", setup.root / "rerun" / name,
                 "--save_name", "t", "--num_workers", "0", "--max_steps", "4", "--train_batch_size", "4",
                 "--val_subset", "2", "--keep_last", "0"]
        run(python("train_tasks.py", *flags))
        finals.append(weights(setup.root / "rerun" / name / "RetrievalFlickr30k_t", 4))
    assert_same_weights(*finals, atol=0.0)


def test_eval_tasks_writes_metrics_and_result_files(setup):
    source = setup.root / "five" / "VQA-VCR_Q-A-VCR_QA-R-RetrievalFlickr30k-refcoco+_t" / "checkpoints"
    checkpoint = max(source.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    out = setup.root / "eval"
    result = run(python("eval_tasks.py", "--bert_model", setup.bert, "--from_pretrained", checkpoint,
                        "--tasks", "1-6-7-9-11", "--tasks_config", setup.tasks, "--output_dir", out,
                        "--num_workers", "0"))
    metrics = json.loads((out / "val_metrics.json").read_text())
    assert {name: sorted(values) for name, values in metrics.items()} == {
        "VQA": ["accuracy"], "VCR_Q-A": ["q2a", "q2ar"], "VCR_QA-R": ["q2ar", "qa2r"],
        "RetrievalFlickr30k": ["R@1", "R@10", "R@5"], "refcoco+": ["accuracy"]}
    assert all(0 <= v <= 100 for values in metrics.values() for v in values.values())
    assert "| VCR_Q-A | val | q2ar |" in result.stdout
    vqa = json.loads((out / "val_VQA_result.json").read_text())
    assert len(vqa) == 40 and set(vqa[0]) == {"question_id", "answer"}  # minval: 8 pictures x 5
    vcr = json.loads((out / "val_VCR_Q-AR_result.json").read_text())
    assert len(vcr) == 8 and len(vcr[0]["answer_probs"]) == 4 and len(vcr[0]["rationale_probs"]) == 4
    refer = json.loads((out / "val_refcoco+_result.json").read_text())
    assert len(refer[0]["box"]) == 4 and len(refer) == 16
    ranks = json.loads((out / "val_RetrievalFlickr30k_result.json").read_text())
    assert len(ranks) == 20 and all(1 <= r["rank"] <= 4 for r in ranks)

    # The VQA test split: the submission file, every test question once, no annotations needed.
    run(python("eval_tasks.py", "--bert_model", setup.bert, "--from_pretrained", checkpoint, "--task", "1",
               "--split", "test", "--tasks_config", setup.tasks, "--output_dir", out, "--num_workers", "0"))
    submission = json.loads((out / "test_VQA_result.json").read_text())
    questions = json.loads((setup.world / "vqa" / "v2_OpenEnded_mscoco_test2015_questions.json").read_text())
    assert sorted(r["question_id"] for r in submission) == sorted(q["question_id"] for q in questions["questions"])
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in submission)
    assert json.loads((out / "test_metrics.json").read_text()) == {"VQA": {}}


def test_eval_retrieval_zero_shot_and_finetuned(setup):
    out = setup.root / "retrieval"
    result = run(python("eval_retrieval.py", "--zero_shot", "--bert_model", setup.bert, "--from_pretrained",
                        setup.pretrained, "--tasks", "9", "--tasks_config", setup.tasks, "--output_dir", out))
    scores = np.load(out / "test_RetrievalFlickr30k_zero_shot_scores.npy")
    assert scores.shape == (20, 4) and ((scores >= 0) & (scores <= 1)).all()  # softmax(alignment)[aligned]
    metrics = json.loads((out / "test_RetrievalFlickr30k_zero_shot_metrics.json").read_text())
    assert set(metrics["RetrievalFlickr30k (zero-shot)"]) == {"R@1", "R@5", "R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10"}
    assert "| RetrievalFlickr30k (zero-shot) | test | R@1 |" in result.stdout
    assert (out / "test_RetrievalFlickr30k_zero_shot_metrics.md").is_file()

    # A pretraining checkpoint has no retrieval head: without --zero_shot that is a one-line error.
    bad = run(python("eval_retrieval.py", "--bert_model", setup.bert, "--from_pretrained", setup.pretrained,
                     "--tasks", "9", "--tasks_config", setup.tasks, "--output_dir", out), check=False)
    assert bad.returncode == 2 and "no trained vil_logit" in bad.stderr.strip().splitlines()[-1]


def test_eval_retrieval_compiled_gives_the_eager_scores(setup):
    """--compile on (forced on the CPU; auto compiles on CUDA only): zero-shot retrieval reaches the
    compiled encoder through unwrap_model and model.vilbert(..., text_prefix=...), with one caption
    against all images and captions of different lengths, and scores every pair as the eager model."""
    flags = ["--zero_shot", "--bert_model", setup.bert, "--from_pretrained", setup.pretrained, "--tasks", "9",
             "--tasks_config", setup.tasks, "--device", "cpu"]
    scores = {}
    for mode in ("off", "on"):
        out = setup.root / f"compile_{mode}"
        result = run(python("eval_retrieval.py", *flags, "--compile", mode, "--output_dir", out))
        assert ("; compiled" in result.stderr) == (mode == "on")
        scores[mode] = np.load(out / "test_RetrievalFlickr30k_zero_shot_scores.npy")
    np.testing.assert_allclose(scores["on"], scores["off"], rtol=1e-4, atol=1e-5)


# In-process checks of the library pieces.

def _tiny(model_class, config_path, **kwargs):
    from vilbert.config import ViLBertConfig

    torch.manual_seed(0)
    return model_class(ViLBertConfig.from_json_file(config_path), **kwargs).eval()


@pytest.mark.parametrize("zero_shot,task_token", [(False, None), (True, None), (False, 9)])
def test_retrieval_scores_equal_one_forward_per_pair(setup, zero_shot, task_token):
    """The text prefix computed once per caption (and padding cut) changes nothing."""
    from vilbert.data.collate import collate, model_inputs
    from vilbert.finetune import load_tasks, retrieval_scores
    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks
    from vilbert.tokenization import load_tokenizer
    from vilbert.training import DistInfo, Precision

    task = load_tasks("9", setup.tasks)[9]
    dataset = task.dataset("test", load_tokenizer(setup.bert))
    model = _tiny(ViLBertForPretraining if zero_shot else ViLBertForVLTasks, setup.config)
    if task_token is not None:  # 12-in-1's task token after [CLS]: the prefix has one more column
        from vilbert.config import ViLBertConfig

        config = ViLBertConfig.from_json_file(setup.config)
        config.task_specific_tokens = True
        torch.manual_seed(0)
        model = ViLBertForVLTasks(config).eval()
    dist = DistInfo()
    scores = retrieval_scores(model, dataset, precision=Precision.create("fp32", dist.device), dist=dist,
                              batch_size=3, zero_shot=zero_shot, task_token=task_token)
    assert scores.shape == (dataset.num_captions, dataset.num_images)
    batch = collate([dataset[i] for i in range(len(dataset))])  # item = image * num_captions + caption
    extra = {} if task_token is None else {"task_tokens": torch.full((len(dataset), 1), task_token)}
    with torch.no_grad():
        if zero_shot:
            plain = model(**model_inputs(batch)).seq_relationship_score.softmax(-1)[:, 0]
        else:
            plain = model(**model_inputs(batch), heads={"vil_logit"}, **extra).vil_logit[:, 0]
    expected = plain.view(dataset.num_images, dataset.num_captions).t()
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    first = retrieval_scores(model, dataset, precision=Precision.create("fp32", dist.device), dist=dist,
                             batch_size=2, zero_shot=zero_shot, task_token=task_token, captions=3)
    torch.testing.assert_close(first, expected[:3], rtol=1e-4, atol=1e-5)


def simulate_turns(lengths: dict) -> list:
    """The order in which vilbert.finetune.next_task runs tasks of these lengths (in steps)."""
    from vilbert.finetune import next_task

    runs = [SimpleNamespace(name=name, steps_done=0, total_steps=n, finished=False) for name, n in lengths.items()]
    order = []
    while (chosen := next_task(runs)) is not None:
        chosen.steps_done += 1
        chosen.finished = chosen.steps_done >= chosen.total_steps
        order.append(chosen.name)
    return order


def test_next_task_interleaves_in_proportion_to_schedules():
    assert simulate_turns({"a": 4, "b": 2}) == ["a", "b", "a", "a", "b", "a"]
    assert simulate_turns({"a": 1, "b": 3}) == ["b", "a", "b", "b"]


def test_objective_scales_the_loss_and_counts_items(setup):
    from vilbert.finetune import TaskObjective, load_tasks

    tasks = load_tasks("1-6-11", write_task_file(setup.world, setup.root / "lr.yml", TASK11={"lr": 0.0004}))
    assert [TaskObjective(t).weights for t in tasks.values()] == [(1.0,), (1.0,), (4.0,)]
    target = torch.zeros(5, 4)  # a VCR batch: 5 items of 4 options, 20 model rows
    assert TaskObjective(tasks[6]).counts({"target": target[:, 0].long()}).tolist() == [5.0]


def test_setup_errors_are_one_line(setup, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import train_tasks

    code = train_tasks.main(["--tasks", "1-3", "--tasks_config", str(setup.tasks), "--bert_model", str(setup.bert)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown task id 3" in err[0]


def test_visualize_cli_draws_grounding_and_curves(setup, tmp_path):
    from vilbert.config import ViLBertConfig
    from vilbert.model import ViLBertForVLTasks
    from vilbert.visualize import main as visualize

    torch.manual_seed(0)
    model = ViLBertForVLTasks(ViLBertConfig.from_json_file(setup.config), num_labels=3)
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "answers.json").write_text(json.dumps(["yes", "no", "2"]))
    refcoco = setup.world / "refcoco"
    image_id = json.loads((refcoco / "refcoco+" / "instances.json").read_text())["images"][0]["id"]
    vqa_id = json.loads((setup.world / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"][0]["image_id"]
    code = visualize(["grounding", "--image", str(refcoco / "images" / f"{image_id}.png"),
                      "--features", str(refcoco / "features" / "detections.lmdb"), "--image_id", str(image_id),
                      "--bert_model", str(setup.bert), "--expression", "big red star",
                      "--refer_model", str(tmp_path / "model"), "--question", "Is there a circle?",
                      "--vqa_model", str(tmp_path / "model"), "--answers", str(tmp_path / "answers.json"),
                      "--vqa_image", str(setup.world / "vqa" / "images" / f"{vqa_id}.png"),
                      "--vqa_features", str(setup.world / "vqa" / "features" / "regions.lmdb"),
                      "--vqa_image_id", str(vqa_id), "--output", str(tmp_path / "g.png")])
    assert code == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"

    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "train/VQA/loss": 3.0, "train/lr": 1e-4}, {"step": 2, "train/VQA/loss": 2.0},
        {"step": 2, "val/VQA/accuracy": 40.0}]))
    assert visualize(["curves", "--log", f"VQA={log}", "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert visualize(["grounding", "--image", "missing.png", "--features", str(tmp_path / "none.lmdb"),
                      "--image_id", "1", "--output", str(tmp_path / "x.png")]) == 2
