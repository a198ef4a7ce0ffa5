"""The web application: one Service (the checkpoints, loaded once, and the pictures) behind a few
Starlette routes and one HTML page.

    GET  /                 the page (vilbert/serve/page.html)
    GET  /api/info         each mode's checkpoint and heads, the gallery, the limits
    GET  /gallery/{id}     a gallery picture's file (by the id /api/info lists; never a path)
    POST /api/pictures     an upload: the image file's bytes as the body (?name=file name); its id
    POST /api/ask          JSON {mode, picture, text | captions, scorer?}: the answer, with the
                           co-attention maps, which checkpoint and head answered, and the seconds

Every answer goes through vilbert.predict's Predictor (the command line's code path). Errors are
JSON {"error": one line} with a 4xx status (a 500 for a fault of ours, logged); a request never
takes the server down. The model runs in a worker thread, one request at a time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vilbert.predict import MODES, FeatureOptions, Predictor, PredictError, describe_checkpoint, to_jsonable
from vilbert.serve.pictures import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, MEDIA_TYPES, Gallery, PictureError,
                                    RegionSource, Uploads)

PAGE = Path(__file__).with_name("page.html")

logger = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one request may send."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_text_chars: int = 300  # a question, an expression or one caption
    max_captions: int = 10
    max_json_bytes: int = 64 << 10


class Service:
    """The checkpoints (one Predictor per distinct path; `checkpoints` maps each mode to its
    path) and the pictures; what the routes call. Errors are PredictError (PictureError for a
    refused picture), one line each."""

    def __init__(self, checkpoints: dict, *, bert_model: str = "bert-base-uncased", config_file=None, device=None,
                 precision: Optional[str] = None, features: Optional[FeatureOptions] = None, cache_dir=None,
                 answers=None, tasks_config=None, gallery=(), gallery_size: int = 24,
                 limits: Optional[Limits] = None, top_k: int = 5):
        unknown = set(checkpoints) - set(MODES)
        if unknown or not checkpoints:
            raise PredictError(f"checkpoints are given per mode ({', '.join(MODES)}), got {sorted(unknown) or 'none'}")
        self.limits = limits or Limits()
        self.top_k = top_k
        loaded: dict = {}
        self.predictors: dict = {}
        for mode, path in checkpoints.items():
            key = str(path)
            if key not in loaded:
                loaded[key] = Predictor(path, bert_model=bert_model, config_file=config_file, device=device,
                                        precision=precision, features=features, cache_dir=cache_dir,
                                        answers=answers, tasks_config=tasks_config)
            self.predictors[mode] = loaded[key]
        widths = {p.config.v_feature_size for p in loaded.values()}
        if len(widths) > 1:
            raise PredictError(f"the checkpoints expect region features of different widths ({sorted(widths)}); "
                               "serve checkpoints trained on the same features together")
        first = next(iter(loaded.values()))
        self.regions = RegionSource(features or FeatureOptions(), cache_dir, first.device, widths.pop())
        self.gallery = Gallery(gallery, gallery_size, self.limits.max_pixels)
        self.uploads = Uploads()
        self._lock = threading.Lock()  # a Predictor's caches are not made for two threads at once

    def info(self) -> dict:
        """What the page shows before any question: each mode's checkpoint and whether it can
        answer (and why not), the gallery, the limits."""
        modes = {}
        for mode, predictor in self.predictors.items():
            checkpoint = predictor.checkpoint
            with self._lock:  # the answer vocabulary is read on first use
                reason = unavailable(predictor, mode)
            modes[mode] = {"checkpoint": checkpoint.path, "description": describe_checkpoint(checkpoint),
                           "heads": checkpoint.heads, "trained_for": checkpoint.trained_for,
                           "available": reason is None, "reason": reason}
        return {"modes": modes, "gallery": self.gallery.listing(),
                "limits": {"max_upload_bytes": self.limits.max_upload_bytes, "max_pixels": self.limits.max_pixels,
                           "max_text_chars": self.limits.max_text_chars, "max_captions": self.limits.max_captions}}

    def picture(self, picture_id):
        """The gallery picture or upload of an id the page sent (never a path)."""
        if not isinstance(picture_id, str):
            raise PredictError("give \"picture\": the id of a gallery picture or of an upload")
        picture = self.gallery.pictures.get(picture_id) or self.uploads.get(picture_id)
        if picture is None:
            raise PictureError(f"no picture {picture_id!r} here (an upload is kept for the latest "
                               f"{self.uploads.keep} pictures): upload it again", 404)
        return picture

    def upload(self, data: bytes, filename: Optional[str]) -> dict:
        """Keep an uploaded image file's bytes (checked: check_picture); its id, name and size."""
        if not data:
            raise PictureError("the upload is empty: send the image file's bytes as the request body")
        picture = self.uploads.add(data, filename, self.limits.max_pixels)
        return {"id": picture.id, "name": picture.name, "width": picture.width, "height": picture.height}

    def ask(self, request: dict) -> dict:
        """One question, expression or set of captions about one picture -> the JSON answer."""
        started = time.perf_counter()
        if not isinstance(request, dict):
            raise PredictError("the request body must be a JSON object")
        mode = request.get("mode")
        if mode not in MODES:
            raise PredictError(f"\"mode\" must be one of {', '.join(MODES)}, got {mode!r}")
        if mode not in self.predictors:
            raise PredictError(f"no checkpoint serves the {mode} mode here (start the server with --{mode}-checkpoint "
                               "or --checkpoint)")
        texts = self._texts(mode, request)
        picture = self.picture(request.get("picture"))
        scorer = request.get("scorer", "auto")
        predictor = self.predictors[mode]
        with self._lock:
            regions, boxes = self.regions.regions(picture)
            if mode == "caption":
                result = predictor.align(texts, regions, scorer=scorer, attention=True)
            else:
                result = predictor.predict(mode, texts[0], regions, top_k=self.top_k, attention=True)
        out = to_jsonable(result)
        out["image"].update(id=picture.id, name=picture.name, boxes=boxes)
        out["source"]["trained_for"] = predictor.checkpoint.trained_for
        out["source"]["seconds"]["request"] = round(time.perf_counter() - started, 4)
        return {"mode": mode, **out}

    def _texts(self, mode: str, request: dict) -> list:
        limit = self.limits.max_text_chars
        if mode == "caption":
            texts = request.get("captions")
            if not isinstance(texts, list) or not texts:
                raise PredictError("\"captions\" must be a list of one or more captions")
            if len(texts) > self.limits.max_captions:
                raise PredictError(f"{len(texts)} captions, at most {self.limits.max_captions} at a time")
        else:
            texts = [request.get("text")]
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise PredictError(f"give the {mode} as a non-empty \"{'captions' if mode == 'caption' else 'text'}\"")
            if len(text) > limit:
                raise PredictError(f"a {mode} of {len(text)} characters, at most {limit}")
        return [text.strip() for text in texts]


