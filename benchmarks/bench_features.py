"""Reader throughput and size on disk: our feature store vs the originals' pickled-base64 LMDB.

    .venv/bin/python benchmarks/bench_features.py [--records 400] [--boxes 36] [--dim 2048] [--classes 1601]

Writes the same random records (boxes, features, cls_prob; float32 as detectors produce them) twice
into a temporary folder: once as the originals stored them (beta layout: key str(image_id) -> a
pickled dict whose arrays are base64 strings of float32), once with FeatureWriter (float16). Then it
reads every record in a shuffled order, several passes, with the page cache warm for both, and
produces what a dataset needs from each record in both cases (float32 features with the global row,
5-d locations, boxes, cls_prob as float32), as the originals' reader and FeatureReader do. Prints a
markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import base64
import pickle
import platform
import shutil
import tempfile
import time
from pathlib import Path

import sys

import lmdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from vilbert.features import FeatureReader, FeatureWriter  # noqa: E402


def make_records(count, boxes, dim, classes, seed=0):
    rng = np.random.default_rng(seed)
    for image_id in range(count):
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        xy = rng.uniform(0, min(h, w) / 2, (boxes, 2))
        wh = rng.uniform(1, min(h, w) / 2, (boxes, 2))
        record = dict(
            image_h=h,
            image_w=w,
            boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32),
            # ReLU-like non-negative features, as a detector's pooled features are
            features=np.maximum(rng.standard_normal((boxes, dim)), 0).astype(np.float32),
            cls_prob=rng.dirichlet(np.full(classes, 0.1), boxes).astype(np.float32) if classes else None,
        )
        yield str(image_id), record


def write_legacy(path, records):
    """The originals' layout (REFERENCE 4): pickled dict of base64 strings, plus b'keys'."""
    env = lmdb.open(str(path), map_size=1 << 36)
    ids = []
    with env.begin(write=True) as txn:
        for image_id, r in records:
            item = {
                "image_id": image_id,
                "image_h": r["image_h"],
                "image_w": r["image_w"],
                "num_boxes": len(r["boxes"]),
                "boxes": base64.b64encode(r["boxes"].tobytes()),
                "features": base64.b64encode(r["features"].tobytes()),
            }
            if r["cls_prob"] is not None:
                item["cls_prob"] = base64.b64encode(r["cls_prob"].tobytes())
            txn.put(image_id.encode(), pickle.dumps(item))
            ids.append(image_id.encode())
        txn.put(b"keys", pickle.dumps(ids))
    env.close()


def read_legacy(env, image_id, dim):
    """What the originals' reader does per record (decode, global row, locations), plus cls_prob."""
    with env.begin(write=False) as txn:
        item = pickle.loads(txn.get(image_id.encode()))
    n = int(item["num_boxes"])
    h, w = float(item["image_h"]), float(item["image_w"])
    features = np.frombuffer(base64.b64decode(item["features"]), dtype=np.float32).reshape(n, dim)
    boxes = np.frombuffer(base64.b64decode(item["boxes"]), dtype=np.float32).reshape(n, 4)
    cls_prob = None
    if "cls_prob" in item:
        cls_prob = np.frombuffer(base64.b64decode(item["cls_prob"]), dtype=np.float32).reshape(n, -1)
    features = np.concatenate([features.mean(0, keepdims=True), features])
    locations = np.zeros((n + 1, 5), dtype=np.float32)
    locations[0] = (0, 0, 1, 1, 1)
    locations[1:, :4] = boxes / np.array([w, h, w, h], dtype=np.float32)
    locations[1:, 4] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (w * h)
    return features, locations, boxes, cls_prob


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def timed_passes(read, ids, passes, seed=0):
    """Best records/s over `passes` shuffled passes (the first pass also warms the page cache)."""
    rng = np.random.default_rng(seed)
    best = 0.0
    for _ in range(passes):
        order = rng.permutation(len(ids))
        start = time.perf_counter()
        for index in order:
            read(ids[index])
        best = max(best, len(ids) / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--boxes", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1601, help="cls_prob width (0: none)")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--workdir", help="where to write the two stores (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_features_", dir=args.workdir))
    try:
        legacy_path, store_path = root / "legacy.lmdb", root / "store.lmdb"
        write_legacy(legacy_path, make_records(args.records, args.boxes, args.dim, args.classes))
        with FeatureWriter(store_path) as writer:
            for image_id, record in make_records(args.records, args.boxes, args.dim, args.classes):
                writer.put(image_id, **record)
        per_record = 4 * args.boxes * (4 + args.dim + args.classes)
        float32_bytes = args.records * per_record

        ids = [str(i) for i in range(args.records)]
        legacy_env = lmdb.open(str(legacy_path), readonly=True, lock=False, readahead=False, meminit=False)
        reader = FeatureReader(store_path)
        # Same output from both (to float16 precision), or the comparison means nothing.
        old, new = read_legacy(legacy_env, "0", args.dim), reader["0"]
        np.testing.assert_allclose(new.features, old[0], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(new.locations, old[1], rtol=1e-5)
        legacy_rate = timed_passes(lambda i: read_legacy(legacy_env, i, args.dim), ids, args.passes)
        store_rate = timed_passes(reader.__getitem__, ids, args.passes)
        legacy_size, store_size = dir_size(legacy_path), dir_size(store_path)

        print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
              f"numpy {np.__version__}, lmdb {lmdb.__version__}")
        print(f"records: {args.records} x {args.boxes} boxes x {args.dim} features"
              + (f" + cls_prob {args.classes}" if args.classes else "") + f"; float32 data {float32_bytes / 2**20:.1f} MiB")
        print()
        print("| layout | records/s (1 process) | size on disk | size / float32 data |")
        print("|---|---|---|---|")
        print(f"| originals: pickled dict of base64 float32 | {legacy_rate:,.0f} | {legacy_size / 2**20:.1f} MiB | "
              f"{legacy_size / float32_bytes:.0%} |")
        print(f"| ours: header + raw float16 (FeatureReader) | {store_rate:,.0f} | {store_size / 2**20:.1f} MiB | "
              f"{store_size / float32_bytes:.0%} |")
        print()
        print(f"speed-up: {store_rate / legacy_rate:.1f}x (target >= 5x); "
              f"size: {store_size / float32_bytes:.0%} of the float32 data (target <= 55%)")
        legacy_env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
