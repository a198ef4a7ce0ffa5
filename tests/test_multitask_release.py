"""The released 12-in-1 multi-task checkpoint evaluated task by task, as its README runs it:

    eval_tasks.py --tasks_config vilbert_tasks.yml --tasks 1-5-6-8-10-12-13-15 \
        --from_pretrained multi_task_model.bin --task_specific_tokens

on a state dict written by hand in 12-in-1's key layout (tests/_model_helpers.py, tiny sizes),
saved as a .bin, and generated data in each task's official format. Every key of the checkpoint
is accounted for, and each task reads its own row of the task-token table and its own head:
recorded on the modules the forward runs, and shown on the outputs (permuting the used rows
changes every task's logits; changing what no task should read changes nothing)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from _model_helpers import original_state_dict, tiny_config
from _taskdata_helpers import (FEATURE_DIM, flickr_world, gqa_world, nlvr2_world, refer_world, snli_ve_world,
                               vcr_world, vqa_world)
from vilbert.data import gqa as gqa_module
from vilbert.data import vqa as vqa_module

REPO = Path(__file__).resolve().parents[1]
TASKS = "1-5-6-8-10-12-13-15"
# 12-in-1's vilbert_tasks.yml key -> (task name, the head its task type reads, the token row 12-in-1
# trained it with), written out from that repository (its vilbert_tasks.yml and task_utils.py).
RELEASED = {
    "TASK1": ("VQA", "vil_prediction", 1), "TASK5": ("VCR_Q-A", "vil_logit", 5),
    "TASK6": ("VCR_QA-R", "vil_logit", 6), "TASK8": ("RetrievalFlickr30k", "vil_logit", 8),
    "TASK10": ("refcoco+", "vision_logit", 10), "TASK12": ("NLVR2", "vil_binary_prediction", 12),
    "TASK13": ("VisualEntailment", "vil_tri_prediction", 13), "TASK15": ("GQA", "vil_prediction_gqa", 15),
}
USED_ROWS = [row for _, _, row in RELEASED.values()]
HEADS = ("vil_prediction", "vil_prediction_gqa", "vil_logit", "vil_binary_prediction", "vil_tri_prediction",
         "vision_logit", "linguisic_logit")
ANSWERS = ["red", "blue", "green"]  # the VQA answer vocabulary (12-in-1 ships trainval_label2ans)


def data_paths(root: Path) -> dict:
    """Each task's data in its official format under root: {key: fields of its entry}."""
    vqa = vqa_world(root / "vqa")
    (vqa / "cache").mkdir()
    (vqa / "cache" / "trainval_label2ans.json").write_text(json.dumps(ANSWERS))
    vcr, refer, flickr = vcr_world(root / "vcr"), refer_world(root / "refer"), flickr_world(root / "flickr")
    nlvr2, snli_ve, gqa = nlvr2_world(root / "nlvr2"), snli_ve_world(root / "snli_ve"), gqa_world(root / "gqa")
    vcr_files = dict(dataroot=vcr, features_h5path1=vcr / "det.lmdb", features_h5path2=vcr / "gt.lmdb",
                     train_annotations_jsonpath=vcr / "train.jsonl", val_annotations_jsonpath=vcr / "val.jsonl")
    return {
        "TASK1": dict(dataroot=vqa, features_h5path1=root / "vqa" / "features.lmdb"),
        "TASK5": vcr_files, "TASK6": vcr_files,
        "TASK8": dict(dataroot=flickr, features_h5path1=flickr / "flickr.lmdb",
                      train_annotations_jsonpath=flickr / "all_data_final_train_2014.jsonline",
                      val_annotations_jsonpath=flickr / "all_data_final_test_set0_2014.jsonline"),
        "TASK10": dict(dataroot=refer, features_h5path1=refer / "det.lmdb", features_h5path2=refer / "gt.lmdb"),
        "TASK12": dict(dataroot=nlvr2, features_h5path1=nlvr2 / "nlvr2.lmdb"),
        "TASK13": dict(dataroot=snli_ve, features_h5path1=snli_ve / "flickr.lmdb"),
        "TASK15": dict(dataroot=gqa, features_h5path1=gqa / "gqa.lmdb"),
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """12-in-1's own entries of the eight tasks (only data paths and sizes changed), a tiny config
    and the released layout's state dict (row r of the task-token table random, distinct)."""
    root = tmp_path_factory.mktemp("release")
    entries = yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())
    tasks = {}
    for key, paths in data_paths(root).items():
        tasks[key] = dict(entries[key], **{k: str(v) for k, v in paths.items()}, max_region_num=8, batch_size=2,
                          eval_batch_size=4)
    (root / "vilbert_tasks.yml").write_text(yaml.safe_dump(tasks, sort_keys=False))
    config = tiny_config(vocab_size=30522, v_feature_size=FEATURE_DIM)
    config.to_json_file(root / "tiny.json")
    state = original_state_dict("12in1", config, num_labels=len(ANSWERS))
    return root, state


