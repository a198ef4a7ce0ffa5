"""No code runs from data, and paths from data stay where they belong.

- The source tree is scanned (ast, not grep) so that it stays true: no pickle.load / loads outside
  vilbert/safe_pickle.py, torch.load only with weights_only=True (or our inert unpickler),
  np.load never with allow_pickle=True, yaml only through safe loaders, and every Unpickler subclass
  restricts find_class.
- Paths from annotation files stay under their data root; names from flags and task files cannot
  make a script write outside --output_dir.
"""

import ast
import json
from pathlib import Path

import pytest

from _reliability_helpers import checked_vqa_world, tiny_model_config
from vilbert.data.files import data_relative_path, output_path

REPO = Path(__file__).resolve().parents[1]
# The one place besides vilbert/safe_pickle.py allowed to unpickle, and why.
PICKLE_ALLOWED = {
    "benchmarks/bench_features.py": "times the originals' read path on pickled records it wrote itself",
}
PICKLE_LOADS = {"pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "_pickle.load", "_pickle.loads",
                "dill.load", "dill.loads", "joblib.load", "pd.read_pickle", "pandas.read_pickle"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader"}


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(source: str, path: str = "<source>") -> list[str]:
    """Every place in `source` that could run code named by data, as 'path:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "cPickle", "_pickle", "dill"):
            found += [f"{where}: from {node.module} import {a.name}" for a in node.names if "load" in a.name]
        if isinstance(node, ast.ClassDef) and any(_dotted(b).endswith("Unpickler") for b in node.bases):
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            if "find_class" not in methods:
                found.append(f"{where}: Unpickler subclass {node.name} without a restricting find_class")
        if not isinstance(node, ast.Call):
            continue
        name, keywords = _dotted(node.func), {k.arg: k.value for k in node.keywords}
        if name in PICKLE_LOADS:
            found.append(f"{where}: {name}")
        elif name == "torch.load":
            inert = _dotted(keywords.get("pickle_module")) == "_InertPickleModule"
            if not _is_true(keywords.get("weights_only")) and not inert:
                found.append(f"{where}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load") and "allow_pickle" in keywords \
                and getattr(keywords["allow_pickle"], "value", True) is not False:
            found.append(f"{where}: {name} with allow_pickle")
        elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all") or (
                name == "yaml.load" and _dotted(keywords.get("Loader")) not in SAFE_YAML_LOADERS):
            found.append(f"{where}: {name} without a safe loader")
    return found


def _python_files():
    for path in sorted(REPO.glob("*.py")) + sorted(p for d in ("vilbert", "benchmarks", "tests")
                                                      for p in (REPO / d).rglob("*.py")):
        yield path.relative_to(REPO).as_posix(), path


def test_the_scanner_finds_each_unsafe_form():
    bad = {
        "import pickle\npickle.load(f)": "pickle.load",
        "import pickle\npickle.loads(b)": "pickle.loads",
        "from pickle import loads": "import loads",
        "import torch\ntorch.load(p)": "weights_only",
        "import torch\ntorch.load(p, weights_only=False)": "weights_only",
        "import numpy as np\nnp.load(p, allow_pickle=True)": "allow_pickle",
        "import yaml\nyaml.load(t)": "safe loader",
        "import yaml\nyaml.load(t, Loader=yaml.FullLoader)": "safe loader",
        "import pickle\nclass U(pickle.Unpickler):\n    pass": "find_class",
    }
    for source, what in bad.items():
        (found,) = unsafe_uses(source)
        assert what in found, (source, found)
    fine = ("torch.load(p, map_location='cpu', weights_only=True)", "np.load(p, allow_pickle=False)",
            "yaml.safe_load(t)", "yaml.load(t, Loader=yaml.SafeLoader)", "pickle.dumps(x)",
            "torch.load(p, weights_only=False, pickle_module=_InertPickleModule)")
    assert [unsafe_uses(source) for source in fine] == [[]] * len(fine)


def test_no_code_runs_from_data_anywhere_in_the_source_tree():
    found = []
    for relative, path in _python_files():
        if relative == "vilbert/safe_pickle.py":
            continue
        uses = unsafe_uses(path.read_text(), relative)
        if relative in PICKLE_ALLOWED:
            uses = [u for u in uses if not any(f": {name}" in u for name in PICKLE_LOADS)]
        found += uses
    assert found == []


def test_the_allowed_exceptions_still_exist():
    # An allowance for a file that no longer unpickles would hide a new use there.
    for relative in PICKLE_ALLOWED:
        assert unsafe_uses((REPO / relative).read_text(), relative), relative


@pytest.mark.parametrize("value", ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "C:\\x.jpg", "..\\x.jpg", ""])
def test_annotation_paths_leaving_the_data_root_are_refused(value):
    with pytest.raises(ValueError, match=r"^ann.json:3: img_path: path .* leaves the data root"):
        data_relative_path(value, "ann.json:3: img_path")


def test_annotation_paths_inside_the_data_root_are_kept():
    assert data_relative_path("flickr/1000092795.jpg", "x").stem == "1000092795"
    assert str(data_relative_path("a/./b..c.jpg", "x")) == "a/b..c.jpg"


def test_a_retrieval_file_with_an_escaping_image_path_names_file_and_line(tmp_path):
    from vilbert.data.retrieval import read_jsonline

    lines = [{"img_path": "1.jpg", "sentences": ["a cat"]}, {"img_path": "../../home/x.jpg", "sentences": ["a dog"]}]
    (tmp_path / "train.jsonline").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match=r"train.jsonline:2: img_path: path '../../home/x.jpg' leaves the data root"):
        read_jsonline(tmp_path / "train.jsonline")


def test_a_flickr_entities_image_list_cannot_name_files_outside_the_data_root(tmp_path, minilm_dir):
    from _taskdata_helpers import load_test_tokenizer
    from _taskdata_twelve_a import build_one_task, flickr_entities_world
    from vilbert.tasks.config import TaskConfigError

    dataroot = flickr_entities_world(tmp_path)
    task = build_one_task(tmp_path, 18, name="FlickrGrounding", type="V-logit", dataroot="flickr30k",
                          features_h5path1="flickr30k/flickr_det.lmdb", features_h5path2="flickr30k/flickr_gt.lmdb")
    (tmp_path / "outside.xml").write_text("<not an annotation")
    (dataroot / "val.txt").write_text("42\n../../outside\n")
    with pytest.raises(TaskConfigError, match=r"val.txt: image id '../../outside' is not a number"):
        task.dataset("val", load_test_tokenizer(minilm_dir))


@pytest.mark.parametrize("name", ["../VQA", "VQA/../../x", "..", "a\\b"])
def test_task_names_cannot_become_paths(tmp_path, name):
    from _taskdata_helpers import task_entry, write_tasks
    from vilbert.tasks.config import TaskConfigError, load_task_configs

    write_tasks(tmp_path / "tasks.yml", {"TASK1": task_entry(name=name, reader="vqa")})
    with pytest.raises(TaskConfigError, match=r"TASK1.name must be a plain name"):
        load_task_configs(tmp_path / "tasks.yml")


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/tmp/x"])
def test_output_names_cannot_leave_the_output_dir(tmp_path, name):
    with pytest.raises(ValueError, match=rf"^--save_name: .* would write outside --output_dir {tmp_path}"):
        output_path(tmp_path, name, "--save_name")
    assert output_path(tmp_path, "run/1", "--save_name") == tmp_path / "run" / "1"


def test_run_directory_refuses_a_save_name_that_escapes(tmp_path):
    from vilbert.finetune import SetupError, run_directory
    from vilbert.tasks.registry import build_tasks

    tasks = build_tasks("1", checked_vqa_world(tmp_path))
    assert run_directory(tmp_path / "out", tasks, "x") == tmp_path / "out" / "VQA_x"
    with pytest.raises(SetupError, match="--save_name"):
        run_directory(tmp_path / "out", tasks, "x/../../../y")


def test_eval_tasks_writes_only_under_output_dir_and_the_data_cache(tmp_path, monkeypatch, minilm_dir):
    from vilbert.model import ViLBertForVLTasks

    tasks = checked_vqa_world(tmp_path / "data")
    ViLBertForVLTasks(tiny_model_config(vocab_size=30522), num_labels=3).save_pretrained(tmp_path / "model")
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(tmp_path)
    import eval_tasks

    code = eval_tasks.main(["--tasks", "1", "--tasks_config", str(tasks), "--bert_model", str(minilm_dir),
                            "--from_pretrained", str(tmp_path / "model"), "--device", "cpu", "--num_workers", "0",
                            "--output_dir", str(tmp_path / "out")])
    assert code == 0
    new = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and p not in before)
    assert "out/val_VQA_result.json" in new and "out/val_metrics.json" in new
    assert [p for p in new if not p.startswith(("out/", "data/vqa/cache/"))] == []
