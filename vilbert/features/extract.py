"""Extract region features from a folder of images into a feature store.

    python -m vilbert.features extract --images DIR --output STORE \
        --boxes gt|grid|detector [--boxes-file boxes.json] [--detector CKPT] [--grid 6] \
        --backbone resnet50|resnet101|pixels [--weights FILE | --random-weights] [--batch-size 8]
    python -m vilbert.features extract --images DIR --output STORE --boxes detector|gt \
        --detector detectron_model.pth --detector-config detectron_config.yaml

The image id is the file stem (`123.jpg` -> "123"). Boxes come from a JSON file
(`{"<image id>": {"boxes": [[x1, y1, x2, y2], ...], "cls_prob": [[...], ...]}}`, `cls_prob` optional
and written to the store as given), from a fixed N x N grid, or from a torchvision Faster R-CNN
checkpoint (vilbert/features/detector.py). Backbones are in vilbert/features/backbones.py.

With `--detector-config`, `--detector` is a maskrcnn-benchmark checkpoint (12-in-1's
`detectron_model.pth` + `detectron_config.yaml`) and that detector gives the features too: its
boxes with 12-in-1's selection (`--boxes detector`), or the given boxes through its box head
(`--boxes gt|grid`), with its full class distribution as `cls_prob` (vilbert/features/vmb.py).
RegionExtractor is the one path from pixels to regions, here and in vilbert.predict.

Under `torchrun` (WORLD_SIZE > 1) rank r takes every WORLD_SIZE-th image of the sorted list and
writes `OUTPUT/part-<r>-of-<WORLD_SIZE>.lmdb`; a single process writes OUTPUT itself. Either way
`FeatureReader(OUTPUT)` reads the result as one store. Images already in any store under OUTPUT are
skipped, so an interrupted run is resumed by running the same command again. Images that cannot be
decoded are skipped and listed at the end.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np

from vilbert.features.store import FeatureStoreError, FeatureWriter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class ExtractionResult:
    """What one process did."""

    output: Path  # the store this process wrote
    written: int = 0  # images extracted in this run
    already_done: int = 0  # images skipped because a store under OUTPUT has them
    failed: list = field(default_factory=list)  # (file, reason) of images that could not be decoded
    without_boxes: list = field(default_factory=list)  # image ids with no entry in the boxes file
    without_regions: list = field(default_factory=list)  # image ids in which the detector found no region


def list_images(images_dir) -> dict[str, Path]:
    """Image id (file stem) -> file, for the image files directly inside `images_dir`."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images {images_dir}: not a directory")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            if path.stem in images:
                raise ValueError(f"--images {images_dir}: two files have the image id {path.stem!r}: "
                                 f"{images[path.stem].name} and {path.name}")
            images[path.stem] = path
    return images


