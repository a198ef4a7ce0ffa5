"""12-in-1's clean training sets (`train_tasks.py --clean_train_sets`; on by default in
vilbert-multi-task): training items whose image is a test image of any 12-in-1 task on the same
image source are left out, so a model trained on all tasks never trains on a picture another task
tests on (RefCOCO's testA/testB pictures are COCO train2014 pictures that VQA trains on, for one).

The lists are 12-in-1's own files, shipped with its data in each task's `dataroot/cache/`:
`coco_test_ids.npy`, `flickr_test_ids.npy` and `genome_test_ids.npy` (NumPy arrays of image ids),
read by the task name as 12-in-1's readers read them. VCR, NLVR2, GuessWhat and Foil were never
cleaned. Only the training split is cleaned (12-in-1: every split whose name contains "train").
Retrieval: the captions of a removed image are left out; unlike 12-in-1, whose reader drops the
image itself, it can still be drawn as another caption's negative image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from vilbert.tasks.registry import Task
from vilbert.training.cli import SetupError

# 12-in-1 task name -> the file of test image ids its reader removes from training
# (vilbert-multi-task vilbert/datasets/*.py, `remove_ids`).
TEST_IMAGE_LISTS = {
    "VQA": "coco_test_ids.npy", "GenomeQA": "genome_test_ids.npy", "VisualDialog": "genome_test_ids.npy",
    "Visual7w": "genome_test_ids.npy", "RetrievalCOCO": "coco_test_ids.npy",
    "RetrievalFlickr30k": "flickr_test_ids.npy", "refcoco": "coco_test_ids.npy", "refcoco+": "coco_test_ids.npy",
    "refcocog": "coco_test_ids.npy", "VisualEntailment": "flickr_test_ids.npy", "GQA": "genome_test_ids.npy",
    "GuessWhatPointing": "coco_test_ids.npy", "FlickrGrounding": "flickr_test_ids.npy",
}


def image_key(image_id) -> str:
    """One spelling for an image id from any file: 391895, "391895" and "000391895" agree."""
    text = str(image_id).strip()
    return str(int(text)) if text.isdigit() else text


def item_image_ids(dataset: Dataset) -> list[tuple]:
    """The image ids of each item of a training dataset (an NLVR2 item has two), from what the
    readers keep: `item_image_ids()` where a reader defines it, retrieval's caption -> image
    index, the refer readers' entries, or one `image_ids` entry per item."""
    if hasattr(dataset, "item_image_ids"):
        ids = dataset.item_image_ids()
    elif hasattr(dataset, "caption_image_index"):
        ids = [dataset.image_ids[i] for i in dataset.caption_image_index]
    elif hasattr(dataset, "entries"):
        ids = [entry["image_id"] for entry in dataset.entries]
    elif len(getattr(dataset, "image_ids", ())) == len(dataset):
        ids = dataset.image_ids
    else:
        raise SetupError(f"--clean_train_sets: {type(dataset).__name__} does not tell the image of each item")
    return [tuple(i) if isinstance(i, (tuple, list)) else (i,) for i in ids]


class CleanedDataset(Dataset):
    """The items `keep` of `dataset`; every other attribute (num_labels, ...) is the dataset's."""

    def __init__(self, dataset: Dataset, keep: np.ndarray):
        self.dataset, self.keep = dataset, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int):
        return self.dataset[int(self.keep[index])]

    def item_image_ids(self) -> list[tuple]:
        ids = item_image_ids(self.dataset)
        return [ids[i] for i in self.keep]

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("dataset", "keep"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def read_test_ids(path: Path) -> set[str]:
    """A 12-in-1 test-id list (.npy of ids, read without pickles) as image_key strings."""
    try:
        ids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SetupError(f"--clean_train_sets: {path} not found (12-in-1's list of test images, in its data "
                         f"package under <dataroot>/cache/)") from None
    except ValueError as exc:
        raise SetupError(f"--clean_train_sets: {path}: not a NumPy array of image ids ({exc})") from None
    return {image_key(i) for i in np.asarray(ids).reshape(-1).tolist()}


def clean_train_sets(tasks: dict[int, Task], datasets: dict[int, Dataset],
                     log: Callable[[str], None] = print) -> dict[int, Dataset]:
    """Each task's training set without the items on a test image of its TEST_IMAGE_LISTS file."""
    cleaned = {}
    for task_id, dataset in datasets.items():
        task = tasks[task_id]
        name = TEST_IMAGE_LISTS.get(task.name)
        if name is None:
            log(f"--clean_train_sets: {task.name} has no list of test images (12-in-1 does not clean it)")
            cleaned[task_id] = dataset
            continue
        path = Path(task.config.dataroot) / "cache" / name
        test_ids = read_test_ids(path)
        keep = np.asarray([i for i, ids in enumerate(item_image_ids(dataset))
                           if not any(image_key(image) in test_ids for image in ids)], dtype=np.int64)
        if len(keep) == 0:
            raise SetupError(f"--clean_train_sets: every training item of {task.name} is on an image of {path}")
        log(f"--clean_train_sets: {task.name} trains on {len(keep)} of {len(dataset)} items "
            f"({len(dataset) - len(keep)} on test images of {path})")
        cleaned[task_id] = CleanedDataset(dataset, keep) if len(keep) < len(dataset) else dataset
    return cleaned
