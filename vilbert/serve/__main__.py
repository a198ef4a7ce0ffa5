"""`python -m vilbert.serve`: the command line of vilbert.serve (see its docstring)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from vilbert.features.extract import add_extractor_arguments
from vilbert.predict import MODES, PredictError
from vilbert.predict.__main__ import feature_options
from vilbert.predict.features import default_cache_dir
from vilbert.serve import __doc__ as PACKAGE_DOC
from vilbert.serve.app import Limits
from vilbert.serve.pictures import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

SCRIPT = "python -m vilbert.serve"
# What `make demo` leaves under its --output: the task each mode is answered by, and where train_tasks.py kept
# the weights that scored best on it (runs/<tasks>_demo/best/<task>).
DEMO_TASKS = {"question": "VQA", "expression": "refcoco+", "caption": "RetrievalFlickr30k"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=SCRIPT, description=PACKAGE_DOC.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="the checkpoint of every mode: our directory, or a released .bin/.tar")
    for mode in MODES:
        p.add_argument(f"--{mode}-checkpoint", help=f"the checkpoint of the {mode} mode (default --checkpoint)")
    p.add_argument("--demo", metavar="RESULTS", help="serve the finetuned models of `make demo` (its --output, "
                   "e.g. results/demo) on the demo world of --data, with that world's extractor settings")
    p.add_argument("--data", default="data/demo", help="with --demo: the demo world (default data/demo)")
    p.add_argument("--config_file", "--config-file", help="model config of a released checkpoint")
    p.add_argument("--bert_model", "--bert-model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    p.add_argument("--answers", help="VQA answer vocabulary: label2ans JSON list, or the originals' .pkl")
    p.add_argument("--tasks_config", help="a task file whose VQA task's dataroot/cache holds the vocabulary")
    p.add_argument("--gallery", action="append", default=[], help="a folder of pictures the page offers (repeatable)")
    p.add_argument("--gallery-size", type=int, default=24, help="pictures offered per --gallery folder")
    p.add_argument("--top-k", type=int, default=5, help="answers or regions listed")

    x = p.add_argument_group("feature extraction: as python -m vilbert.features extract")
    add_extractor_arguments(x, boxes_required=False)
    x.add_argument("--cache", default=None, help=f"feature cache folder (default {default_cache_dir()})")
    x.add_argument("--no-cache", action="store_true", help="keep features in memory only")

    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / (1 << 20),
                   help="largest upload accepted, MiB")
    s.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest picture accepted, width x height (checked before decoding)")
    s.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    s.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None)
    return p


def demo_arguments(args) -> None:
    """Fill in what --demo stands for: each mode's best checkpoint of the demo run, the offline
    BERT, the world's task file (VQA vocabulary), its VQA pictures and their extractor settings."""
    from vilbert.offline import minilm_path

    runs, data = Path(args.demo) / "runs", Path(args.data)
    for mode, task in DEMO_TASKS.items():
        found = sorted(runs.glob(f"*_demo/best/{task}/config.json"))
        if not found:
            raise PredictError(f"--demo {args.demo}: no {runs}/*_demo/best/{task} checkpoint; run `make demo` first")
        setattr(args, f"{mode}_checkpoint", getattr(args, f"{mode}_checkpoint") or str(found[0].parent))
    world = data / "vqa"
    if not (world / "boxes.json").is_file():
        raise PredictError(f"--data {data}: no demo world there ({world / 'boxes.json'} is missing); run `make demo` first")
    args.bert_model = str(minilm_path()) if args.bert_model == "bert-base-uncased" else args.bert_model
    args.tasks_config = args.tasks_config or str(data / "vlbert_tasks.yml")
    args.backbone, args.boxes, args.boxes_file = args.backbone or "pixels", args.boxes or "gt", args.boxes_file or str(world / "boxes.json")
    args.gallery = args.gallery or [str(world / "images")]


def build_service(args):
    from vilbert.serve.app import Service

    if args.demo:
        demo_arguments(args)
    checkpoints = {mode: getattr(args, f"{mode}_checkpoint") or args.checkpoint for mode in MODES}
    checkpoints = {mode: path for mode, path in checkpoints.items() if path}
    if not checkpoints:
        raise PredictError("give --checkpoint (or --question-checkpoint etc., or --demo RESULTS)")
    features = feature_options(args)
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_pixels=args.max_pixels)
    return Service(checkpoints, bert_model=args.bert_model, config_file=args.config_file, device=args.device,
                   precision=args.precision, features=features,
                   cache_dir=None if args.no_cache else (args.cache or default_cache_dir()), answers=args.answers,
                   tasks_config=args.tasks_config, gallery=args.gallery, gallery_size=args.gallery_size,
                   limits=limits, top_k=args.top_k)


def main(argv=None) -> int:
    from vilbert.training.cli import fail

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import uvicorn

        from vilbert.serve.app import create_app
    except ImportError as exc:
        return fail(SCRIPT, f"{exc.name} is not installed: pip install -e '.[serve]' (or -r requirements-serve.txt)")
    try:
        service = build_service(args)
    except PredictError as exc:
        return fail(SCRIPT, str(exc))
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        logging.warning("listening on %s: anyone who can reach this machine can use the page (there is no login)",
                        args.host)
    for mode, predictor in service.predictors.items():
        logging.info("%s: %s", mode, predictor.checkpoint.path)
    logging.info("open http://%s:%d/", args.host if loopback else "127.0.0.1", args.port)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
