"""The model's speed: samples/s (pairs/s for retrieval scoring), achieved TFLOP/s and peak memory.

    python benchmarks/bench_model.py --workload pretrain --device cuda --precision bf16 --batch 256
    python benchmarks/bench_model.py --workload all --device cpu --batch 8 --precision fp32
    python benchmarks/bench_model.py --workload pretrain --batch 8 --original /path/to/orig_vilbert
    python benchmarks/bench_model.py --quick            # tiny config, every workload, seconds on a CPU

Workloads (shapes of the originals' task file, REFERENCE 4-5; config bert_base_6layer_6conect):
    pretrain        MLM + masked-region KL (1601 classes) + alignment, AdamW: 36 tokens, 36 + 1 regions
    vqa             VL-classifier, BCE over 3,129 answers: 23 tokens, 100 + 1 regions
    vcr             VL-logit, 4 answers per question (4 rows a sample): 60 tokens, 100 + 1 regions
    refcoco         V-logit, BCE per region: 20 tokens, 100 + 1 regions
    retrieval       VL-logit training, 4 pairs a sample (true, random caption, random image, hard
                    negative): 30 tokens, 100 + 1 regions
    score           retrieval scoring, eval_retrieval's inner loop: one caption's cached text
                    prefix against a block of --batch images, forward only: 30 tokens, 100 + 1 regions
    pretrain-data   `pretrain` fed by the real ConceptualCaptionsDataset + DataLoader from a generated
                    feature store (float16 records, 36 boxes, cls_prob), to compare with `pretrain`

A training step is vilbert.training.train_step (autocast, loss scaling for fp16, gradient clipping,
fused AdamW, scheduler) with the objectives the scripts use. FLOPs are counted once per workload
with torch.utils.flop_counter (forward + backward; the optimizer is not counted); TFLOP/s = that
count x steps / time. Peak memory: torch.cuda.max_memory_allocated on a GPU, the process's peak
RSS on a CPU (which includes the Python runtime and the weights).

--original DIR also times the originals' model file (vilbert-multi-task's vilbert/vilbert.py and
utils.py, kept outside this repository) on the pretraining step with the same weights and inputs,
the two alternating step blocks in one process (torch.optim.AdamW, foreach, for the original), and
prints the ratio. --json PATH appends one JSON object per result.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from vilbert.config import ViLBertConfig  # noqa: E402
from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks  # noqa: E402
from vilbert.tasks.losses import v_logit_loss, vl_classifier_loss, vl_logit_loss  # noqa: E402
from vilbert.training import Precision, build_optimizer, train_step, warmup_linear_schedule  # noqa: E402
from vilbert.training.distributed import DistInfo  # noqa: E402
from vilbert.training.host_memory import keep_freed_memory  # noqa: E402
from vilbert.training.objectives import PretrainingObjective  # noqa: E402


@dataclass(frozen=True)
class Workload:
    name: str
    tokens: int
    regions: int  # the global region included
    head: str = ""  # ViLBertForVLTasks head ("" = pretraining)
    rows_per_sample: int = 1  # options / pairs per sample (VL-logit)
    unit: str = "samples"


WORKLOADS = {
    "pretrain": Workload("pretrain", 36, 37),
    "vqa": Workload("vqa", 23, 101, "vil_prediction"),
    "vcr": Workload("vcr", 60, 101, "vil_logit", rows_per_sample=4),
    "refcoco": Workload("refcoco", 20, 101, "vision_logit"),
    "retrieval": Workload("retrieval", 30, 101, "vil_logit", rows_per_sample=4),
    "score": Workload("score", 30, 101, unit="pairs"),
    "pretrain-data": Workload("pretrain-data", 36, 37),
}
LOSSES = {"vil_prediction": vl_classifier_loss, "vil_logit": vl_logit_loss, "vision_logit": v_logit_loss}
VQA_LABELS = 3129


@dataclass
class Result:
    workload: str
    config: str
    device: str
    device_name: str
    precision: str
    compile: bool
    batch: int
    steps: int
    unit: str
    rate: float  # samples/s or pairs/s
    step_ms: float
    gflop_per_sample: float
    tflops: float
    peak_memory_gib: float
    torch: str
    model: str = "ours"


# -- inputs ------------------------------------------------------------------------------------


def synthetic_batch(config: ViLBertConfig, workload: Workload, batch: int, device, seed: int = 0,
                    padded: bool = False) -> dict:
    """Random model inputs and labels of a workload's shapes. Every token and region is real, or,
    with `padded`, each row but the first keeps between half and all of them (the rest is padding,
    zeroed) and every pretraining row keeps at least one masked token and region."""
    g = torch.Generator().manual_seed(seed)
    rows = batch * workload.rows_per_sample
    T, R = workload.tokens, workload.regions
    text_len, region_len = torch.full((rows,), T), torch.full((rows,), R)
    if padded:
        text_len = torch.randint(T // 2, T + 1, (rows,), generator=g)
        region_len = torch.randint(R // 2, R + 1, (rows,), generator=g)
        text_len[0], region_len[0] = T, R
    attention_mask = (torch.arange(T)[None] < text_len[:, None]).long()  # (rows, T)
    image_attention_mask = (torch.arange(R)[None] < region_len[:, None]).long()  # (rows, R)
    low = min(1000, config.vocab_size // 2)
    out = dict(
        input_ids=torch.randint(low, min(config.vocab_size, 30000), (rows, T), generator=g) * attention_mask,
        token_type_ids=torch.zeros(rows, T, dtype=torch.long),
        attention_mask=attention_mask,
        image_feat=torch.randn(rows, R, config.v_feature_size, generator=g) * image_attention_mask[..., None],
        image_loc=torch.rand(rows, R, 5, generator=g),
        image_attention_mask=image_attention_mask,
    )
    if not workload.head:  # pretraining labels: 15% of tokens and regions, half the captions random
        masked = (torch.rand(rows, T, generator=g) < 0.15) & attention_mask.bool()
        label = ((torch.rand(rows, R, generator=g) < 0.15) & image_attention_mask.bool()).long()
        if padded:  # at least half of each row is real: position 1 always is
            masked[:, 1], label[:, 1] = True, 1
        label[:, 0] = 0  # the global region is never a target
        out["masked_lm_labels"] = torch.where(masked, out["input_ids"], torch.full_like(out["input_ids"], -1))
        out["image_label"] = label
        out["image_target"] = torch.softmax(torch.randn(rows, R, config.region_target_size, generator=g), -1)
        out["next_sentence_label"] = torch.randint(0, 2, (rows,), generator=g)
    elif workload.head == "vil_prediction":
        out["target"] = (torch.rand(batch, VQA_LABELS, generator=g) < 0.002).float()
    elif workload.head == "vil_logit":
        out["target"] = torch.zeros(batch, dtype=torch.long)
    else:
        out["target"] = torch.rand(rows, R, generator=g) * (torch.rand(rows, R, generator=g) > 0.7)
    return {k: v.to(device) for k, v in out.items()}


class HeadObjective:
    """A finetuning task's loss on its one head, as train_tasks.py computes it (without the task file)."""

    names = ("loss",)
    weights = (1.0,)

    def __init__(self, head: str):
        self.head, self.loss = head, LOSSES[head]

    def counts(self, batch):
        return torch.full((1,), float(batch["target"].shape[0]), device=batch["target"].device)

    def __call__(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k != "target"}
        out = model(**inputs, heads={self.head})
        return self.loss(getattr(out, self.head), batch).reshape(1), {}


