"""Conceptual Captions for pretraining: caption files, region features, and the masked samples.

Layout of `train_concap.py --file_path DIR` (as Google distributes the captions, REFERENCE 4):

    DIR/Train_GCC-training.tsv                  caption TAB url, one pair a line, no header
    DIR/Validation_GCC-1.1.0-Validation.tsv     the same for validation
    DIR/features/                               one feature store or many *.lmdb shards, keyed by
                                                str(crc32(url) & 0xffffffff) as the originals

    paths = ConcapPaths.from_dir(DIR)                        # each path can be overridden
    dataset = ConceptualCaptionsDataset(paths.train_captions, FeatureReader(paths.features),
                                        tokenizer, SampleConfig(seed=42), cache_dir=...)
    sample = dataset[(epoch, index)]            # keys as vilbert.training.TrainSampler yields them

A sample (REFERENCE 4; dict of tensors named as ViLBertForPretraining.forward's arguments):
- with probability 0.5 the caption is replaced by the caption of another image
  (next_sentence_label 1; 0 = the caption belongs to the image);
- [CLS] caption [SEP], at most max_seq_length tokens; 15% of the caption tokens are targets
  (masked_lm_labels = the token id, -1 elsewhere), of which 80% become [MASK], 10% a random token
  and 10% stay;
- at most max_region_num - 1 regions plus the global region in row 0; 15% of the real regions are
  targets (image_label 1, -1 elsewhere), of which 90% are zeroed in the input; the global row is
  then recomputed as the mean of the real rows, so it does not leak the masked features;
- with mask_overlapping, every region whose IoU with a masked region exceeds 0.4 is zeroed as well,
  so a near-duplicate box cannot give the masked one away. (12-in-1 computes this set of regions,
  commented "mask the overlap regions into zeros", but only uses it in the global row's
  denominator; we do what the comment says.) Off by default, as in beta.
- image_target: the detector class distribution cls_prob (visual_target 0) or the region's
  unmasked feature (visual_target 1);
- with objective 1 (12-in-1's `--objective 1`), a pair with a random caption has no masked-word
  or masked-region targets: its caption does not describe the image, so predicting its words from
  the image (or regions from its words) teaches the model to ignore the other modality.

Randomness is drawn from a generator seeded with (seed, epoch, index): a sample is the same
whichever rank or DataLoader worker builds it and however often, so runs are reproducible and
resume mid-epoch, and the number of ranks does not change the data.

Captions are tokenised once, in batches, when the dataset is built, and cached as a .npz of
integers (no pickle) keyed by the caption file's content, the tokenizer and the maximum length.
Captions whose image is missing from the feature store are counted and skipped; more than
`max_missing_fraction` (1%) missing stops the run before training with an error naming the store
and some of the ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from vilbert.features import FeatureReader, pad_regions

TRAIN_CAPTIONS = "Train_GCC-training.tsv"
VAL_CAPTIONS = "Validation_GCC-1.1.0-Validation.tsv"
FEATURES_DIR = "features"


def image_id_from_url(url: str) -> int:
    """The originals' image id of a Conceptual Captions url: crc32(url) & 0xffffffff."""
    return zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF


