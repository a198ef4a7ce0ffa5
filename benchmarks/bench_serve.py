"""Seconds per answer of `python -m vilbert.serve` (docs/SERVE.md, "Speed"; the issue: within one
second on 2 CPU cores for the demo models).

Takes the server's own flags, builds the same service, and asks every mode about the first
--pictures pictures of the gallery through Starlette's test client (routing and JSON included):
each picture once new (its features extracted) and once more cached. Prints median and max per
mode and state.

    python benchmarks/bench_serve.py --demo results/demo --data data/demo      # after `make demo`
    python benchmarks/bench_serve.py --checkpoint DIR --bert_model DIR ... --threads 2
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = {"question": {"text": "What color is the circle?"},
             "expression": {"text": "the big red star"},
             "caption": {"captions": ["a red circle and a blue star", "a green cross", "two yellow triangles"]}}


def main(argv=None) -> int:
    import torch
    from starlette.testclient import TestClient

    from vilbert.serve.__main__ import build_parser, build_service
    from vilbert.serve.app import create_app

    parser = build_parser()
    parser.add_argument("--pictures", type=int, default=5, help="gallery pictures asked about")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the issue's 2 CPU cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    service = build_service(args)
    times: dict[tuple[str, str], list[float]] = {}
    with TestClient(create_app(service), raise_server_exceptions=True) as client:
        info = client.get("/api/info").json()
        modes = [mode for mode, about in info["modes"].items() if about["available"]]
        pictures = info["gallery"][:args.pictures]
        if not pictures:
            raise SystemExit("bench_serve: the service offers no gallery pictures (--gallery DIR, or --demo)")
        for picture in pictures:
            for state in ("new", "cached"):
                for mode in modes:  # the first mode of a new picture pays for its features
                    state_here = state if mode == modes[0] else "cached"
                    started = time.perf_counter()
                    out = client.post("/api/ask", json={"mode": mode, "picture": picture["id"], **QUESTIONS[mode]})
                    seconds = time.perf_counter() - started
                    if out.status_code != 200:
                        raise SystemExit(f"bench_serve: {mode} on {picture['name']}: {out.status_code} {out.text}")
                    times.setdefault((mode, state_here), []).append(seconds)
    print(f"{len(pictures)} pictures, {args.threads} threads, {torch.__version__}")
    print("| request | picture | median s | max s | n |\n|---|---|---|---|---|")
    for (mode, state), values in times.items():
        print(f"| {mode} | {state} | {statistics.median(values):.3f} | {max(values):.3f} | {len(values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