# -- models ------------------------------------------------------------------------------------


def build_model(config: ViLBertConfig, workload: Workload, device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if workload.head or workload.name == "score":
        model = ViLBertForVLTasks(config, num_labels=VQA_LABELS)
    else:
        model = ViLBertForPretraining(config)
    return model.to(device)


def timed(run, steps: int, device) -> float:
    """Seconds per call of run(), the device synchronised before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    return (time.perf_counter() - start) / steps


def alternating(runs: dict, rounds: int, block: int, device) -> dict:
    """Median seconds per call of each of `runs` (name -> closure), timed in `rounds` rounds of one
    block of `block` calls each, A B A B, so that a noisy machine slows them alike."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(timed(run, block, device))
    return {name: float(np.median(t)) for name, t in times.items()}


def without_dropout(config: ViLBertConfig) -> ViLBertConfig:
    """The config with every dropout probability 0: repeated forward passes give the same output."""
    return ViLBertConfig.from_dict({**config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                                    "v_hidden_dropout_prob": 0.0, "v_attention_probs_dropout_prob": 0.0})


def count_flops(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def training_runner(model, objective, batches, precision: Precision, device, lr: float = 1e-5):
    """A closure doing one optimizer step of train_step on the next batch of `batches` (cycled or iterated)."""
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    optimizer = build_optimizer(model, lr)
    scheduler = warmup_linear_schedule(optimizer, 0, 10**9)
    state = {"i": 0}

    def run():
        batch = batches[state["i"] % len(batches)] if isinstance(batches, list) else next(batches)
        state["i"] += 1
        train_step(model, [batch], objective, optimizer, scheduler, precision, dist)

    return run


def scoring_runner(model, batch: dict, precision: Precision):
    """eval_retrieval's inner loop: one caption's cached prefix against a block of images."""
    from vilbert.finetune import pair_scores

    model.eval()
    text = {k: batch[k][:1] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad(), precision.autocast():
        prefix = model.vilbert.encode_text_prefix(**text)  # (1, T, hidden)
    inputs = dict(text, image_feat=batch["image_feat"], image_loc=batch["image_loc"],
                  image_attention_mask=batch["image_attention_mask"])

    @torch.no_grad()
    def run():
        with precision.autocast():
            pair_scores(model, inputs, prefix, zero_shot=False)

    return run


# -- the data path -----------------------------------------------------------------------------


def make_concap_store(root: Path, config: ViLBertConfig, num_images: int, seed: int = 0) -> Path:
    """Captions (caption TAB url) and a feature store of num_images records with 36 boxes each."""
    from vilbert.data.concap import TRAIN_CAPTIONS, VAL_CAPTIONS, image_id_from_url
    from vilbert.features import FeatureWriter

    rng = np.random.default_rng(seed)
    words = ("a red circle next to a blue square on a table with two small dogs and a large green "
             "tree in the park under the sky").split()
    lines = []
    with FeatureWriter(root / "features" / "shard0.lmdb") as writer:
        for i in range(num_images):
            url = f"http://bench.invalid/{i}.jpg"
            length = int(rng.integers(8, 30))
            lines.append(" ".join(rng.choice(words, size=length)) + f"\t{url}")
            boxes = np.sort(rng.uniform(0, 600, size=(36, 2, 2)), axis=1).reshape(36, 4)[:, [0, 2, 1, 3]]
            cls_prob = rng.dirichlet(np.ones(config.region_target_size), size=36).astype(np.float32)
            writer.put(image_id_from_url(url), image_h=600, image_w=600, boxes=boxes,
                       features=rng.random((36, config.v_feature_size), dtype=np.float32), cls_prob=cls_prob)
    (root / TRAIN_CAPTIONS).write_text("\n".join(lines) + "\n")
    (root / VAL_CAPTIONS).write_text("\n".join(lines[:8]) + "\n")
    return root


def data_batches(root: Path, config: ViLBertConfig, workload: Workload, batch: int, num_workers: int,
                 bert_model: str, device):
    """An endless iterator of pretraining batches from the real dataset and loader, on `device`."""
    from transformers import AutoTokenizer

    from vilbert.data.concap import TRAIN_CAPTIONS, ConceptualCaptionsDataset, SampleConfig, make_loader
    from vilbert.training import TrainSampler, to_device

    tokenizer = AutoTokenizer.from_pretrained(bert_model)
    sample = SampleConfig(max_seq_length=workload.tokens, max_region_num=workload.regions,
                          visual_target=config.visual_target)
    dataset = ConceptualCaptionsDataset(root / TRAIN_CAPTIONS, root / "features", tokenizer, sample)
    sampler = TrainSampler(len(dataset), batch, seed=0)
    loader = make_loader(dataset, sampler, batch, num_workers=num_workers, pin_memory=device.type == "cuda")

    def endless():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            for item in loader:
                yield to_device(item, device)
            epoch += 1

    return endless()


# -- one measurement ---------------------------------------------------------------------------


def measure(args, config: ViLBertConfig, workload: Workload, device, precision: Precision) -> list[Result]:
    model = build_model(config, workload, device, args.seed)
    if args.compile:
        model.compile()
    samples_per_call = args.batch
    if workload.name == "pretrain-data":
        tmp = tempfile.TemporaryDirectory(prefix="bench_store_")
        root = make_concap_store(Path(tmp.name), config, max(args.store_images, 2 * args.batch))
        batches = data_batches(root, config, workload, args.batch, args.num_workers, args.bert_model, device)
    else:
        batches = [synthetic_batch(config, workload, args.batch, device, seed=i) for i in range(2)]
    if workload.name == "score":
        run = scoring_runner(model, batches[0], precision)
    else:
        objective = PretrainingObjective() if not workload.head else HeadObjective(workload.head)
        run = training_runner(model, objective, batches, precision, device)

    # One real step under the counter (it counts matrix products and attention; the optimizer
    # registers none), so the count is of exactly what is timed.
    flops = count_flops(run) if not args.no_flops else 0
    # Every distinct batch once at least, so that a compiled model has seen each shape before timing.
    for _ in range(max(args.warmup, len(batches) if isinstance(batches, list) else 0)):
        run()
    reset_peak(device)
    seconds = timed(run, args.steps, device)
    results = [result_row(args, config, workload, device, precision, seconds, flops, samples_per_call, "ours")]

    if args.original and workload.name == "pretrain":
        ours_s, original_s = compare_with_original(args, config, model, batches[0], device, precision, run)
        results = [result_row(args, config, workload, device, precision, ours_s, flops, samples_per_call, "ours"),
                   result_row(args, config, workload, device, precision, original_s, 0, samples_per_call, "original")]
        for row in results:
            row.steps = max(1, args.steps // args.rounds) * args.rounds
    return results


def device_name(device) -> str:
    """The GPU's name, or the CPU's as platform.processor() gives it."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def result_row(args, config, workload, device, precision, seconds, flops, samples, model_name) -> Result:
    return Result(
        workload=workload.name, config=Path(args.config).name, device=device.type,
        device_name=device_name(device),
        precision=precision.mode, compile=bool(args.compile), batch=args.batch, steps=args.steps,
        unit=workload.unit, rate=samples / seconds, step_ms=seconds * 1000,
        gflop_per_sample=flops / samples / 1e9, tflops=flops / seconds / 1e12,
        peak_memory_gib=peak_memory_gib(device), torch=torch.__version__, model=model_name)


def compare_with_original(args, config, ours, batch, device, precision, run_ours) -> tuple[float, float]:
    """Seconds per step of ours and of the originals' BertForMultiModalPreTraining with our weights,
    timed in blocks alternating A B A B so that a noisy machine slows both alike (medians)."""
    from original_model import build_original_pretraining, load_original_module

    module = load_original_module(args.original)
    original = build_original_pretraining(module, config, ours.state_dict()).to(device).train()
    optimizer = torch.optim.AdamW(original.parameters(), lr=1e-5)  # foreach: torch's default
    inputs = dict(input_ids=batch["input_ids"], image_feat=batch["image_feat"], image_loc=batch["image_loc"],
                  token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"],
                  image_attention_mask=batch["image_attention_mask"], masked_lm_labels=batch["masked_lm_labels"],
                  image_label=batch["image_label"][:, 1:], image_target=batch["image_target"][:, 1:],
                  next_sentence_label=batch["next_sentence_label"])

    def run_original():
        with precision.autocast():
            mlm, region, alignment = original(**inputs)
        precision.backward((mlm + region + alignment).sum())
        precision.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(original.parameters(), 1.0)
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        run_original()
    block = max(1, args.steps // args.rounds)
    medians = alternating(dict(ours=run_ours, original=run_original), args.rounds, block, device)
    ours_s, original_s = medians["ours"], medians["original"]
    print(f"pretraining step, {device.type} {precision.mode}, batch {args.batch}: ours {ours_s * 1000:.0f} ms, "
          f"original {original_s * 1000:.0f} ms (medians of {args.rounds} alternating blocks of {block} steps): "
          f"ours {original_s / ours_s:.2f}x as fast", flush=True)
    return ours_s, original_s


# -- command line ------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    lines = ["| workload | model | device | precision | compile | batch | rate | ms/step | GFLOP/sample | TFLOP/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.workload} | {r.model} | {r.device_name} | {r.precision} | {'yes' if r.compile else 'no'} | "
                     f"{r.batch} | {r.rate:,.1f} {r.unit}/s | {r.step_ms:.1f} | {r.gflop_per_sample:.2f} | "
                     f"{r.tflops:.2f} | {r.peak_memory_gib:.2f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--workload", default="pretrain", help=f"one of {', '.join(WORKLOADS)}, several separated by commas, or all")
    p.add_argument("--config", default=str(REPO / "config" / "bert_base_6layer_6conect.json"))
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--batch", type=int, default=8, help="samples a step (pairs a call for score)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (nn.Module.compile)")
    p.add_argument("--original", default=None, help="folder with the originals' vilbert.py and utils.py")
    p.add_argument("--rounds", type=int, default=4, help="alternating blocks for --original")
    p.add_argument("--num_workers", type=int, default=4, help="DataLoader workers (pretrain-data)")
    p.add_argument("--store_images", type=int, default=512, help="records in the generated store (pretrain-data)")
    p.add_argument("--bert_model", default=None, help="tokenizer for pretrain-data (default: the offline MiniLM)")
    p.add_argument("--no_flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--default_malloc", action="store_true",
                   help="leave glibc's malloc as it is (the training scripts keep freed memory: vilbert/training/host_memory.py)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="append one JSON object per result to this file")
    p.add_argument("--quick", action="store_true",
                   help="tiny config, batch 2, 2 steps, every workload: checks that the benchmark runs")
    args = p.parse_args(argv)
    if args.quick:
        args.config = str(REPO / "config" / "vilbert_tiny.json")
        args.batch, args.steps, args.warmup, args.rounds, args.store_images = 2, 2, 1, 2, 8
        args.num_workers = 0
        if args.workload == "pretrain":
            args.workload = "all"
    return args


def main(argv=None) -> list[Result]:
    args = parse_args(argv)
    if not args.default_malloc:
        keep_freed_memory()  # as the training scripts do
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.bert_model is None:
        from vilbert.offline import minilm_path

        args.bert_model = str(minilm_path())
    names = list(WORKLOADS) if args.workload == "all" else args.workload.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"bench_model.py: error: unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    config = ViLBertConfig.from_json_file(args.config)
    if args.quick:  # the tiny config with the real vocabulary, so that pretrain-data's tokenizer fits
        config = ViLBertConfig.from_dict({**config.to_dict(), "vocab_size": 30522})
    precision = Precision.create(args.precision, device)
    results = []
    for name in names:
        rows = measure(args, config, WORKLOADS[name], device, precision)
        for row in rows:
            print(f"{row.workload} ({row.model}): {row.rate:,.1f} {row.unit}/s, {row.step_ms:.1f} ms/step, "
                  f"{row.tflops:.2f} TFLOP/s, peak {row.peak_memory_gib:.2f} GiB", flush=True)
        results.extend(rows)
        if args.json:
            with open(args.json, "a") as f:
                for row in rows:
                    f.write(json.dumps(asdict(row)) + "\n")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(table(results))
    return results


if __name__ == "__main__":
    main()