class Recorder:
    """Wraps eval_tasks.evaluate_task: per task, the task-token rows the forward passes read, the
    heads that ran and their outputs; and the model's load report."""

    def __init__(self, evaluate_task):
        self.evaluate_task = evaluate_task
        self.rows, self.heads, self.report = {}, {}, None

    def __call__(self, model, task, *args, **kwargs):
        self.report = model.load_report
        rows, heads = [], {}
        hooks = [model.vilbert.text_embeddings.task_embeddings.register_forward_hook(
            lambda module, inputs, output: rows.append(inputs[0].flatten()))]
        for name in HEADS:
            hooks.append(getattr(model, name).register_forward_hook(
                lambda module, inputs, output, name=name: heads.setdefault(name, []).append(output.detach().clone())))
        try:
            return self.evaluate_task(model, task, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
            self.rows[task.name] = {int(r) for r in torch.cat(rows).unique()} if rows else set()
            self.heads[task.name] = {name: torch.cat(outputs) for name, outputs in heads.items()}


def evaluate(release, monkeypatch, state: dict, minilm_dir, name: str):
    """eval_tasks.main as 12-in-1's README runs it, on `state` saved as <name>.bin: (recorder,
    {file name: parsed JSON} of everything it wrote)."""
    import eval_tasks

    root, _ = release
    checkpoint = root / f"{name}.bin"
    torch.save(state, checkpoint)
    from vilbert.finetune import evaluate_task

    recorder = Recorder(evaluate_task)
    monkeypatch.setattr(eval_tasks, "evaluate_task", recorder)
    out = root / f"eval-{name}"
    assert eval_tasks.main(["--tasks_config", str(root / "vilbert_tasks.yml"), "--tasks", TASKS,
                            "--from_pretrained", str(checkpoint), "--task_specific_tokens",
                            "--config_file", str(root / "tiny.json"), "--bert_model", str(minilm_dir),
                            "--num_workers", "0", "--precision", "fp32", "--output_dir", str(out)]) == 0
    return recorder, {path.name: json.loads(path.read_text()) for path in sorted(out.iterdir())}


def test_the_released_checkpoint_evaluates_every_task_with_its_own_row_and_head(release, monkeypatch, minilm_dir):
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(vqa_module, "MINVAL_SIZE", 2)
    monkeypatch.setattr(gqa_module, "MINVAL_SIZE", 2)
    _, state = release
    recorder, files = evaluate(release, monkeypatch, state, minilm_dir, "multi_task_model")

    # Every key of the checkpoint is loaded, or a pretraining head the task model has no use for, or
    # on the converter's list of keys the originals save but never use.
    report = recorder.report
    assert report.format == "original" and report.missing == [] and report.unmapped == [] and report.mismatched == []
    assert all(key.startswith("cls.") for key in report.unused) and report.unused
    assert sorted(report.loaded + report.unused + report.ignored) == sorted(state)
    assert all(any(key.startswith(head + ".") for key in report.loaded) for head in HEADS)

    names = [name for name, _, _ in RELEASED.values()]
    assert set(files["val_metrics.json"]) == set(names)
    assert all(f"val_{name}_result.json" in files for name in names) and "val_VCR_Q-AR_result.json" in files
    for name, head, row in RELEASED.values():
        assert recorder.rows[name] == {row}, name
        assert set(recorder.heads[name]) == {head}, name

    # Permuting the used rows (each task now finds another task's token in its row) changes every
    # task's output; its head output is what its result file is made of.
    permuted = dict(state)
    table = state["bert.embeddings.task_embeddings.weight"].clone()
    table[USED_ROWS] = table[USED_ROWS[1:] + USED_ROWS[:1]]
    permuted["bert.embeddings.task_embeddings.weight"] = table
    moved, _ = evaluate(release, monkeypatch, permuted, minilm_dir, "rows_permuted")
    for name, head, _ in RELEASED.values():
        assert not torch.allclose(moved.heads[name][head], recorder.heads[name][head]), name

    # Changing what no task should read (the unused rows, the per-token head, the pretraining heads)
    # changes nothing: the same logits, metrics and result files.
    others = dict(state)
    table = state["bert.embeddings.task_embeddings.weight"].clone()
    unused = [r for r in range(table.shape[0]) if r not in USED_ROWS]
    table[unused] = torch.randn(len(unused), table.shape[1])
    others["bert.embeddings.task_embeddings.weight"] = table
    for key in state:
        if key.startswith(("linguisic_logit.", "cls.")):
            others[key] = torch.randn_like(state[key])
    same, same_files = evaluate(release, monkeypatch, others, minilm_dir, "others_changed")
    assert same_files == files
    for name, head, _ in RELEASED.values():
        torch.testing.assert_close(same.heads[name][head], recorder.heads[name][head])

    # Each head matters to its tasks: a head replaced changes the logits of the tasks that read it.
    heads_changed = dict(state)
    for key in state:
        if key.startswith(tuple(head + "." for _, head, _ in RELEASED.values())):
            heads_changed[key] = torch.randn_like(state[key])
    swapped, _ = evaluate(release, monkeypatch, heads_changed, minilm_dir, "heads_changed")
    for name, head, _ in RELEASED.values():
        assert not torch.allclose(swapped.heads[name][head], recorder.heads[name][head]), name
