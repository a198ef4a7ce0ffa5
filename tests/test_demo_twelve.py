"""The demo world's 12-in-1 part (vilbert/demo/twelve.py): every task of its 12-in-1 task file trains
one step and evaluates on the world's files, through train_tasks.py and eval_tasks.py, and
CHANCE.json has a rate for each task.

One tiny world with the 12-in-1 part is written per module (real extractor). GQA's minval and
Visual Genome's val hold the last 3000 / 5000 questions (12-in-1's rules), more than a tiny world
has: the test shrinks both for the module, before the world (and its chance rates) is written.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from vilbert.demo.make import WorldSize, make_world
from vilbert.demo.twelve import TwelveSize

REPO = Path(__file__).resolve().parents[1]
TINY = WorldSize(concap_train=4, concap_val=4, vqa_train=6, vqa_val=2, vqa_test=3, vcr_train=4, vcr_val=2,
                 refcoco_train=4, refcoco_val=2, refcoco_testA=1, refcoco_testB=1,
                 flickr_train=4, flickr_val=2, flickr_test=2)
TINY_TWELVE = TwelveSize(nlvr2_train=3, nlvr2_dev=2, nlvr2_test=1, gqa_train=3, gqa_val=2, gqa_testdev=1,
                         genome_images=4, v7w_train=3, v7w_val=2, v7w_test=1, gqa_questions_per_image=4,
                         genome_questions_per_image=5)
ALL_TASKS = "-".join(str(k) for k in range(1, 19))


@pytest.fixture(scope="module")
def shrunk_splits():
    from vilbert.data import genome_qa, gqa

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gqa, "MINVAL_SIZE", 8)
        patch.setattr(genome_qa, "VAL_SIZE", 8)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, shrunk_splits) -> Path:
    root = tmp_path_factory.mktemp("demo_twelve") / "world"
    make_world(root, seed=0, size=TINY, twelve=TINY_TWELVE, say=lambda *_: None)
    return root


def test_same_seed_gives_identical_files(world, tmp_path):
    """The 12-in-1 part is a function of the seed (the .gz files carry no time stamp)."""
    again = tmp_path / "world"
    make_world(again, seed=0, size=TINY, twelve=TINY_TWELVE, extract=False, say=lambda *_: None)
    # world.json differs in "features" (none extracted here)
    files = [p.relative_to(again) for p in sorted(again.rglob("*"))
             if p.is_file() and ".lmdb" not in str(p) and p.name != "world.json"]
    assert any(str(f).endswith(".jsonl.gz") for f in files) and any(str(f).endswith("refs(umd).p") for f in files)
    for name in files:
        assert (again / name).read_bytes() == (world / name).read_bytes(), name


def test_task_file_is_twelve_in_ones_with_the_worlds_paths(world):
    from vilbert.tasks.config import load_task_configs

    ours = yaml.safe_load((world / "vilbert_tasks.yml").read_text())
    released = yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())
    assert list(ours) == list(released)
    shrunk = {"dataroot", "features_h5path1", "features_h5path2", "train_annotations_jsonpath",
              "val_annotations_jsonpath", "max_seq_length", "max_region_num", "batch_size", "eval_batch_size"}
    for key, entry in released.items():
        assert {f: v for f, v in ours[key].items() if f not in shrunk} == \
               {f: v for f, v in entry.items() if f not in shrunk}, key
    configs = load_task_configs(world / "vilbert_tasks.yml")
    for config in configs.values():
        for path in (config.dataroot, config.features_h5path1, config.features_h5path2,
                     config.train_annotations_jsonpath, config.val_annotations_jsonpath):
            assert path is None or Path(path).exists(), (config.name, path)


def test_every_item_reads_and_every_text_fits(world, tokenizer):
    """Every item of every split reads (features of every image named, ground-truth stores in the
    order the pointing readers check), and no text is cut by its task's max_seq_length
    (VisualDialog's texts are 50 tokens by design, its history cut from the front)."""
    import numpy as np

    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks(ALL_TASKS, world / "vilbert_tasks.yml")
    checked = set()
    for task in tasks.values():
        for split in (task.config.train_split, task.config.val_split):
            dataset = task.dataset(split, tokenizer)
            for index in range(len(dataset)):
                dataset[index]
            text = getattr(dataset, "text", None)
            if text is None:
                continue
            longest = int(np.asarray(text["attention_mask"]).sum(axis=-1).max())
            assert longest < task.config.max_seq_length, (task.name, split, longest)
            checked.add(task.name)
    assert len(checked) == 17 and "VisualDialog" not in checked


def test_official_files_hold_learnable_answers(world):
    """Spot checks that answers follow from the scene, in each official layout."""
    from vilbert.safe_pickle import safe_load

    nlvr2 = [json.loads(line) for line in (world / "nlvr2" / "train.json").read_text().splitlines()]
    assert {r["label"] for r in nlvr2} == {"True", "False"}
    scenes = json.loads((world / "nlvr2" / "scenes.json").read_text())
    for r in nlvr2:
        stem = r["identifier"].rsplit("-", 1)[0]
        if r["sentence"].startswith("There are exactly"):
            number, shape = r["sentence"].split()[3:5]
            words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
            count = sum(o["shape"] == shape.rstrip("s").replace("crosse", "cross") for side in ("img0", "img1")
                        for o in scenes[f"{stem}-{side}"]["objects"])
            expected = {"zero": 0, **{w: k + 1 for k, w in enumerate(words)}}[number]
            assert (count == expected) == (r["label"] == "True"), r
    entailment = [json.loads(line) for line in (world / "visual_entailment" / "snli_ve_train.jsonl").read_text().splitlines()]
    flickr = json.loads((world / "flickr30k" / "scenes.json").read_text())
    for r in entailment:
        if r["sentence2"].startswith("There is"):
            objects = flickr[r["Flikr30kID"].split(".")[0]]["objects"]
            named = r["sentence2"][len("There is "):-1].split(maxsplit=1)[1]
            present = any(named in (f"{o['color']} {o['shape']}", f"{o['size']} {o['color']} {o['shape']}")
                          for o in objects)
            assert r["gold_label"] == ("entailment" if present else "contradiction"), r
    foil = json.loads((world / "Foil" / "foilv1.0_train_2017.json").read_text())["annotations"]
    assert sum(a["foil"] for a in foil) * 2 == len(foil)
    refs = safe_load(world / "refcoco" / "refcocog" / "refs(umd).p")
    assert {r["split"] for r in refs} == {"train", "val", "test"}
    with gzip.open(world / "guesswhat" / "guesswhat.train.jsonl.gz", "rt") as f:
        games = [json.loads(line) for line in f]
    gw_scenes = json.loads((world / "refcoco" / "scenes.json").read_text())
    for game in games:
        objects = gw_scenes[str(game["image"]["id"])]["objects"]
        target = objects[[o["id"] for o in game["objects"]].index(game["object_id"])]
        for qa in game["qas"]:
            words = qa["question"].rstrip("?").split()
            if words[:3] == ["is", "it", "a"]:
                assert qa["answer"] == ("Yes" if target["shape"] == words[3] else "No")
    visdial = json.loads((world / "visual_dialog" / "visdial_1.0_val.json").read_text())["data"]
    dense = json.loads((world / "visual_dialog" / "visdial_1.0_val_dense_annotations.json").read_text())
    assert len(visdial["answers"]) >= 100 and len(dense) == len(visdial["dialogs"])
    for dialog in visdial["dialogs"]:
        assert len(dialog["dialog"]) == 10
        for entry in dialog["dialog"]:
            assert len(set(entry["answer_options"])) == 100
            assert entry["answer_options"][entry["gt_index"]] == entry["answer"]


def test_every_task_trains_one_step_and_evaluates(world, minilm_dir, tmp_path, monkeypatch):
    import eval_tasks
    import train_tasks

    from vilbert.config import ViLBertConfig
    from vilbert.data.vqa import write_label2ans
    from vilbert.demo.world import COLOURS, SHAPES

    monkeypatch.syspath_prepend(str(REPO))
    # The tiny world's VQA splits are too small for the vocabulary's rule (an answer of at least 9
    # questions): it keeps yes and no, so every GenomeQA answer (open questions) would fall outside
    # it and the preflight check refuses the run. Both tasks get what the small world's rule gives:
    # every canonical answer of the world. (Last test of the module: the world is not read again.)
    vocabulary = ["yes", "no", *COLOURS, *SHAPES, *(str(n) for n in range(6))]
    for dataroot in ("vqa", "visual_genome"):
        write_label2ans(world / dataroot / "cache" / "trainval_label2ans.json", vocabulary)
    config = ViLBertConfig.from_json_file(REPO / "config" / "vilbert_tiny.json")
    config.vocab_size, config.v_feature_size, config.max_position_embeddings = 30522, 2048, 64
    config.to_json_file(tmp_path / "tiny.json")
    names = {entry["name"]: entry["task_id"] for entry in yaml.safe_load((world / "vilbert_tasks.yml").read_text()).values()}
    common = ["--tasks_config", str(world / "vilbert_tasks.yml"), "--bert_model", str(minilm_dir), "--num_workers", "0",
              "--task_specific_tokens", "--tasks", ALL_TASKS]
    assert train_tasks.main([*common, "--config_file", str(tmp_path / "tiny.json"), "--output_dir", str(tmp_path / "runs"),
                             "--save_name", "t", "--num_train_epochs", "0.01", "--train_batch_size", "2",
                             "--eval_batch_size", "64"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    # A hundredth of an epoch is one step of each task (a task runs at least one), 18 in all; each
    # task is evaluated when its schedule ends and keeps its best checkpoint.
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert set(val) == set(names)
    assert all((run_dir / "best" / name / "model.safetensors").is_file() for name in names)
    out = tmp_path / "eval"
    assert eval_tasks.main([*common, "--from_pretrained", str(run_dir / "best" / "VQA"), "--output_dir", str(out),
                            "--batch_size", "64"]) == 0
    evaluated = json.loads((out / "val_metrics.json").read_text())
    chance = json.loads((world / "CHANCE.json").read_text())
    assert set(names) <= set(chance)
    for name, metrics in evaluated.items():
        assert metrics, name
        for metric, value in metrics.items():
            if metric == "mean_rank":
                assert 1 <= value <= 100, (name, value)
            else:
                assert 0 <= value <= 100, (name, metric, value)
        assert (out / f"val_{name}_result.json").is_file()
    assert set(evaluated) == set(names)
    assert {"MRR", "R@1", "NDCG", "mean_rank"} <= set(evaluated["VisualDialog"])  # val has dense annotations
    for name in names:
        rates = chance[name]
        assert all(0 <= v <= 100 for k, v in rates.items() if isinstance(v, float) and k != "mean_rank"), name
    assert chance["Visual7w"]["accuracy"] == 25.0 and chance["VisualDialog"]["R@1"] == 1.0
    assert chance["NLVR2"]["accuracy"] >= 50.0
