"""Flickr30k image retrieval in the originals' jsonline files (REFERENCE 4).

    dataroot/all_data_final_{train,val_set0,test_set0}_2014.jsonline
        one JSON per line: {"sentences": [5 captions], "img_path": "<image id>.jpg", "id": ...}
    dataroot/hard_negative.json     written by `python -m vilbert.data.retrieval pool`

Training (RetrievalTrainDataset): one item per caption, 4 (caption, image) options, the first
right (target 0), as the originals:
    0  the caption and its image
    1  a random other image's caption, with the image
    2  the caption, with a random other image
    3  a caption of a hard-negative image (one of the image's nearest images by mean region
       feature, from hard_negative.json), with the image
Evaluation (RetrievalEvalDataset, every other split): every (caption, image) pair of the split,
scored one by one; item k is image k // num_captions with caption k % num_captions, so
consecutive items share an image (one feature read per run of captions).

    python -m vilbert.data.retrieval pool --annotations all_data_final_train_2014.jsonline \
        --features flickr30k.lmdb --output hard_negative.json [--neighbours 100]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays
from vilbert.data.files import data_relative_path, read_jsonl
from vilbert.tasks.config import TaskConfig, TaskConfigError

HARD_NEGATIVE_FILE = "hard_negative.json"
NUM_NEIGHBOURS = 100  # the originals' hard-negative pool: the 100 nearest images
DEFAULT_FILES = {
    "train": "all_data_final_train_2014.jsonline",
    "val": "all_data_final_val_set0_2014.jsonline",
    "test": "all_data_final_test_set0_2014.jsonline",
}


def read_jsonline(path: Path) -> list[tuple[str, list[str]]]:
    """[(image id, captions)] in file order. The id is the img_path stem (as the originals for
    Flickr30k), or `id` when there is no img_path."""
    images = []
    for record in read_jsonl(path):
        line_no = record["_line"]
        if "img_path" in record:
            image_id = data_relative_path(record["img_path"], f"{path}:{line_no}: img_path").stem
        elif "id" in record:
            image_id = str(record["id"])
        else:
            raise ValueError(f"{path}:{line_no}: missing field 'img_path' (or 'id')")
        captions = record.get("sentences")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"{path}:{line_no}: 'sentences' must be a non-empty list of captions")
        images.append((image_id, captions))
    if not images:
        raise ValueError(f"{path}: no images")
    return images


class _RetrievalBase(TaskDataset):
    """Captions of a split, tokenised; caption i belongs to image caption_image_index[i]."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        default = Path(config.dataroot) / DEFAULT_FILES[split] if split in DEFAULT_FILES else None
        self.annotations = self.annotation_file(split, default)
        try:
            images = read_jsonline(self.annotations)
        except ValueError as exc:
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        self.image_ids = [image_id for image_id, _ in images]
        self.captions = [c for _, captions in images for c in captions]
        self.caption_image_index = np.asarray([i for i, (_, cs) in enumerate(images) for _ in cs], dtype=np.int64)
        self.image_captions = []  # image index -> its caption indices
        start = 0
        for _, captions in images:
            self.image_captions.append(list(range(start, start + len(captions))))
            start += len(captions)
        self.num_images, self.num_captions = len(self.image_ids), len(self.captions)
        self.num_labels = 1
        self.text = self.encode_cached("retrieval", [self.annotations], self.captions)

    def caption_arrays(self, caption: int) -> dict[str, np.ndarray]:
        return {key: self.text[key][caption] for key in TEXT_KEYS}

    def image_arrays(self, image: int) -> dict[str, np.ndarray]:
        return region_arrays(self.regions(self.image_ids[image]))


