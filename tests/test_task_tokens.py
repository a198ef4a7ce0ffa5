"""Task-token rows (--task_specific_tokens): every task of both task files uses the row of 12-in-1's
task-token table that 12-in-1 trained it with, whatever its --tasks id, in training, evaluation and
retrieval scoring. Checked on the embedding row the forward actually reads, from a hand-built
checkpoint in 12-in-1's layout whose 20 rows are told apart by their values (row r is all r)."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from _model_helpers import original_state_dict
from _scripts_helpers import REPO, make_tiny_world, tiny_config
from _taskdata_helpers import write_tasks
from vilbert.tasks.config import load_task_configs

# 12-in-1's vilbert_tasks.yml: each task name and its TASK<n> key, the row its training used
# (vilbert-multi-task fills the task token with the key's number). Written out from that file.
RELEASED_ROWS = {
    "VQA": 1, "GenomeQA": 2, "VisualDialog": 3, "Visual7w": 4, "VCR_Q-A": 5, "VCR_QA-R": 6, "RetrievalCOCO": 7,
    "RetrievalFlickr30k": 8, "refcoco": 9, "refcoco+": 10, "refcocog": 11, "NLVR2": 12, "VisualEntailment": 13,
    "GuessWhat": 14, "GQA": 15, "Foil": 16, "GuessWhatPointing": 17, "FlickrGrounding": 18,
}
TASK_FILES = ("vlbert_tasks.yml", "vilbert_tasks.yml")


@pytest.mark.parametrize("task_file", TASK_FILES)
def test_every_task_of_both_files_has_its_released_row(task_file):
    configs = load_task_configs(REPO / task_file)
    assert {c.name: c.task_token for c in configs.values()} == {c.name: RELEASED_ROWS[c.name] for c in configs.values()}
    if task_file == "vlbert_tasks.yml":  # the seed's ids are not the rows
        assert {i: c.task_token for i, c in configs.items()} == {1: 1, 6: 5, 7: 6, 9: 8, 11: 10}
    else:
        assert len(configs) == 18 and all(c.task_token == i for i, c in configs.items())


@pytest.fixture(scope="module")
def world(tmp_path_factory, minilm_dir):
    """The tiny demo world (the data of every runnable task), its tokenizer, and a tiny model
    loaded through load_task_model from a 12-in-1-layout .bin whose task-token row r is all r."""
    from vilbert.config import ViLBertConfig
    from vilbert.finetune import load_task_model
    from vilbert.model import ViLBertForVLTasks
    from vilbert.tasks.registry import build_task
    from vilbert.tokenization import load_tokenizer

    root = tmp_path_factory.mktemp("tokens")
    data = make_tiny_world(root)
    tokenizer = load_tokenizer(minilm_dir)
    config_file = tiny_config(root / "tiny.json")
    config = ViLBertConfig.from_json_file(config_file)
    demo = {c.reader: c for c in load_task_configs(data / "vlbert_tasks.yml").values()}
    vqa_train = build_task(demo["vqa"]).dataset(demo["vqa"].train_split, tokenizer)  # writes the answer vocabulary

    state = original_state_dict("12in1", config, num_labels=vqa_train.num_labels)
    table = state["bert.embeddings.task_embeddings.weight"]
    state["bert.embeddings.task_embeddings.weight"] = torch.arange(table.shape[0]).float()[:, None].expand_as(table).clone()
    checkpoint = root / "multi_task_model.bin"
    torch.save(state, checkpoint)
    model = load_task_model(ViLBertForVLTasks, str(checkpoint), str(config_file), task_specific_tokens=True,
                            num_labels=vqa_train.num_labels, log=lambda message: None)
    assert model.load_report.missing == [] and model.config.task_specific_tokens
    assert torch.equal(model.vilbert.text_embeddings.task_embeddings.weight[:, 0], torch.arange(20).float())
    return SimpleNamespace(root=root, data=data, demo=demo, tokenizer=tokenizer, model=model.eval(),
                           checkpoint=checkpoint, config_file=config_file, minilm=minilm_dir)


def rows_read(model, run) -> set:
    """The task-token rows the model's forward passes read while `run()` runs (row r holds r)."""
    seen = []
    hook = model.vilbert.text_embeddings.task_embeddings.register_forward_hook(
        lambda module, inputs, output: seen.append(output[..., 0].detach().flatten()))
    try:
        run()
    finally:
        hook.remove()
    assert seen, "no forward pass read the task-token table"
    return {int(v) for v in torch.cat(seen).unique()}


