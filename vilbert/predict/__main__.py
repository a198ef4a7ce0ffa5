"""`python -m vilbert.predict`: the command line of vilbert.predict (see its docstring)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vilbert.features.extract import add_extractor_arguments, extractor_backbone
from vilbert.predict import __doc__ as PACKAGE_DOC
from vilbert.predict.checkpoint import DEFAULT_ORIGINAL_CONFIG
from vilbert.predict.errors import PredictError
from vilbert.predict.features import FeatureOptions, default_cache_dir
from vilbert.predict.predictor import DEFAULT_MAX_REGIONS, Predictor
from vilbert.predict.results import describe_checkpoint, draw_results, format_results, to_jsonable

SCRIPT = "python -m vilbert.predict"

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=SCRIPT, description=PACKAGE_DOC.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "--from_pretrained", required=True,
                   help="our checkpoint directory, or a released .bin/.tar of vilbert_beta or vilbert-multi-task")
    p.add_argument("--config_file", "--config-file", help="model config of a released checkpoint "
                   f"(default {DEFAULT_ORIGINAL_CONFIG.parent.name}/{DEFAULT_ORIGINAL_CONFIG.name}); our directories carry theirs")
    p.add_argument("--bert_model", "--bert-model", default="bert-base-uncased", help="tokenizer: a BERT directory or hub name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", nargs="+", help="picture files (features are extracted and cached)")
    where.add_argument("--features", help="a feature store (or folder of shards) holding the pictures' regions")
    p.add_argument("--image-ids", nargs="+", help="with --features: the pictures' keys in the store")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--question", help="a question: the VQA head's answers")
    what.add_argument("--expression", help="a referring expression: the region it names (RefCOCO+ head)")
    what.add_argument("--caption", action="append", help="a caption (repeat for several): how well each fits")
    p.add_argument("--top-k", type=int, default=5, help="answers or regions to list")
    p.add_argument("--answers", help="VQA answer vocabulary: label2ans JSON list, or the originals' .pkl")
    p.add_argument("--tasks_config", help="a task file whose VQA task's dataroot/cache holds the vocabulary")
    p.add_argument("--scorer", choices=("auto", "retrieval", "alignment"), default="auto",
                   help="captions: retrieval head, zero-shot alignment head, or auto (retrieval when present)")
    p.add_argument("--task-token", type=int, help="12-in-1 task-token row (default: VQA 1, retrieval 8, RefCOCO+ 10)")
    p.add_argument("--max-regions", type=int, default=DEFAULT_MAX_REGIONS, help="regions per picture, the global one included")

    x = p.add_argument_group("feature extraction (--images): as python -m vilbert.features extract")
    add_extractor_arguments(x, boxes_required=False)
    x.add_argument("--float32", action="store_true", help="keep float32 features (default float16, as the store)")
    x.add_argument("--cache", default=None, help=f"feature cache folder (default {default_cache_dir()})")
    x.add_argument("--no-cache", action="store_true", help="keep features in memory only")

    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print JSON instead of tables")
    o.add_argument("--attention", action="store_true", help="with --json: include the co-attention maps")
    o.add_argument("--picture", help="PNG: the chosen box, or the co-attention of --word over the regions")
    o.add_argument("--word", default="[CLS]", help="the token (or its index) whose co-attention is drawn")
    o.add_argument("--layer", type=int, default=-1, help="co-attention block to draw (default the last)")
    o.add_argument("--head", type=int, default=None, help="attention head to draw (default the mean of all)")
    o.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    o.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None,
                   help="default: bf16 on a GPU that supports it, fp32 otherwise")
    return p


def feature_options(args, feature_dtype: str = "float16") -> FeatureOptions:
    """FeatureOptions from the flags of add_extractor_arguments (also vilbert.serve's)."""
    try:
        backbone = extractor_backbone(args)
    except ValueError as exc:
        raise PredictError(str(exc)) from None
    return FeatureOptions(
        backbone=backbone, weights=args.weights, random_weights=args.random_weights,
        boxes=args.boxes, boxes_file=args.boxes_file, grid=args.grid, detector=args.detector,
        detector_arch=args.detector_arch, detector_config=args.detector_config, min_boxes=args.min_boxes,
        max_boxes=args.max_boxes, min_score=args.min_score, image_size=args.image_size, max_size=args.max_size,
        feature_dtype=feature_dtype)


def run(args) -> int:
    mode = "question" if args.question else "expression" if args.expression else "caption"
    if args.features and not args.image_ids:
        raise PredictError("--features needs --image-ids")
    if args.image_ids and not args.features:
        raise PredictError("--image-ids goes with --features (with --images the id is the file stem)")
    extractor = feature_options(args, feature_dtype="float32" if args.float32 else "float16")
    predictor = Predictor(args.checkpoint, bert_model=args.bert_model, config_file=args.config_file,
                          device=args.device, precision=args.precision, features=extractor,
                          cache_dir=None if args.no_cache else (args.cache or default_cache_dir()),
                          answers=args.answers, tasks_config=args.tasks_config, task_token=args.task_token,
                          max_regions=args.max_regions)
    if args.features:
        pictures = [predictor.stored_regions(args.features, image_id) for image_id in args.image_ids]
    else:
        pictures = [predictor.regions(path) for path in args.images]
    attention = args.attention or (args.picture is not None and mode != "expression")
    options = {"attention": attention}
    if mode == "caption":
        options["scorer"] = args.scorer
    else:
        options["top_k"] = args.top_k
    texts = args.caption if mode == "caption" else (args.question or args.expression)
    results = predictor.predict(mode, texts, pictures, **options)
    if args.picture:
        draw_results(results, args.picture, word=args.word, layer=args.layer, head=args.head)
    if args.json:
        payload = {"mode": mode, "checkpoint": to_jsonable(predictor.checkpoint),
                   "results": to_jsonable(results, attention=args.attention)}
        print(json.dumps(payload, indent=1))
    else:
        print(describe_checkpoint(predictor.checkpoint))
        print(format_results(results, mode))
        if args.picture:
            print(f"\nwrote {args.picture}")
    return 0


def main(argv=None) -> int:
    from vilbert.training.cli import fail

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except PredictError as exc:
        return fail(SCRIPT, str(exc))


if __name__ == "__main__":
    sys.exit(main())
