"""Captioned pictures: Conceptual Captions TSVs and Flickr30k retrieval jsonlines.

Conceptual Captions, as Google distributes it: `Train_GCC-training.tsv` and
`Validation_GCC-1.1.0-Validation.tsv`, one `caption<TAB>url` per line, no header; captions are lower
case without a final period. The originals key a picture's features by crc32(url) & 0xffffffff.

Flickr30k retrieval, as the originals' jsonlines (`all_data_final_{train,val_set0,test_set0}_2014.jsonline`):
one JSON object per line, `{"sentences": [5 captions], "img_path": "<id>.png", "id": <id>}`; the
readers take the image id from the stem of `img_path`.
"""

from __future__ import annotations

import zlib

import numpy as np

from .text import caption_templates, to_sentence
from .world import Scene

CONCAP_TSV = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}
FLICKR_JSONLINE = {
    "train": "all_data_final_train_2014.jsonline",
    "val": "all_data_final_val_set0_2014.jsonline",
    "test": "all_data_final_test_set0_2014.jsonline",
}
URL_ROOT = "https://demo-world.invalid/concap"
# Odds of each caption kind (see text.caption_templates) for a Conceptual Captions picture.
CONCAP_KIND_PROBS = (0.4, 0.2, 0.15, 0.15, 0.1)


def concap_image_id(url: str) -> int:
    """The originals' image id of a Conceptual Captions url."""
    return zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF


def concap_urls(split: str, count: int, taken: set[int]) -> list[tuple[str, int]]:
    """`count` urls of a split with their image ids; a url whose crc32 collides with one already
    taken gets a query suffix, so ids are unique across the whole folder."""
    out = []
    for k in range(count):
        url = f"{URL_ROOT}/{split}/{k:07d}.png"
        suffix = 0
        while concap_image_id(url) in taken:
            suffix += 1
            url = f"{URL_ROOT}/{split}/{k:07d}.png?v={suffix}"
        image_id = concap_image_id(url)
        taken.add(image_id)
        out.append((url, image_id))
    return out


def concap_caption(rng: np.random.Generator, scene: Scene) -> str:
    captions = caption_templates(rng, scene)
    return captions[int(rng.choice(len(captions), p=CONCAP_KIND_PROBS))]


def concap_tsv(lines: list[tuple[str, str]]) -> str:
    """[(caption, url)] -> the TSV text."""
    for caption, url in lines:
        if "\t" in caption or "\n" in caption:
            raise ValueError(f"caption {caption!r} holds a tab or newline")
    return "".join(f"{caption}\t{url}\n" for caption, url in lines)


def flickr_record(rng: np.random.Generator, scene: Scene, image_id: int) -> dict:
    """One jsonline record: five different captions of the scene, as sentences."""
    captions = [to_sentence(c) for c in caption_templates(rng, scene)]
    return {"sentences": captions, "img_path": f"{image_id}.png", "id": image_id}