class RetrievalTrainDataset(_RetrievalBase):
    """Items of 4 (caption, image) options, the right pair first (see the module docstring)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer, *, hard_negatives: Optional[Path] = None):
        super().__init__(config, split, tokenizer)
        if self.num_images < 2:
            raise TaskConfigError(f"{config.describe()}: retrieval training needs at least 2 images")
        path = Path(hard_negatives or Path(config.dataroot) / HARD_NEGATIVE_FILE)
        if not path.is_file():
            raise TaskConfigError(
                f"{config.describe()}: hard negatives not found: {path} (build them with: python -m "
                f"vilbert.data.retrieval pool --annotations {self.annotations} --features "
                f"{config.features_h5path1} --output {path})"
            )
        neighbours = json.loads(path.read_text()).get("neighbours", {})
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.hard_pool = []  # image index -> indices of its hard-negative images
        for image_id in self.image_ids:
            pool = [position[n] for n in neighbours.get(image_id, []) if n in position and n != image_id]
            if not pool:
                raise TaskConfigError(f"{config.describe()}: {path} has no hard negatives for image {image_id}")
            self.hard_pool.append(pool)

        self.items = np.arange(self.num_captions, dtype=np.int64)  # item -> caption index

    def __len__(self) -> int:
        return len(self.items)

    def without_images(self, drop) -> "RetrievalTrainDataset":
        """A copy without the images `drop(image_id)` names, as 12-in-1 removes test pictures from
        training (train_tasks.py --clean_train_sets): their captions leave the items and the images
        leave every pool of negatives, hard ones included."""
        keep = [i for i, image_id in enumerate(self.image_ids) if not drop(image_id)]
        if len(keep) < 2:
            raise TaskConfigError(f"{self.config.describe()}: fewer than 2 training images are left without the "
                                  f"removed ones")
        new_index = np.full(self.num_images, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.image_ids = [self.image_ids[i] for i in keep]
        copy.image_captions = [self.image_captions[i] for i in keep]
        copy.num_images = len(keep)
        copy.caption_image_index = new_index[self.caption_image_index]  # -1: a removed image's caption
        copy.items = np.flatnonzero(copy.caption_image_index >= 0)
        copy.hard_pool = []
        for i in keep:
            pool = [int(new_index[j]) for j in self.hard_pool[i] if new_index[j] >= 0]
            copy.hard_pool.append(pool or [n for n in range(len(keep)) if n != new_index[i]])
        return copy

    def _other_image(self, image: int) -> int:
        other = random.randrange(self.num_images - 1)  # uniform over the other images
        return other + (other >= image)

    def __getitem__(self, index: int) -> dict:
        # `random` is seeded per DataLoader worker by torch, so workers draw different negatives.
        index = int(self.items[index])  # a caption index (captions of removed images are not items)
        image = int(self.caption_image_index[index])
        random_caption = random.choice(self.image_captions[self._other_image(image)])
        random_image = self._other_image(image)
        hard_caption = random.choice(self.image_captions[random.choice(self.hard_pool[image])])
        captions = [index, random_caption, index, hard_caption]
        images = [image, image, random_image, image]

        own, other = self.image_arrays(image), self.image_arrays(random_image)
        sample = {key: np.stack([self.text[key][c] for c in captions]) for key in TEXT_KEYS}  # (4, T)
        for key in own:  # (4, R, ...): one image per option
            sample[key] = np.stack([own[key] if i == image else other[key] for i in images])
        sample["index"] = index
        sample["target"] = 0
        return sample


class RetrievalEvalDataset(_RetrievalBase):
    """Every (caption, image) pair of a split; RetrievalEvaluator ranks the images per caption."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        self._last_image = (None, None)  # consecutive items share an image: keep the last one read

    def __len__(self) -> int:
        return self.num_images * self.num_captions

    def __getitem__(self, index: int) -> dict:
        image, caption = divmod(index, self.num_captions)
        if self._last_image[0] != image:
            self._last_image = (image, self.image_arrays(image))
        sample = self.caption_arrays(caption)
        sample.update(self._last_image[1])
        sample.update(index=index, caption_index=caption, image_index=image)
        return sample


def build_hard_negatives(
    annotations: Path, features, num_neighbours: int = NUM_NEIGHBOURS, chunk_size: int = 1024
) -> dict:
    """For each image of an annotation file, its nearest other images by mean region feature.

    Distance: Euclidean between the images' mean region features (row 0 of a FeatureReader item).
    Returns {"annotations", "features", "num_neighbours", "neighbours": {image id: [ids, nearest
    first]}}.
    """
    from vilbert.features import FeatureReader

    image_ids = [image_id for image_id, _ in read_jsonline(Path(annotations))]
    reader = FeatureReader(features)
    means = torch.from_numpy(np.stack([reader[i].features[0] for i in image_ids]))  # (N, D)
    k = min(num_neighbours, len(image_ids) - 1)
    neighbours = {}
    for start in range(0, len(image_ids), chunk_size):
        distances = torch.cdist(means[start:start + chunk_size], means)  # (chunk, N)
        rows = torch.arange(distances.shape[0])
        distances[rows, rows + start] = float("inf")  # an image is not its own negative
        nearest = distances.topk(k, dim=1, largest=False).indices  # (chunk, k), nearest first
        for row, ids in enumerate(nearest.tolist()):
            neighbours[image_ids[start + row]] = [image_ids[j] for j in ids]
    return {
        "annotations": str(annotations),
        "features": str(features),
        "num_neighbours": k,
        "neighbours": neighbours,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vilbert.data.retrieval", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pool = commands.add_parser("pool", help="build the hard-negative pool (nearest images by mean region feature)")
    pool.add_argument("--annotations", required=True, type=Path, help="training jsonline file")
    pool.add_argument("--features", required=True, type=Path, help="feature store holding its images")
    pool.add_argument("--output", required=True, type=Path, help="where to write hard_negative.json")
    pool.add_argument("--neighbours", type=int, default=NUM_NEIGHBOURS, help="pool size per image (default 100)")
    args = parser.parse_args(argv)
    try:
        result = build_hard_negatives(args.annotations, args.features, args.neighbours)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result))
    print(f"wrote {args.output}: {len(result['neighbours'])} images x {result['num_neighbours']} hard negatives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
