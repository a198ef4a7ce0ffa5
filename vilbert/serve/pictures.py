"""The pictures a page may ask about: the gallery (files the server was started with, offered by
id) and uploads (bytes the browser sent, kept by id), and how each becomes regions.

The browser only ever names a picture by an id this module handed out ("g3", or an upload's
"u" + sha256); no path from a request is read. An upload is checked before it is decoded: its
size in bytes (UploadTooLarge) and, from the image header alone, its size in pixels (a
decompression bomb is refused before any pixel is decoded).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from vilbert.predict import FeatureOptions, PictureFeatures, PredictError

DEFAULT_MAX_UPLOAD_BYTES = 10 << 20  # 10 MiB: a phone photo fits, a video does not
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP; PIL's own bomb warning starts at about 89 MP
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".bmp": "image/bmp", ".webp": "image/webp"}


class PictureError(PredictError):
    """A picture the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_picture(data: bytes, max_pixels: int, name: str = "the upload") -> tuple:
    """(width, height) of an image file's bytes, checked: PictureError (413) over `max_pixels`,
    read from the header before any pixel is decoded; PictureError (400) when PIL cannot decode it."""
    from PIL import Image

    with warnings.catch_warnings():
        # PIL warns above its own MAX_IMAGE_PIXELS and raises above twice that; our limit is checked
        # first from the header size, so both only mean "too large" here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise PictureError(f"{name}: {width} x {height} = {width * height:,} pixels, over the limit of "
                                       f"{max_pixels:,} (--max-pixels)", 413)
                image.load()  # a truncated or corrupt file fails here, not in the extractor
        except PictureError:
            raise
        except Image.DecompressionBombError as exc:
            raise PictureError(f"{name}: refused before decoding as a decompression bomb ({exc}); the limit is "
                               f"{max_pixels:,} pixels (--max-pixels)", 413) from None
        except Exception as exc:  # PIL raises many kinds for a bad file: all are one line
            raise PictureError(f"{name}: not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    return width, height


def upload_image_id(filename: Optional[str]) -> Optional[str]:
    """The image id of an upload: its file name's stem (the key of a `--boxes gt` boxes file, as
    for `python -m vilbert.predict --images`), kept to letters, digits, '.', '_' and '-'. Never a path."""
    if not filename:
        return None
    stem = re.sub(r"[^A-Za-z0-9._-]", "", Path(filename.replace("\\", "/")).name)
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return stem.strip(".")[:64] or None


@dataclass
class Picture:
    """One picture the page may ask about."""

    id: str  # what the browser names it by
    name: str  # shown on the page
    image_id: str  # the extractor's key (file stem)
    width: int
    height: int
    data: bytes = b""  # an upload's bytes (a gallery picture is read from its file)
    path: Optional[Path] = None  # a gallery picture's file


class Gallery:
    """The pictures of the given folders (sorted by name, at most `per_folder` each), offered by id."""

    def __init__(self, folders=(), per_folder: int = 24, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.pictures: "OrderedDict[str, Picture]" = OrderedDict()
        for folder in folders:
            folder = Path(folder)
            if not folder.is_dir():
                raise PredictError(f"--gallery {folder}: not a directory")
            files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in MEDIA_TYPES and p.is_file()]
            for path in files[:per_folder]:
                width, height = check_picture(path.read_bytes(), max_pixels, str(path))
                picture_id = f"g{len(self.pictures)}"
                self.pictures[picture_id] = Picture(picture_id, path.name, path.stem, width, height, path=path)

    def listing(self) -> list:
        """The pictures as the page lists them (id, name, size, the URL of the file)."""
        return [{"id": p.id, "name": p.name, "width": p.width, "height": p.height, "url": f"/gallery/{p.id}"}
                for p in self.pictures.values()]


class Uploads:
    """Uploaded pictures by id ("u" + sha256 of the bytes), the latest `keep` of them; safe to
    use from several threads (a picture is checked outside the lock)."""

    def __init__(self, keep: int = 32):
        self.keep = keep
        self._pictures: "OrderedDict[str, Picture]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, filename: Optional[str], max_pixels: int) -> Picture:
        """Check an upload (check_picture) and keep it; its file name only gives its image id."""
        width, height = check_picture(data, max_pixels)
        digest = hashlib.sha256(data).hexdigest()
        image_id = upload_image_id(filename) or digest[:16]
        picture = Picture("u" + digest[:32], filename and Path(filename).name[:80] or "upload", image_id,
                          width, height, data=data)
        with self._lock:
            self._pictures[picture.id] = picture
            self._pictures.move_to_end(picture.id)
            while len(self._pictures) > self.keep:
                self._pictures.popitem(last=False)
        return picture

    def get(self, picture_id: str) -> Optional[Picture]:
        """The upload of that id, or None (never uploaded, or no longer kept)."""
        with self._lock:
            return self._pictures.get(picture_id)


class RegionSource:
    """Pictures -> regions, shared by every checkpoint of the server, with the feature cache of
    vilbert.predict (keyed by file content and extractor settings).

    With `--boxes gt`, a picture whose image id is not in the boxes file (an upload of one's own)
    gets the regions of a grid of boxes instead, from the same backbone, and says so (`boxes`)."""

    def __init__(self, options: FeatureOptions, cache_dir, device, feature_size: int):
        self.options = options
        self.features = PictureFeatures(options, cache_dir, device, feature_size)
        self.known_ids = None
        self.grid = None
        if options.boxes == "gt":
            from vilbert.features.extract import load_boxes_file

            try:
                self.known_ids = set(load_boxes_file(options.boxes_file)) if options.boxes_file else set()
            except (FileNotFoundError, ValueError) as exc:
                raise PredictError(str(exc)) from None
            self.grid = PictureFeatures(replace(options, boxes="grid", boxes_file=None), cache_dir, device, feature_size)

    def regions(self, picture: Picture):
        """(ImageRegions, how the boxes were found)."""
        data = picture.data or picture.path.read_bytes()
        if self.known_ids is not None and picture.image_id not in self.known_ids:
            return (self.grid.regions(data, picture.image_id),
                    f"a {self.options.grid} x {self.options.grid} grid (not in the boxes file)")
        return self.features.regions(data, picture.image_id), describe_boxes(self.options)


def describe_boxes(options: FeatureOptions) -> str:
    """Where the extractor's boxes come from, in words, for the page."""
    if options.boxes == "gt":
        return f"the boxes file {Path(options.boxes_file).name}"
    if options.boxes == "grid":
        return f"a {options.grid} x {options.grid} grid"
    return f"the detector {Path(options.detector).name}"
