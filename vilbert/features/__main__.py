"""`python -m vilbert.features {extract,convert,info}`: the feature-store command line."""

from __future__ import annotations

import argparse
import json
import sys

from vilbert.features.extract import add_extractor_arguments


def _extract(args) -> int:
    from vilbert.features.extract import extractor_backbone, run_extraction

    result = run_extraction(
        args.images,
        args.output,
        boxes=args.boxes,
        boxes_file=args.boxes_file,
        backbone=extractor_backbone(args),
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
    add_extractor_arguments(extract)
    extract.add_argument("--batch-size", type=int, default=8)
    extract.add_argument("--num-workers", type=int, default=2, help="image-decoding worker processes")
    extract.add_argument("--device", help="default: cuda:LOCAL_RANK when a GPU is present, else cpu")
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
