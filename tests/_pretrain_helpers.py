"""A tiny Conceptual Captions world for the pretraining tests: a word-level BERT tokenizer (fits
config/vilbert_tiny.json's 100-word vocabulary), caption files under Google's names and a feature
store whose features and class distributions follow the objects the captions name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vilbert.data.concap import TRAIN_CAPTIONS, VAL_CAPTIONS, image_id_from_url

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
WORDS = ["a", "an", "and", "with", "on", "the", "left", "right", "of", "picture", "photo", "small", "big"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUM_CLASSES = 11      # config/vilbert_tiny.json v_target_size: 0 = background + 10 object classes
FEATURE_DIM = 48      # config/vilbert_tiny.json v_feature_size


def make_tokenizer_dir(root: Path) -> Path:
    """A BertTokenizerFast with a word-level vocabulary (< 100 ids), saved to root/tokenizer."""
    from transformers import BertTokenizerFast

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + COLOURS + SHAPES + WORDS
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    out = root / "tokenizer"
    tokenizer.save_pretrained(out)
    return out


def _object_class(colour: int, shape: int) -> int:
    return 1 + (colour * len(SHAPES) + shape) % (NUM_CLASSES - 1)


def make_concap_dir(root: Path, num_train: int = 48, num_val: int = 16, seed: int = 0,
                    missing_train: int = 0, with_cls_prob: bool = True) -> Path:
    """Write root/{Train_GCC-training.tsv, Validation_GCC-1.1.0-Validation.tsv, features/shard0.lmdb}.

    missing_train: how many training captions point at an image that has no features.
    """
    from vilbert.features import FeatureWriter

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    class_vectors = rng.normal(size=(NUM_CLASSES, FEATURE_DIM)).astype(np.float32)
    with FeatureWriter(root / "features" / "shard0.lmdb") as writer:
        for split, count, file_name in (("train", num_train, TRAIN_CAPTIONS), ("val", num_val, VAL_CAPTIONS)):
            lines = []
            for i in range(count):
                url = f"http://images.example.com/{split}/{i}.jpg"
                num_objects = int(rng.integers(2, 5))
                colours = rng.integers(len(COLOURS), size=num_objects)
                shapes = rng.integers(len(SHAPES), size=num_objects)
                words = " and ".join(f"a {COLOURS[c]} {SHAPES[s]}" for c, s in zip(colours, shapes))
                lines.append(f"{words.capitalize()} on the picture\t{url}")
                if split == "train" and i < missing_train:
                    continue  # caption whose image was never extracted
                boxes, features, cls_prob = [], [], []
                for c, s in zip(colours, shapes):
                    x1, y1 = rng.uniform(0, 60, size=2)
                    w, h = rng.uniform(10, 40, size=2)
                    boxes.append([x1, y1, x1 + w, y1 + h])
                    k = _object_class(int(c), int(s))
                    features.append(class_vectors[k] + 0.1 * rng.normal(size=FEATURE_DIM))
                    p = np.full(NUM_CLASSES, 0.02)
                    p[k] = 1.0
                    cls_prob.append(p / p.sum())
                # A near-duplicate of the first box (IoU > 0.4) to exercise overlap masking.
                boxes.append([b + 1.0 for b in boxes[0]])
                features.append(features[0] + 0.05)
                cls_prob.append(cls_prob[0])
                writer.put(image_id_from_url(url), image_h=100, image_w=120,
                           boxes=np.asarray(boxes, dtype=np.float32),
                           features=np.asarray(features, dtype=np.float32),
                           cls_prob=np.asarray(cls_prob, dtype=np.float32) if with_cls_prob else None)
            (root / file_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_config_file(path: Path, dropout: float = 0.0, **overrides) -> Path:
    """config/vilbert_tiny.json with every dropout set to `dropout` (and any other field overridden)."""
    repo = Path(__file__).resolve().parents[1]
    values = json.loads((repo / "config" / "vilbert_tiny.json").read_text())
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "v_hidden_dropout_prob",
                "v_attention_probs_dropout_prob"):
        values[key] = dropout
    values.update(overrides)
    path = Path(path)
    path.write_text(json.dumps(values, indent=2))
    return path
