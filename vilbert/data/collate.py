"""The one tokenise / pad / collate path that every task dataset uses.

A dataset item is a dict of numpy arrays and numbers; `collate` stacks a list of them into the
batch dict the scripts feed to the model:

    input_ids, token_type_ids, attention_mask   (N, T) long     N = B, or B*options
    image_feat                                  (N, R, D) float32, row 0 the global region
    image_loc                                   (N, R, 5) float32
    image_attention_mask                        (N, R) long, 1 = real region
    index                                       (B,) long, the item's position in its dataset
    target, ids for the result writers          per task (see each reader)

Multiple-choice items (VCR's 4 answers, retrieval's 4 pairs) carry text of shape (options, T):
`collate` flattens them to (B*options, T) and repeats an item's single image for each option
(an item may also give one image per option, (options, R, D)). The model never sees options; the
VL-logit loss views its (B*options, 1) logits as (B, options) again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vilbert.tasks.config import TaskConfig, TaskConfigError

TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
IMAGE_KEYS = ("image_feat", "image_loc", "image_attention_mask")
_LONG_KEYS = set(TEXT_KEYS) | {"image_attention_mask"}
# Per-sample dimensions of the image arrays when an item has a single image.
_IMAGE_DIMS = {"image_feat": 2, "image_loc": 2, "image_attention_mask": 1}
# What ViLBertForVLTasks.forward takes (by keyword); the other batch entries are targets and ids.
MODEL_INPUT_KEYS = ("input_ids", "image_feat", "image_loc", "token_type_ids", "attention_mask", "image_attention_mask")


def encode_text(
    tokenizer,
    texts: Sequence[str],
    pairs: Optional[Sequence[str]] = None,
    max_length: int = 20,
    chunk_size: int = 8192,
) -> dict[str, np.ndarray]:
    """Tokenise texts (or text pairs) to [CLS] a [SEP] (b [SEP]), padded to `max_length`.

    Returns int32 arrays (N, max_length) under TEXT_KEYS. Token types are 0 for the first text and
    1 for the second, padding is id 0 with type 0 and mask 0, as the originals. Too-long inputs are
    cut one token at a time from the longer of the two texts (the originals' `_truncate_seq_pair`),
    always keeping the final [SEP].
    """
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"encode_text: {len(texts)} texts but {len(pairs)} pairs")
    out = {key: np.zeros((len(texts), max_length), dtype=np.int32) for key in TEXT_KEYS}
    # Chunks keep the tokenizer's Python lists small for files with hundreds of thousands of texts.
    for start in range(0, len(texts), chunk_size):
        stop = min(start + chunk_size, len(texts))
        encoded = tokenizer(
            list(texts[start:stop]),
            list(pairs[start:stop]) if pairs is not None else None,
            truncation="longest_first",
            max_length=max_length,
            padding="max_length",
            return_token_type_ids=True,
            return_attention_mask=True,
        )
        for key in TEXT_KEYS:
            out[key][start:stop] = np.asarray(encoded[key], dtype=np.int32)
    return out


def region_arrays(padded) -> dict[str, np.ndarray]:
    """The image part of a dataset item from a `pad_regions(...)` result."""
    return {
        "image_feat": np.asarray(padded.features, dtype=np.float32),
        "image_loc": np.asarray(padded.locations, dtype=np.float32),
        "image_attention_mask": np.asarray(padded.mask, dtype=np.int64),
    }


def _to_tensor(key: str, values: list) -> torch.Tensor:
    stacked = torch.from_numpy(np.stack([np.asarray(v) for v in values]))
    if key in _LONG_KEYS or key == "index":
        return stacked.long()
    if stacked.dtype == torch.float64:
        return stacked.float()
    return stacked


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack dataset items into a batch dict, flattening multiple-choice options (see module doc)."""
    batch = {key: _to_tensor(key, [s[key] for s in samples]) for key in samples[0]}
    input_ids = batch.get("input_ids")
    if input_ids is not None and input_ids.dim() == 3:
        num_options = input_ids.shape[1]
        for key in TEXT_KEYS:
            batch[key] = batch[key].flatten(0, 1)  # (B, O, T) -> (B*O, T)
        for key in IMAGE_KEYS:
            if key not in batch:
                continue
            if batch[key].dim() == _IMAGE_DIMS[key] + 2:  # one image per option: (B, O, R, ...)
                batch[key] = batch[key].flatten(0, 1)
            else:  # one image per item, shared by its options: (B, R, ...) -> (B*O, R, ...)
                batch[key] = batch[key].repeat_interleave(num_options, dim=0)
    return batch


def model_inputs(batch: dict) -> dict:
    """The batch entries ViLBertForVLTasks.forward takes, by keyword: `model(**model_inputs(batch))`."""
    return {key: batch[key] for key in MODEL_INPUT_KEYS}


def to_device(batch: dict, device) -> dict:
    """Move every tensor of a batch to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
    distributed: Optional[bool] = None,
) -> DataLoader:
    """A DataLoader with the shared collate; under torch.distributed each rank reads its own share.

    `batch_size` is per process. With `distributed` (default: whether a process group is
    initialised) a DistributedSampler splits the data; call `loader.sampler.set_epoch(epoch)`
    each epoch to reshuffle. Evaluation may see a few items twice when the data does not divide
    by the world size; the evaluators count every item once (they index by `batch["index"]`).
    """
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last) if distributed else None
    generator = None
    if sampler is None and shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=generator,
    )


class TaskDataset(Dataset):
    """What every task dataset shares: its config and split, and its region stores.

    The stores named by `features_h5path1` (detections) and `features_h5path2` (ground truth) are
    checked when the dataset is built and opened lazily (FeatureReader is safe in DataLoader
    workers). Subclasses read their annotations and implement `__getitem__`.
    """

    def __init__(self, config: TaskConfig, split: str, tokenizer, *, use_gt_store: bool = False):
        from vilbert.features import FeatureReader

        self.config = config
        self.split = split
        self.tokenizer = tokenizer
        self.max_seq_length = config.max_seq_length
        self.max_region_num = config.max_region_num
        self.features = FeatureReader(config.require(config.features_h5path1, "features_h5path1"))
        self.gt_features = None
        if use_gt_store:
            self.gt_features = FeatureReader(config.require(config.features_h5path2, "features_h5path2"))

    def fail(self, message: str) -> TaskConfigError:
        """An error that names the task and split (readers raise it for bad annotations or stores)."""
        return TaskConfigError(f"{self.config.describe()}, split {self.split}: {message}")

    def encode_cached(self, reader: str, files: Sequence[Path], texts: Sequence[str], /, *,
                      prefix: Optional[str] = None, **settings) -> dict[str, np.ndarray]:
        """`encode_text` of `texts`, run once and cached under dataroot/cache as
        `<prefix or reader_split>_<key>.npz`, the key hashing `files`, the tokenizer, max_seq_length,
        reader, split and `settings` (so __getitem__ only indexes the arrays)."""
        from vilbert.data.cache import cache_key, cached_arrays

        key = cache_key(files, self.tokenizer, self.max_seq_length, reader=reader, split=self.split, **settings)
        return cached_arrays(self.cache_dir, prefix or f"{reader}_{self.split}", key,
                             lambda: encode_text(self.tokenizer, list(texts), max_length=self.max_seq_length))

    @property
    def cache_dir(self) -> Path:
        """Where tokenised inputs and vocabularies are cached: dataroot/cache, as the originals."""
        return Path(self.config.dataroot) / "cache"

    def annotation_file(self, split: str, default: Optional[Path]) -> Path:
        """The annotation file of `split`: the YAML's path for the train/val split, else `default`."""
        named = self.config.annotations_for(split)
        if named is not None:
            field = "train_annotations_jsonpath" if split == self.config.train_split else "val_annotations_jsonpath"
            return self.config.require(named, field)
        if default is None:
            raise TaskConfigError(f"{self.config.describe()}: no annotation file is known for split {split!r}")
        return self.config.require(default, f"annotation file of split {split!r}")

    def regions(self, image_id, with_gt: bool = False):
        """`pad_regions` of one image (ground-truth boxes first when `with_gt`) -> PaddedRegions."""
        from vilbert.features import MissingImageError, pad_regions

        try:
            item = self.features[image_id]
            gt_item = self.gt_features[image_id] if with_gt else None
        except MissingImageError as exc:
            raise MissingImageError(f"{self.config.describe()}, split {self.split}: {exc}") from None
        return pad_regions(item, self.max_region_num, gt_item=gt_item)