def runnable(config, world):
    """The task of a tasks-file entry on the demo world's data of its format: its identity (id,
    name, type, task_token) from the file, everything about data from the demo entry."""
    from vilbert.data.refer import refer_folder

    data = world.demo[config.reader]
    changes = dict(task_id=config.task_id, key=config.key, name=config.name, task_token=config.task_token,
                   source=config.source)
    if config.reader == "refer":  # refcoco's entry on the demo's refcoco+ folder
        changes["dataroot"] = refer_folder(data)
    return dataclasses.replace(data, **changes)


@pytest.mark.parametrize("task_file", TASK_FILES)
def test_training_evaluation_and_retrieval_read_the_released_row(world, task_file):
    from vilbert.finetune import TaskObjective, evaluate_task, make_loader
    from vilbert.tasks.registry import READERS, TASK_TYPES, build_task
    from vilbert.training import DistInfo, EvalSampler, Precision

    dist = DistInfo()
    precision = Precision.create("fp32", dist.device)
    # Every task whose type and reader exist and whose format the demo world has.
    configs = [c for c in load_task_configs(REPO / task_file).values()
               if c.type in TASK_TYPES and c.reader in READERS and c.reader in world.demo]
    expected = {1, 5, 6, 8, 10} | ({7, 9} if task_file == "vilbert_tasks.yml" else set())
    assert {c.task_token for c in configs} == expected
    for config in configs:
        task = build_task(runnable(config, world))
        row = {RELEASED_ROWS[config.name]}
        train = task.dataset(task.config.train_split, world.tokenizer)
        batch = next(iter(task.loader(train, train=True, batch_size=2)))
        objective = TaskObjective(task, task_tokens=True)
        with torch.no_grad():
            assert rows_read(world.model, lambda: objective(world.model, batch)) == row, (task_file, config.name)

        val = task.dataset(task.config.val_split, world.tokenizer)
        loader = make_loader(val, EvalSampler(len(val), 0, 1, keys=False), 4, 0, False)
        # Retrieval goes through retrieval_scores here (eval_retrieval.py calls it with the same row).
        evaluate = lambda: evaluate_task(world.model, task, val, loader, precision, dist,  # noqa: E731
                                         task_tokens=True, batch_size=4)
        assert rows_read(world.model, evaluate) == row, (task_file, config.name)


def test_an_explicit_row_wins_and_a_task_without_one_is_a_one_line_error(world, monkeypatch, capsys):
    from vilbert.finetune import SetupError, TaskObjective
    from vilbert.tasks.registry import build_task

    vqa = world.demo["vqa"]
    entry = {field: str(getattr(vqa, field) or "") for field in ("dataroot", "features_h5path1")}
    entry.update(name="MyVQA", type="VL-classifier", loss="BCEWithLogitLoss", reader="vqa", features_h5path2="",
                 train_annotations_jsonpath="", val_annotations_jsonpath="", max_seq_length=vqa.max_seq_length,
                 max_region_num=vqa.max_region_num, batch_size=4, train_split=vqa.train_split,
                 val_split=vqa.val_split, lr=0.0001, num_epoch=1)
    tasks_file = write_tasks(world.root / "mine.yml", {"TASK21": entry, "TASK22": dict(entry, task_token=3)})
    configs = load_task_configs(tasks_file)
    assert configs[21].task_token is None and configs[22].task_token == 3

    mine = build_task(configs[22])
    batch = next(iter(mine.loader(mine.dataset(vqa.train_split, world.tokenizer), train=True, batch_size=2)))
    with torch.no_grad():
        assert rows_read(world.model, lambda: TaskObjective(mine, task_tokens=True)(world.model, batch)) == {3}
    assert TaskObjective(build_task(configs[21])).extra_inputs(batch) == {}  # no task tokens: no row needed
    with pytest.raises(SetupError, match=r"TASK21 \(MyVQA\) in .*mine.yml has no task-token row .*add 'task_token"):
        TaskObjective(build_task(configs[21]), task_tokens=True)

    # The scripts: a 12-in-1 checkpoint turns task tokens on; the task without a row stops them.
    monkeypatch.syspath_prepend(str(REPO))
    import eval_tasks
    import train_tasks

    common = ["--tasks_config", str(tasks_file), "--tasks", "21", "--bert_model", str(world.minilm),
              "--config_file", str(world.config_file), "--from_pretrained", str(world.checkpoint)]
    for main, extra in ((eval_tasks.main, ["--num_workers", "0", "--output_dir", str(world.root / "eval")]),
                        (train_tasks.main, ["--num_workers", "0", "--output_dir", str(world.root / "train")])):
        capsys.readouterr()
        code = main(common + extra)
        err = capsys.readouterr().err.strip().splitlines()  # train_tasks.py logs the checkpoint's load first
        assert code == 2 and "has no task-token row" in err[-1] and "Traceback" not in "".join(err), err