def load_boxes_file(path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Read boxes.json -> {image id: ((n, 4) float32 boxes, (n, C) float32 cls_prob or None)}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--boxes-file {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--boxes-file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--boxes-file {path}: expected an object {{image id: {{\"boxes\": [...]}}}}")
    out = {}
    for image_id, entry in data.items():
        where = f"--boxes-file {path}, image {image_id}"
        if not isinstance(entry, dict) or "boxes" not in entry:
            raise ValueError(f"{where}: expected an object with a \"boxes\" field")
        try:
            boxes = np.asarray(entry["boxes"], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: \"boxes\" must be a list of [x1, y1, x2, y2]") from None
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
            raise ValueError(f"{where}: \"boxes\" must be a non-empty list of [x1, y1, x2, y2], got shape {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"{where}: \"boxes\" contain NaN or inf")
        bad = np.flatnonzero(~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])))
        if len(bad):
            raise ValueError(f"{where}: box {int(bad[0])} {boxes[bad[0]].tolist()} has x2 <= x1 or y2 <= y1")
        cls_prob = entry.get("cls_prob")
        if cls_prob is not None:
            try:
                cls_prob = np.asarray(cls_prob, dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: \"cls_prob\" must be a list of equal-length lists") from None
            if cls_prob.ndim != 2 or cls_prob.shape[0] != len(boxes):
                raise ValueError(f"{where}: \"cls_prob\" must have one row per box ({len(boxes)}), got shape {cls_prob.shape}")
            if not np.isfinite(cls_prob).all():
                raise ValueError(f"{where}: \"cls_prob\" contains NaN or inf")
        out[str(image_id)] = (boxes, cls_prob)
    return out


def grid_boxes(image_h: int, image_w: int, n: int) -> np.ndarray:
    """An n x n grid of boxes covering the image, row by row: (n*n, 4) float32 pixels."""
    xs = np.linspace(0, image_w, n + 1, dtype=np.float32)
    ys = np.linspace(0, image_h, n + 1, dtype=np.float32)
    x1, y1 = np.meshgrid(xs[:-1], ys[:-1])
    x2, y2 = np.meshgrid(xs[1:], ys[1:])
    return np.stack([x1, y1, x2, y2], axis=-1).reshape(-1, 4)


class _ImageFiles:
    """A map-style dataset of decoded images; a file that fails to decode yields its error instead."""

    def __init__(self, files: list[tuple[str, Path]]):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        image_id, path = self.files[index]
        try:
            with Image.open(path) as image:
                return image_id, path, np.array(image.convert("RGB")), None
        except Exception as exc:  # any undecodable file is reported, never fatal
            return image_id, path, None, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    return batch


def distributed_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return rank, world, local_rank


def _done_ids(output: Path, world: int, own: Path) -> set[str]:
    """Ids already in any store under OUTPUT (a store, a folder of shards, or both)."""
    from vilbert.features.reader import find_stores
    from vilbert.features.store import environment

    if not output.exists():
        return set()
    try:
        stores = find_stores(output)
    except FeatureStoreError:
        return set()
    done = set()
    for store in stores:
        try:
            env = environment(store)
        except lmdb.Error:
            # Another rank of this very run may be creating its shard right now: it holds none of
            # our images (the split is by rank), so it can be ignored.
            if store != own and re.fullmatch(rf"part-\d+-of-{world}\.lmdb", store.name):
                continue
            raise
        with env.begin() as txn:
            done.update(bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False))
    return done


def add_extractor_arguments(group, boxes_required: bool = True) -> None:
    """The command-line options of RegionExtractor, for `python -m vilbert.features extract` and
    `python -m vilbert.predict --images`: one list, so both commands take the same flags. With
    boxes_required False, --boxes defaults to None (the caller picks: vilbert.predict's FeatureOptions)."""
    group.add_argument("--boxes", choices=["gt", "grid", "detector"], required=boxes_required, default=None,
                       help=None if boxes_required else "default: detector with --detector, else grid")
    group.add_argument("--boxes-file", help="boxes.json for --boxes gt, keyed by image id (the file stem); boxes "
                       "are x1, y1, x2, y2 in pixels")
    group.add_argument("--grid", type=int, default=6, help="N for an N x N grid of boxes (--boxes grid)")
    group.add_argument("--detector", help="torchvision Faster R-CNN state dict (--boxes detector); with "
                       "--detector-config a maskrcnn-benchmark checkpoint (12-in-1's detectron_model.pth)")
    group.add_argument("--detector-arch", default="fasterrcnn_resnet50_fpn",
                       help="torchvision builder the --detector checkpoint belongs to")
    group.add_argument("--detector-config", help="the maskrcnn-benchmark YAML of --detector (12-in-1's "
                       "detectron_config.yaml): that detector then gives the features too, of its own boxes "
                       "(--boxes detector, 12-in-1's selection) or of given ones (--boxes gt|grid); no --backbone")
    group.add_argument("--min-boxes", type=int, default=10, help="detector: keep at least this many boxes")
    group.add_argument("--max-boxes", "--num-features", dest="max_boxes", type=int, default=None,
                       help="detector: keep at most this many boxes (default 36; 100 with --detector-config, "
                       "as 12-in-1)")
    group.add_argument("--min-score", "--confidence-threshold", dest="min_score", type=float, default=None,
                       help="detector: score threshold (default 0.2; 0 with --detector-config, as 12-in-1)")
    group.add_argument("--backbone", choices=["resnet50", "resnet101", "pixels"], default=None,
                       help="feature backbone (default resnet101; none with --detector-config)")
    group.add_argument("--weights", help="local ResNet state dict for the backbone")
    group.add_argument("--random-weights", action="store_true", help="random ResNet weights (tests only)")
    group.add_argument("--image-size", type=int, default=600, help="ResNet input: shorter side in pixels")
    group.add_argument("--max-size", type=int, default=1000, help="ResNet input: longest side at most")


def extractor_backbone(args) -> str:
    """--backbone of add_extractor_arguments' flags, its default filled in; ValueError when it is
    given with --detector-config (whose detector gives the features itself)."""
    if args.detector_config is not None and args.backbone is not None:
        raise ValueError("--backbone does not apply with --detector-config: the features are the detector's own "
                         "(its box head's fc6)")
    return args.backbone or "resnet101"


class RegionExtractor:
    """Pictures -> regions: the one path from pixels to (boxes, features, cls_prob), for
    `python -m vilbert.features extract` over a folder and for vilbert.predict over single pictures,
    so that both give the same numbers for the same picture and options.

    Boxes come from the boxes file (`boxes="gt"`, looked up by image id), an N x N grid, or a
    detector; then one feature per box from `backbone`. With `detector_config`, `detector` is
    12-in-1's maskrcnn-benchmark detector (vilbert/features/vmb.py), which gives the features too:
    of its own boxes with 12-in-1's selection (`boxes="detector"`), or of the given ones through its
    box head, its full class distribution as cls_prob either way (`backbone` is then unused).
    max_boxes / min_score default to 36 / 0.2 for a torchvision detector and to 12-in-1's 100 / 0
    with `detector_config`.

    `dim`: the feature width; `notes`: what was read but is not used (for the caller to show);
    `boxes_table`: the boxes file ({image id: (boxes, cls_prob or None)}) with `boxes="gt"`.
    """

    def __init__(self, boxes: str = "gt", boxes_file=None, backbone: str = "pixels", grid: int = 6, detector=None,
                 detector_arch: str = "fasterrcnn_resnet50_fpn", detector_config=None, min_boxes: int = 10,
                 max_boxes: int | None = None, min_score: float | None = None, weights=None,
                 random_weights: bool = False, device=None, image_size: int = 600, max_size: int = 1000):
        if boxes not in ("gt", "grid", "detector"):
            raise ValueError(f"--boxes must be gt, grid or detector, not {boxes!r}")
        if boxes == "gt" and boxes_file is None:
            raise ValueError("--boxes gt needs --boxes-file boxes.json")
        if detector_config is not None and detector is None:
            raise ValueError("--detector-config needs --detector CKPT (the maskrcnn-benchmark checkpoint, "
                             "e.g. 12-in-1's detectron_model.pth)")
        if boxes == "detector" and detector is None:
            raise ValueError("--boxes detector needs --detector CKPT (a torchvision Faster R-CNN state dict)")
        if boxes == "grid" and grid < 1:
            raise ValueError(f"--grid must be at least 1, got {grid}")
        vmb = detector_config is not None
        self.boxes, self.boxes_file, self.grid = boxes, boxes_file, grid
        self.max_boxes = (100 if vmb else 36) if max_boxes is None else max_boxes
        self.min_score = (0.0 if vmb else 0.2) if min_score is None else min_score
        self.boxes_table = load_boxes_file(boxes_file) if boxes == "gt" else None
        self.notes: list[str] = []
        self.vmb = self.backbone = self.detector = None
        if vmb:
            from vilbert.features.vmb import VmbExtractor

            self.vmb = VmbExtractor(detector, detector_config, device=device, num_features=self.max_boxes,
                                    min_boxes=min_boxes, confidence_threshold=self.min_score)
            self.dim = self.vmb.dim
            self.notes += self.vmb.notes
            if self.boxes_table is not None and any(cls is not None for _, cls in self.boxes_table.values()):
                self.notes.append("the boxes file's cls_prob is replaced by the detector's class distribution")
            return
        from vilbert.features.backbones import build_backbone

        self.backbone = build_backbone(backbone, weights=weights, random_weights=random_weights, device=device,
                                       image_size=image_size, max_size=max_size)
        self.dim = self.backbone.dim
        if boxes == "detector":
            from vilbert.features.detector import Detector

            self.detector = Detector(detector, arch=detector_arch, device=device, min_boxes=min_boxes,
                                     max_boxes=self.max_boxes, min_score=self.min_score)

    def __call__(self, images: list[np.ndarray], image_ids: list[str]) -> list[tuple]:
        """HxWx3 uint8 RGB pictures and their ids -> one (boxes (n, 4) pixels, features (n, dim),
        cls_prob (n, C) or None) each; n may be 0 (a detector that finds nothing)."""
        given = []  # (boxes, cls_prob) per picture; None boxes: 12-in-1's detector finds them
        for image, image_id in zip(images, image_ids):
            if self.boxes == "gt":
                if image_id not in self.boxes_table:
                    raise ValueError(f"image id {image_id!r} has no entry in --boxes-file {self.boxes_file}")
                given.append(self.boxes_table[image_id])
            elif self.boxes == "grid":
                given.append((grid_boxes(image.shape[0], image.shape[1], self.grid), None))
            elif self.vmb is not None:
                given.append((None, None))
            else:
                given.append(self.detector(image))
        if self.vmb is not None:
            regions = self.vmb(images, None if self.boxes == "detector" else [b for b, _ in given])
            return [(r.boxes, r.features, r.cls_prob) for r in regions]
        features = self.backbone(images, [b for b, _ in given])
        return [(b, f, cls_prob) for (b, cls_prob), f in zip(given, features)]


def run_extraction(
    images_dir,
    output,
    boxes: str = "gt",
    boxes_file=None,
    backbone: str = "pixels",
    grid: int = 6,
    detector=None,
    detector_arch: str = "fasterrcnn_resnet50_fpn",
    detector_config=None,
    min_boxes: int = 10,
    max_boxes: int | None = None,
    min_score: float | None = None,
    weights=None,
    random_weights: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    device=None,
    feature_dtype: str = "float16",
    image_size: int = 600,
    max_size: int = 1000,
    progress: bool = True,
) -> ExtractionResult:
    """Extract features for every image of `images_dir` not yet in `output` (see module docstring);
    the options are RegionExtractor's."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    rank, world, local_rank = distributed_rank()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    output = Path(output)
    own_store = (output if world == 1 else output / f"part-{rank}-of-{world}.lmdb").resolve()

    images = list_images(images_dir)
    extractor = RegionExtractor(boxes=boxes, boxes_file=boxes_file, backbone=backbone, grid=grid, detector=detector,
                                detector_arch=detector_arch, detector_config=detector_config, min_boxes=min_boxes,
                                max_boxes=max_boxes, min_score=min_score, weights=weights,
                                random_weights=random_weights, device=device, image_size=image_size,
                                max_size=max_size)
    if rank == 0:
        for note in extractor.notes:
            print(f"note: {note}", file=sys.stderr)
    result = ExtractionResult(output=own_store)
    if extractor.boxes_table is not None:
        result.without_boxes = sorted(i for i in images if i not in extractor.boxes_table)
        images = {i: p for i, p in images.items() if i in extractor.boxes_table}
    mine = sorted(images)[rank::world]
    done = _done_ids(output, world, own_store)
    todo = [(i, images[i]) for i in mine if i not in done]
    result.already_done = len(mine) - len(todo)

    loader = DataLoader(_ImageFiles(todo), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    bar = tqdm(total=len(todo), desc=f"extract rank {rank}" if world > 1 else "extract", disable=not progress,
               unit="img", dynamic_ncols=True)
    with FeatureWriter(own_store, feature_dtype=feature_dtype) as writer:
        for batch in loader:
            ids, arrays = [], []
            for image_id, path, array, error in batch:
                if error is not None:
                    result.failed.append((str(path), error))
                    continue
                ids.append(image_id)
                arrays.append(array)
            if ids:
                for image_id, array, (image_boxes, feats, cls_prob) in zip(ids, arrays, extractor(arrays, ids)):
                    if len(image_boxes) == 0:
                        result.without_regions.append(image_id)
                        continue
                    writer.put(image_id, image_h=array.shape[0], image_w=array.shape[1], boxes=image_boxes,
                               features=feats, cls_prob=cls_prob)
                    result.written += 1
                # Commit every batch: an interrupted job loses at most the batch in flight.
                writer.commit()
            bar.update(len(batch))
    bar.close()
    report_problems(result)
    return result


def report_problems(result: ExtractionResult, stream=None) -> None:
    """Print the images skipped for being undecodable, having no boxes or no regions (to stderr)."""
    stream = stream or sys.stderr
    if result.failed:
        print(f"skipped {len(result.failed)} image(s) that could not be decoded:", file=stream)
        for path, reason in result.failed:
            print(f"  {path}: {reason}", file=stream)
    for ids, why in ((result.without_boxes, "with no entry in the boxes file"),
                     (result.without_regions, "in which the detector found no region")):
        if ids:
            shown = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
            print(f"skipped {len(ids)} image(s) {why}: {shown}", file=stream)
