"""Pictures -> regions for vilbert.predict: the extractor options, THE feature source, the cache.

    pictures = PictureFeatures(FeatureOptions(backbone="pixels", boxes="gt", boxes_file="boxes.json"),
                               cache_dir="~/.cache/vilbert/features")
    pictures = PictureFeatures(FeatureOptions(detector="detectron_model.pth",      # 12-in-1's detector
                                              detector_config="detectron_config.yaml"))
    regions = pictures.regions("a.png")                 # extracted, or read from the cache
    regions = pictures.stored("features.lmdb", 42)      # a feature store's record

A picture's cache key is the sha256 of its file content, the extractor settings (FeatureOptions,
with the boxes file's content and the weight files' identities) and, for `--boxes gt`, its image
id (the boxes file is keyed by it). An entry is one file in the feature store's record format
(vilbert/features/store.py; no pickle), so cached and freshly extracted features are the same
numbers (float16, as in a store, unless FeatureOptions.feature_dtype says float32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np

from vilbert.predict.errors import PredictError

if TYPE_CHECKING:
    from PIL.Image import Image

CACHE_FORMAT = 1  # bump when what a cache entry holds changes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureOptions:
    """How a picture becomes region features: the options of `python -m vilbert.features extract`
    (vilbert.features.extract.RegionExtractor; same names and defaults, except boxes, which
    defaults to the detector's boxes when there is a detector, else to a grid)."""

    backbone: str = "resnet101"  # resnet50 | resnet101 | pixels (the demo world's descriptor)
    weights: Optional[str] = None  # local ResNet state dict
    random_weights: bool = False  # tests only
    boxes: Optional[str] = None  # grid | gt (boxes_file, keyed by image id = file stem) | detector
    boxes_file: Optional[str] = None
    grid: int = 6
    detector: Optional[str] = None  # torchvision Faster R-CNN state dict, or with detector_config 12-in-1's
    detector_arch: str = "fasterrcnn_resnet50_fpn"
    detector_config: Optional[str] = None  # maskrcnn-benchmark YAML: the detector gives the features (no backbone)
    min_boxes: int = 10
    max_boxes: Optional[int] = None  # --num-features: 36, or 12-in-1's 100 with detector_config
    min_score: Optional[float] = None  # --confidence-threshold: 0.2, or 12-in-1's 0 with detector_config
    image_size: int = 600
    max_size: int = 1000
    feature_dtype: str = "float16"  # what the store keeps; the cache keeps the same

    def __post_init__(self):
        if self.boxes is None:
            object.__setattr__(self, "boxes", "detector" if self.detector else "grid")

    def identity(self) -> dict:
        """What the features depend on, for the cache key: the settings, with every option that
        names a file replaced by that file's identity (file_identity)."""
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if isinstance(value, str) and Path(value).is_file():
                values[name] = file_identity(value)
        return values


def file_identity(path, content_limit: int = 16 << 20) -> list:
    """A small file (a boxes file, a detector's YAML) by the sha256 of its content; a large one (a
    weights file: hashing a 1 GB detector in every process would cost seconds) by its resolved
    path, size and modification time."""
    from vilbert.data.cache import file_digest

    stat = Path(path).stat()
    if stat.st_size <= content_limit:
        return ["sha256", file_digest(path)]
    return ["file", str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


# (HxWx3 uint8 RGB picture, image id) -> (boxes (n, 4) pixels, features (n, D), cls_prob (n, C) or None)
FeatureSource = Callable[[np.ndarray, str], tuple]


def feature_source(options: FeatureOptions, device=None, feature_size: Optional[int] = None) -> FeatureSource:
    """THE place where a picture becomes regions: the extractor of `python -m vilbert.features
    extract` (vilbert.features.extract.RegionExtractor) with the same options, one picture at a
    time, so a picture's regions here are what that command stores for it (with --batch-size 1:
    a batch pads its pictures to one size). feature_size: the width the model expects, checked
    before any picture is extracted (a PredictError naming both widths)."""
    from vilbert.features.extract import RegionExtractor

    settings = {k: v for k, v in dataclasses.asdict(options).items() if k != "feature_dtype"}
    extractor = RegionExtractor(device=device, **settings)
    for note in extractor.notes:
        logger.info("note: %s", note)
    if feature_size is not None and extractor.dim != feature_size:
        made_by = (f"--detector-config {options.detector_config} (its box head's MLP_HEAD_DIM)" if options.detector_config
                   else f"--backbone {options.backbone}")
        raise PredictError(f"{made_by} gives {extractor.dim}-d region features, the checkpoint expects "
                           f"{feature_size} (v_feature_size): use the extractor it was trained with")

    def source(image: np.ndarray, image_id: str):
        return extractor([image], [image_id])[0]

    return source


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vilbert" / "features"


class FeatureCache:
    """Regions by cache key: the latest `memory_items` in memory, and (with a directory) every
    entry on disk, one file each in the feature store's record format, written atomically so that
    processes sharing the folder never read half a file. `hits` / `misses` count lookups."""

    def __init__(self, directory=None, memory_items: int = 64):
        self.directory = Path(directory).expanduser() if directory else None
        self.memory_items = memory_items
        self._memory: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.vlbf"

    def get(self, key: str, image_id: str):
        """The RegionItem stored under `key` (named `image_id`), or None."""
        from vilbert.features.reader import region_item
        from vilbert.features.store import FeatureStoreError, decode_record

        item = self._memory.get(key)
        if item is None and self.directory is not None and self._path(key).is_file():
            try:
                item = region_item(image_id, decode_record(key, bytearray(self._path(key).read_bytes())))
            except (OSError, FeatureStoreError) as exc:
                logger.warning("ignoring unreadable cache entry %s (%s)", self._path(key), exc)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, item)
        return dataclasses.replace(item, image_id=image_id)

    def put(self, key: str, image_id: str, *, image_h, image_w, boxes, features, cls_prob, feature_dtype: str):
        """Store one picture's regions; returns them as `get` will (features at the store's
        precision), so a first and a cached run give the same answers."""
        from vilbert.features.reader import region_item
        from vilbert.features.store import decode_record, encode_record

        record = encode_record(image_id, image_h, image_w, boxes, features, cls_prob, feature_dtype)
        if self.directory is not None:
            path = self._path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    f.write(record)
                os.replace(tmp, path)
            except OSError as exc:
                logger.warning("could not write the feature cache %s (%s); continuing without it", path, exc)
        item = region_item(image_id, decode_record(key, bytearray(record)))
        self._remember(key, item)
        return item

    def _remember(self, key, item) -> None:
        self._memory[key] = item
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)