def read_captions(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Captions and image ids (int64, crc32 of the url) of a `caption TAB url` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    captions, ids = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            caption, tab, url = line.partition("\t")
            url = url.strip()
            if not tab or not url or not caption.strip():
                raise ValueError(f"{path}:{line_no}: expected 'caption<TAB>url', got {line[:80]!r}")
            captions.append(caption.strip())
            ids.append(image_id_from_url(url))
    if not captions:
        raise ValueError(f"{path}: no captions in the file")
    return captions, np.asarray(ids, dtype=np.int64)


@dataclass
class ConcapPaths:
    """Where the captions and features are; `from_dir` fills the `--file_path` layout and any
    given path overrides its default."""

    train_captions: Path
    val_captions: Path
    features: list[Path] = field(default_factory=list)

    @classmethod
    def from_dir(cls, file_path: str | os.PathLike | None, train_captions=None, val_captions=None,
                 features=None) -> "ConcapPaths":
        if file_path is None and (train_captions is None or val_captions is None or not features):
            raise ValueError("give --file_path DIR, or all of --train_captions, --val_captions and --features")
        root = Path(file_path) if file_path is not None else None
        if features is not None and not isinstance(features, (list, tuple)):
            features = [features]
        return cls(
            train_captions=Path(train_captions) if train_captions else root / TRAIN_CAPTIONS,
            val_captions=Path(val_captions) if val_captions else root / VAL_CAPTIONS,
            features=[Path(p) for p in features] if features else [root / FEATURES_DIR],
        )


@dataclass
class SampleConfig:
    """How pretraining samples are built (REFERENCE 4)."""

    max_seq_length: int = 36            # tokens, [CLS] and [SEP] included
    max_region_num: int = 37            # region rows, the global region included (36 + 1)
    visual_target: int = 0              # 0: class distribution (KL), 1: feature (regression)
    token_mask_prob: float = 0.15
    region_mask_prob: float = 0.15
    region_zero_prob: float = 0.9       # of the masked regions, the share zeroed in the input
    random_caption_prob: float = 0.5
    mask_overlapping: bool = False      # also zero regions with IoU > overlap_iou with a masked one
    overlap_iou: float = 0.4
    objective: int = 0                  # 1: no MLM/region targets on random-caption pairs (12-in-1)
    seed: int = 0


class MissingImagesError(RuntimeError):
    """Too many captions have no features in the store."""


def box_iou(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x1,y1,x2,y2 boxes -> (n, n) pairwise IoU."""
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area[:, None] + area[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def tokenizer_digest(tokenizer) -> str:
    """A hash of everything that decides the token ids (vocabulary, normaliser, casing)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Truncation and padding are per-call settings the tokenizer remembers, not its identity.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    else:  # a slow tokenizer: its vocabulary and casing
        text = repr(sorted(tokenizer.get_vocab().items())) + repr(getattr(tokenizer, "do_lower_case", None))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def tokenize_captions(captions: list[str], tokenizer, max_tokens: int,
                      chunk_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Word-piece ids of every caption (no special tokens, at most `max_tokens` each), as one flat
    int32 array and (N+1,) int64 offsets: caption i is flat[offsets[i]:offsets[i+1]]."""
    pieces, lengths = [], []
    for start in range(0, len(captions), chunk_size):
        encoded = tokenizer(captions[start:start + chunk_size], add_special_tokens=False, truncation=True,
                            max_length=max_tokens, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
        for ids in encoded:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    offsets = np.zeros(len(captions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return flat, offsets


def load_or_tokenize(captions_path: Path, captions: list[str], tokenizer, max_tokens: int,
                     cache_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """tokenize_captions, through a .npz cache in cache_dir (None: no cache)."""
    if cache_dir is None:
        return tokenize_captions(captions, tokenizer, max_tokens)
    key = f"{file_digest(captions_path)}-{tokenizer_digest(tokenizer)}-{max_tokens}"
    cache = Path(cache_dir) / f"{captions_path.stem}.tokens.{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as data:
                flat, offsets = data["tokens"], data["offsets"]
            if len(offsets) == len(captions) + 1:
                return flat, offsets
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuild it below
    flat, offsets = tokenize_captions(captions, tokenizer, max_tokens)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, tokens=flat, offsets=offsets)
    os.replace(tmp, cache)  # atomic: concurrent ranks never read half a file
    return flat, offsets


class ConceptualCaptionsDataset(Dataset):
    """Pretraining samples from a caption file and a feature store (see the module docstring).

    captions_path: a `caption TAB url` file. features: a FeatureReader or what it opens (a store, a
    folder of shards, a list). tokenizer: a (fast) BERT tokenizer. cache_dir: where the tokenised
    captions are cached (None: tokenise in memory every time).

    Attributes: `num_captions` (lines in the file), `missing_ids` (image ids without features,
    one per skipped caption), and len(dataset) = the captions kept.
    """

    def __init__(self, captions_path, features, tokenizer, config: SampleConfig | None = None,
                 cache_dir=None, max_missing_fraction: float = 0.01):
        self.config = config or SampleConfig()
        c = self.config
        if c.max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3 ([CLS] token [SEP]), got {c.max_seq_length}")
        if c.visual_target not in (0, 1):
            raise ValueError(f"visual_target must be 0 (class distribution) or 1 (feature), got {c.visual_target}")
        self.captions_path = Path(captions_path)
        self.reader = features if isinstance(features, FeatureReader) else FeatureReader(features)

        captions, image_ids = read_captions(self.captions_path)
        self.num_captions = len(captions)
        present = {}
        for image_id in np.unique(image_ids):
            present[image_id] = image_id in self.reader
        keep = np.fromiter((present[i] for i in image_ids), dtype=bool, count=len(image_ids))
        self.missing_ids = [str(i) for i in image_ids[~keep]]
        fraction = len(self.missing_ids) / self.num_captions
        if fraction > max_missing_fraction:
            raise MissingImagesError(
                f"{len(self.missing_ids)} of {self.num_captions} captions in {self.captions_path} "
                f"({100 * fraction:.1f}%, more than {100 * max_missing_fraction:g}%) have no features in "
                f"{self._store_name()}, e.g. image ids {', '.join(self.missing_ids[:5])}: "
                f"check --features / --file_path, or extract the missing images")
        if not keep.any():
            raise MissingImagesError(f"no caption of {self.captions_path} has features in {self._store_name()}")

        flat, offsets = load_or_tokenize(self.captions_path, captions, tokenizer, c.max_seq_length - 2, cache_dir)
        # Keep only the captions with an image; numpy arrays (not Python lists) so that forked
        # DataLoader workers share them without copy-on-write of reference counts.
        lengths = offsets[1:] - offsets[:-1]
        self.tokens = flat[np.repeat(keep, lengths)]
        self.token_offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[keep], out=self.token_offsets[1:])
        self.image_ids = image_ids[keep]

        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id or 0
        self.vocab_size = len(tokenizer)

        if c.visual_target == 0:
            first = self.reader[str(self.image_ids[0])]
            if first.cls_prob is None:
                raise ValueError(f"--visual_target 0 needs class distributions (cls_prob) in {self._store_name()}, "
                                 f"and image {first.image_id} has none; use --visual_target 1 (feature regression)")

    def _store_name(self) -> str:
        paths = self.reader.paths
        return f"the feature store {paths[0]}" if len(paths) == 1 else f"the feature stores {', '.join(map(str, paths))}"

    def __len__(self) -> int:
        return len(self.image_ids)

    def missing_summary(self) -> str | None:
        """A one-line summary of the skipped captions, or None when none was skipped."""
        if not self.missing_ids:
            return None
        return (f"skipped {len(self.missing_ids)} of {self.num_captions} captions in {self.captions_path} "
                f"whose image is not in {self._store_name()} (e.g. {', '.join(self.missing_ids[:5])})")

    def caption_tokens(self, index: int) -> np.ndarray:
        return self.tokens[self.token_offsets[index]:self.token_offsets[index + 1]]

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        c = self.config
        rng = np.random.default_rng([c.seed, epoch, index])

        # Alignment: with p = 0.5 a caption of another image (label 1).
        caption_index, aligned = index, 0
        if len(self) > 1 and rng.random() < c.random_caption_prob:
            for _ in range(10):  # another caption of the same image would not be a negative
                other = int(rng.integers(len(self) - 1))
                other += other >= index
                if self.image_ids[other] != self.image_ids[index]:
                    caption_index, aligned = other, 1
                    break
        text = self._mask_tokens(self.caption_tokens(caption_index), rng)
        regions = self._mask_regions(self.reader[str(self.image_ids[index])], rng)
        if c.objective == 1 and aligned == 1:
            # 12-in-1's --objective 1: a random caption says nothing about the image, so its masked
            # words and regions are not targets (the input stays masked alike).
            text["masked_lm_labels"].fill_(-1)
            regions["image_label"].fill_(-1)
        return {**text, **regions, "next_sentence_label": torch.tensor(aligned, dtype=torch.long)}

    def _mask_tokens(self, caption: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        c = self.config
        n = len(caption)
        targets = rng.random(n) < c.token_mask_prob
        action = rng.random(n)
        to_mask = targets & (action < 0.8)
        to_random = targets & (action >= 0.8) & (action < 0.9)
        random_ids = rng.integers(self.vocab_size, size=n)
        shown = np.where(to_mask, self.mask_id, np.where(to_random, random_ids, caption))

        length = n + 2
        input_ids = np.full(c.max_seq_length, self.pad_id, dtype=np.int64)   # (T,)
        input_ids[0], input_ids[1:n + 1], input_ids[n + 1] = self.cls_id, shown, self.sep_id
        labels = np.full(c.max_seq_length, -1, dtype=np.int64)               # (T,)
        labels[1:n + 1] = np.where(targets, caption, -1)
        mask = np.zeros(c.max_seq_length, dtype=np.int64)
        mask[:length] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.zeros(c.max_seq_length, dtype=torch.long),
            "attention_mask": torch.from_numpy(mask),
            "masked_lm_labels": torch.from_numpy(labels),
        }

    def _mask_regions(self, item, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        c = self.config
        padded = pad_regions(item, c.max_region_num)
        n = padded.num_real - 1                      # real regions, rows 1..n
        features = padded.features                   # (R, D), a fresh array we may modify
        real = slice(1, n + 1)

        targets = rng.random(n) < c.region_mask_prob
        zeroed = targets & (rng.random(n) < c.region_zero_prob)
        if c.visual_target == 1:
            image_target = features.copy()           # (R, D) the unmasked features
        else:
            image_target = padded.cls_prob           # (R, C)
            if image_target is None:
                raise ValueError(f"image {item.image_id} has no cls_prob, which --visual_target 0 needs")
        if c.mask_overlapping and targets.any():
            overlaps = box_iou(padded.boxes[real])[targets] > c.overlap_iou   # (n_targets, n)
            zeroed = zeroed | (overlaps.any(0) & ~targets)
        features[real][zeroed] = 0.0
        features[0] = features[real].mean(axis=0) if n else 0.0   # global row after masking

        image_label = np.full(c.max_region_num, -1, dtype=np.int64)          # (R,)
        image_label[real] = np.where(targets, 1, -1)
        return {
            "image_feat": torch.from_numpy(features),
            "image_loc": torch.from_numpy(padded.locations),
            "image_attention_mask": torch.from_numpy(padded.mask),
            "image_label": torch.from_numpy(image_label),
            "image_target": torch.from_numpy(np.ascontiguousarray(image_target, dtype=np.float32)),
        }


TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_labels")
REGION_KEYS = ("image_feat", "image_loc", "image_attention_mask", "image_label", "image_target")


def collate_trimmed(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch, then cut the padding columns no sample of the batch uses.

    Captions are much shorter than max_seq_length on average, so a batch padded only to its
    longest caption costs far less compute; padding is masked out, so the results are the same.
    """
    batch = default_collate(samples)
    text_length = int(batch["attention_mask"].sum(1).max())
    num_regions = int(batch["image_attention_mask"].sum(1).max())
    for key in TEXT_KEYS:
        batch[key] = batch[key][:, :text_length]
    for key in REGION_KEYS:
        batch[key] = batch[key][:, :num_regions]
    return batch


def make_loader(dataset: Dataset, sampler, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int = 4, seed: int = 0, trim_padding: bool = True) -> DataLoader:
    """A DataLoader over `dataset` in the order of `sampler`, with workers, pinned memory and prefetch.

    trim_padding: batches padded to their longest caption and region list (collate_trimmed)
    rather than to max_seq_length / max_region_num. The loader's own generator (seeded) keeps the
    global torch RNG untouched when iterators are created, so a resumed run draws the same dropout
    masks as the run it continues.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs = dict(num_workers=num_workers, pin_memory=pin_memory, generator=generator,
                  collate_fn=collate_trimmed if trim_padding else default_collate)
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    if num_workers > 0:  # a dead worker then names the sample it was loading
        from vilbert.training.loop import TrackedDataset

        dataset = TrackedDataset(dataset, num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, **kwargs)
