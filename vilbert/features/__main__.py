"""`python -m vilbert.features {extract,convert,info}`: the feature-store command line."""

from __future__ import annotations

import argparse
import json
import sys


def _extract(args) -> int:
    from vilbert.features.extract import run_extraction

    if args.detector_config is not None and args.backbone is not None:
        raise ValueError("--backbone does not apply with --detector-config: the features are the detector's own "
                         "(its box head's fc6)")
    result = run_extraction(
        args.images,
        args.output,
        boxes=args.boxes,
        boxes_file=args.boxes_file,
        backbone=args.backbone or "resnet101",
        grid=args.grid,
        detector=args.detector,
        detector_arch=args.detector_arch,
        detector_config=args.detector_config,
        min_boxes=args.min_boxes,
        max_boxes=args.max_boxes,
        min_score=args.min_score,
        weights=args.weights,
        random_weights=args.random_weights,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        feature_dtype="float32" if args.float32 else "float16",
        image_size=args.image_size,
        max_size=args.max_size,
        progress=not args.no_progress,
    )
    print(
        f"{result.output}: {result.written} image(s) extracted, {result.already_done} already there, "
        f"{len(result.failed)} undecodable, {len(result.without_boxes)} without boxes"
        + (f", {len(result.without_regions)} without regions" if result.without_regions else "")
    )
    return 0


def _convert(args) -> int:
    from vilbert.features.convert import convert

    written = convert(args.source, args.inputs, args.output, feature_dtype="float32" if args.float32 else "float16",
                      progress=not args.no_progress)
    print(f"{args.output}: {written} record(s) written")
    return 0


def _info(args) -> int:
    from vilbert.features.reader import store_info

    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    boxes = info["boxes_per_image"]
    print(f"stores:          {', '.join(info['stores'])}")
    print(f"images:          {info['count']}")
    print(f"feature width:   {', '.join(map(str, info['feature_width'])) or '-'} ({', '.join(info['feature_dtype']) or '-'})")
    print(f"boxes per image: min {boxes['min']}, median {boxes['median']:g}, max {boxes['max']}")
    widths = ", ".join(map(str, info["cls_prob_width"]))
    print(f"cls_prob:        {'yes (' + widths + ' classes)' if info['has_cls_prob'] else ('partly (' + widths + ')' if widths else 'no')}")
    print(f"size on disk:    {info['size_on_disk_bytes'] / 2**20:.1f} MiB")
    if info["other_records"]:
        print(f"other records:   {info['other_records']} (not in this store's format)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vilbert.features", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    extract = commands.add_parser("extract", help="extract region features from a folder of images")
    extract.add_argument("--images", required=True, help="folder of images; the image id is the file stem")
    extract.add_argument("--output", required=True, help="the store to write (under torchrun: a folder of shards)")
    extract.add_argument("--boxes", choices=["gt", "grid", "detector"], required=True)
    extract.add_argument("--boxes-file", help="boxes.json for --boxes gt; boxes are x1, y1, x2, y2 in pixels")
    extract.add_argument("--grid", type=int, default=6, help="N for an N x N grid of boxes (--boxes grid)")
    extract.add_argument("--detector", help="torchvision Faster R-CNN state dict (--boxes detector); with "
                         "--detector-config a maskrcnn-benchmark checkpoint (12-in-1's detectron_model.pth)")
    extract.add_argument("--detector-arch", default="fasterrcnn_resnet50_fpn",
                         help="torchvision builder the --detector checkpoint belongs to")
    extract.add_argument("--detector-config", help="the maskrcnn-benchmark YAML of --detector (12-in-1's "
                         "detectron_config.yaml): that detector then gives the features too, of its own boxes "
                         "(--boxes detector, 12-in-1's selection) or of given ones (--boxes gt|grid); no --backbone")
    extract.add_argument("--min-boxes", type=int, default=10, help="detector: keep at least this many boxes")
    extract.add_argument("--max-boxes", "--num-features", dest="max_boxes", type=int, default=None,
                         help="detector: keep at most this many boxes (default 36; 100 with --detector-config, "
                         "as 12-in-1)")
    extract.add_argument("--min-score", "--confidence-threshold", dest="min_score", type=float, default=None,
                         help="detector: score threshold (default 0.2; 0 with --detector-config, as 12-in-1)")
    extract.add_argument("--backbone", choices=["resnet50", "resnet101", "pixels"], default=None,
                         help="feature backbone (default resnet101; none with --detector-config)")
    extract.add_argument("--weights", help="local ResNet state dict for the backbone")
    extract.add_argument("--random-weights", action="store_true", help="random ResNet weights (tests only)")
    extract.add_argument("--batch-size", type=int, default=8)
    extract.add_argument("--num-workers", type=int, default=2, help="image-decoding worker processes")
    extract.add_argument("--device", help="default: cuda:LOCAL_RANK when a GPU is present, else cpu")
    extract.add_argument("--image-size", type=int, default=600, help="ResNet input: shorter side in pixels")
    extract.add_argument("--max-size", type=int, default=1000, help="ResNet input: longest side at most")
    extract.add_argument("--float32", action="store_true", help="store float32 features (default float16)")
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(run=_extract)

    convert = commands.add_parser("convert", help="convert bottom-up TSV, 12-in-1 .npy or legacy LMDB features")
    convert.add_argument("inputs", nargs="+", help="input files (TSV, .npy, or legacy LMDB directories)")
    convert.add_argument("--from", dest="source", choices=["tsv", "npy", "legacy-lmdb"], required=True)
    convert.add_argument("--output", required=True)
    convert.add_argument("--float32", action="store_true", help="store float32 features (default float16)")
    convert.add_argument("--no-progress", action="store_true")
    convert.set_defaults(run=_convert)

    info = commands.add_parser("info", help="summarise a store or a folder of shards")
    info.add_argument("store", nargs="+")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)
    return parser


def main(argv=None) -> int:
    import pickle

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError, pickle.UnpicklingError) as exc:
        # Bad input is a one-line message, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
