"""What the one-label readers share (SNLI-VE, NLVR2, GQA): one text per example, one image (or a
pair of images), at most one gold label out of a fixed set.

A reader fills `texts`, `image_ids` (an image id, or a tuple of two for a pair), `labels` (the
label index, or -1 where the example has none), `num_labels`, and says how a prediction is written
(`result_record`). Items:

    input_ids/token_type_ids/attention_mask (T,); a pair: (2, T), the text once per image
    image arrays (R, ...); a pair: (2, R, ...), so that collate puts the two images of an example on
                                    consecutive rows (the binary head reads them side by side)
    target (num_labels,) float32    one-hot (all zero without a gold label); absent on unlabelled splits
    index
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays


class LabelDataset(TaskDataset):
    """Base of the one-label readers; subclasses read their annotations, then call `_encode`."""

    texts: list[str]
    image_ids: list
    labels: np.ndarray  # (N,) int64, -1 = no gold label
    num_labels: int
    has_labels: bool = True

    def _encode(self, reader: str, files: list[Path]) -> None:
        """Tokenise the texts once (cached under dataroot/cache, keyed by the annotation files)."""
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.text = self.encode_cached(reader, files, self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        sample = {key: self.text[key][index] for key in TEXT_KEYS}
        image_id = self.image_ids[index]
        if isinstance(image_id, tuple):  # a pair: the text once per image, images stacked
            images = [region_arrays(self.regions(i)) for i in image_id]
            sample = {key: np.stack([value] * len(images)) for key, value in sample.items()}
            sample.update({key: np.stack([im[key] for im in images]) for key in images[0]})
        else:
            sample.update(region_arrays(self.regions(image_id)))
        sample["index"] = index
        if self.has_labels:
            target = np.zeros(self.num_labels, dtype=np.float32)
            if self.labels[index] >= 0:
                target[self.labels[index]] = 1.0
            sample["target"] = target
        return sample

    def result_record(self, index: int, label: int) -> dict:
        raise NotImplementedError