@dataclass
class ImageRegions:
    """One picture's regions, ready for the model."""

    image_id: str
    item: object  # vilbert.features.RegionItem: row 0 of its features is the global region
    path: Optional[str] = None  # the picture file, when there is one (pictures are drawn on it)
    features: str = "store"  # where the regions came from: "extracted", "cached" or "store"
    seconds: float = 0.0  # to read or extract them


ImageLike = Union[str, os.PathLike, bytes, np.ndarray, "Image", ImageRegions]


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes -> HxWx3 uint8 RGB; PredictError when PIL cannot read it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))
    except Exception as exc:  # PIL raises many kinds (decompression bombs included): all are one line
        raise PredictError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None


class PictureFeatures:
    """Pictures -> ImageRegions: extracted once per picture and settings, then read from the cache.

    options: the extractor (FeatureOptions); cache_dir: the disk cache (None: memory only);
    device: where the extractor runs; feature_size: the width the model expects (checked)."""

    def __init__(self, options: Optional[FeatureOptions] = None, cache_dir=None, device=None,
                 feature_size: Optional[int] = None):
        self.options = options or FeatureOptions()
        self.cache = FeatureCache(cache_dir)
        self.device = device
        self.feature_size = feature_size
        self._source: Optional[FeatureSource] = None  # built at the first picture that needs it

    def regions(self, image: ImageLike, image_id: Optional[str] = None) -> ImageRegions:
        """A picture's regions: a file path, the file's bytes, a PIL image or an HxWx3 uint8 array
        (an ImageRegions passes through). image_id: the boxes-file key of `--boxes gt`, default
        the file stem (or, without a file, the start of the content hash)."""
        if isinstance(image, ImageRegions):
            return image
        started = time.perf_counter()
        path, pixels = None, None
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PredictError(f"{path}: cannot read ({exc.strerror or exc})") from None
            name, image_id = str(path), image_id or path.stem
        elif isinstance(image, (bytes, bytearray)):
            data, name = bytes(image), image_id or "the uploaded image"
        else:
            pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
            if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
                raise PredictError(f"a picture array must be HxWx3 uint8, got {pixels.shape} {pixels.dtype}")
            data, name = np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode(), image_id or "the picture"
        digest = hashlib.sha256(data).hexdigest()
        image_id = str(image_id or digest[:16])
        identity = {"format": CACHE_FORMAT, "image": digest, "features": self.options.identity(),
                    "image_id": image_id if self.options.boxes == "gt" else None}
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        item, where = self.cache.get(key, image_id), "cached"
        if item is None:
            if pixels is None:
                pixels = decode_image(data, name)
            if self._source is None:
                try:
                    self._source = feature_source(self.options, self.device, self.feature_size)
                except (ValueError, FileNotFoundError) as exc:
                    raise PredictError(f"feature extractor: {exc}") from None
            try:
                boxes, features, cls_prob = self._source(pixels, image_id)
            except (ValueError, FileNotFoundError) as exc:
                raise PredictError(f"{name}: {exc}") from None
            if len(boxes) == 0:  # extract skips such pictures (without_regions); a global row needs a region
                raise PredictError(f"{name}: the detector found no region in this picture")
            item = self.cache.put(key, image_id, image_h=pixels.shape[0], image_w=pixels.shape[1], boxes=boxes,
                                  features=features, cls_prob=cls_prob, feature_dtype=self.options.feature_dtype)
            where = "extracted"
        self._check_width(item, name)
        return ImageRegions(image_id, item, str(path) if path else None, where, time.perf_counter() - started)

    def stored(self, store, image_id, image_path=None) -> ImageRegions:
        """The regions of `image_id` in a feature store (a store, a folder of shards or a list);
        image_path: the picture, for drawing (optional)."""
        from vilbert.features import FeatureReader, FeatureStoreError, MissingImageError

        started = time.perf_counter()
        try:
            item = FeatureReader(store)[image_id]
        except (FeatureStoreError, MissingImageError) as exc:
            raise PredictError(str(exc)) from None
        self._check_width(item, f"image {image_id} of {store}")
        return ImageRegions(str(image_id), item, str(image_path) if image_path else None, "store",
                            time.perf_counter() - started)

    def _check_width(self, item, name) -> None:
        if self.feature_size is not None and item.features.shape[1] != self.feature_size:
            raise PredictError(f"{name}: region features are {item.features.shape[1]}-d, the checkpoint expects "
                               f"{self.feature_size} (v_feature_size): use the features it was trained on")