def unavailable(predictor: Predictor, mode: str) -> Optional[str]:
    """Why `predictor` cannot answer in `mode` (its checkpoint lacks the head, or the answer
    vocabulary is missing), or None: the checks the Predictor itself makes before answering."""
    try:
        predictor.check(mode)
    except PredictError as exc:
        return str(exc)
    return None


async def read_body(request, limit: int, what: str) -> bytes:
    """The request body, refused (PictureError 413) past `limit` bytes: by its Content-Length
    when it gives one, else while it streams in, so an oversized body is never held whole."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PictureError(f"{what} of {int(length):,} bytes, over the limit of {limit:,}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PictureError(f"{what} over the limit of {limit:,} bytes", 413)
    return bytes(body)


def create_app(service: Service):
    """The Starlette application over `service`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Route

    def answer(handler):
        """A route that answers JSON, and every failure as {"error": one line}."""
        async def endpoint(request):
            try:
                return JSONResponse(await handler(request))
            except PredictError as exc:
                return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))
            except Exception as exc:  # a fault of ours: logged in full, one line to the page
                logger.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc})"}, status_code=500)
        return endpoint

    async def page(request):
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    async def info(request):
        return await run_in_threadpool(service.info)

    async def gallery_picture(request):
        picture = service.gallery.pictures.get(request.path_params["picture_id"])
        if picture is None:
            return JSONResponse({"error": "no such gallery picture"}, status_code=404)
        return FileResponse(picture.path, media_type=MEDIA_TYPES[picture.path.suffix.lower()])

    async def upload(request):
        limit = service.limits.max_upload_bytes
        data = await read_body(request, limit, "an upload")
        return await run_in_threadpool(service.upload, data, request.query_params.get("name"))

    async def ask(request):
        body = await read_body(request, service.limits.max_json_bytes, "a request")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PredictError(f"the request body is not JSON ({exc})") from None
        return await run_in_threadpool(service.ask, payload)

    routes = [Route("/", page), Route("/api/info", answer(info)), Route("/gallery/{picture_id}", gallery_picture),
              Route("/api/pictures", answer(upload), methods=["POST"]), Route("/api/ask", answer(ask), methods=["POST"])]
    app = Starlette(routes=routes)
    app.state.service = service
    return app
