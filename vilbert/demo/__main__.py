"""Command line of the demo world: `python -m vilbert.demo {make-world,check,run,kinds} ...`."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        # The demo pipeline parses its own flags (and its own --help).
        try:
            from vilbert.demo.pipeline import main as run_pipeline
        except ModuleNotFoundError as exc:
            if exc.name != "vilbert.demo.pipeline":
                raise
            print("error: the demo pipeline (vilbert/demo/pipeline.py) is not installed", file=sys.stderr)
            return 2
        return run_pipeline(argv[1:]) or 0

    parser = argparse.ArgumentParser(prog="python -m vilbert.demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-world", help="write the demo world (pictures, annotations, features)")
    make.add_argument("--output", default="data/demo", help="folder to write (default: data/demo)")
    make.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same files")
    make.add_argument("--size", default="small", choices=("small", "medium"),
                      help="small: the demo in minutes on 2 CPU cores; medium: ten times larger")
    make.add_argument("--overwrite", action="store_true", help="replace a demo world already in --output")
    make.add_argument("--no-features", action="store_true", help="skip feature extraction (pictures and boxes files only)")
    make.add_argument("--twelve", action="store_true",
                      help="also write 12-in-1's added data sets and its task file vilbert_tasks.yml (docs/DEMO.md)")
    make.add_argument("--progress", action="store_true", help="show the extractor's progress bars")
    check = commands.add_parser("check", help="probe the features and measure the text-only VQA baseline")
    check.add_argument("--data", default="data/demo", help="a folder written by make-world")
    commands.add_parser("run", help="the whole demo: make the world, pretrain, finetune, evaluate")
    kinds = commands.add_parser("kinds", help="VQA and VCR val results of a demo run by question kind")
    kinds.add_argument("--data", default="data/demo", help="the demo world the run used")
    kinds.add_argument("--results", default="results/demo", help="the run's --output folder")
    args = parser.parse_args(argv)

    if args.command == "make-world":
        from vilbert.demo.make import make_world

        try:
            make_world(args.output, seed=args.seed, size=args.size, overwrite=args.overwrite,
                       extract=not args.no_features, progress=args.progress, twelve=args.twelve)
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "check":
        from vilbert.demo.check import main as run_check

        return run_check(args.data)
    if args.command == "kinds":
        from vilbert.demo.kinds import report

        try:
            print(report(args.data, args.results), end="")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
