"""Correctness checks on one device, the environment, and the report of benchmarks/device_check.sh.

    python benchmarks/device_checks.py check precision --device cuda --out CHECKS.jsonl   # one JSON line a check
    python benchmarks/device_checks.py env --out ENV.json            # torch, CUDA, GPU, driver, CPUs, git commit
    python benchmarks/device_checks.py install --wheels .device/wheels --target SITE   # missing packages, offline
    python benchmarks/device_checks.py report --work WORK --out OUT --print            # device_check.json + .md

The checks run config/bert_base_6layer_6conect.json (--quick: config/vilbert_tiny.json) on padded
inputs of the pretraining (36 tokens, 37 regions) and VQA (23 tokens, 101 regions) shapes. Each
appends {"name", "passed", "summary", "details"}; a check that raises is recorded as failed, and the
command still exits 0 (device_check.sh reads failures from the JSON, crashes from the exit code):

    precision   bf16 and fp16 autocast against fp32 with the same weights and inputs: the losses, the
                alignment and MLM scores, the pooled outputs and the VQA logits; max abs / rel
                differences, and a verdict against TOLERANCE.
    gradscaler  fp16 train_steps with Precision's GradScaler: losses finite, the scale after
                each step, weights changed by every step not skipped; then a step whose gradient is
                made inf by a hook is skipped (weights bit-identical) and halves the scale.
    sdpa        vilbert.model.Attention with the model's additive (B, 1, 1, L) padding mask in the
                query dtype, under each SDPA backend alone (FLASH, EFFICIENT, CUDNN, MATH): which
                run (and why not, from SDPA's warnings) and whether they match MATH; then the aten
                ops and kernels the default dispatch launches (torch.profiler) in each of those
                calls and in a whole pretraining step, at the default precision.
    ddp         a one-process DistributedDataParallel (NCCL on a GPU, gloo on a CPU, file://
                rendezvous): gradients and one train_step equal the plain model's.

`report` and `install` import neither torch nor vilbert, so a report is written even when they
cannot be imported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {False: REPO / "config" / "bert_base_6layer_6conect.json", True: REPO / "config" / "vilbert_tiny.json"}
VQA_LABELS = 3129
PRETRAIN_SHAPE = (36, 37)  # tokens, regions (the global region included), as bench_model.py
VQA_SHAPE = (23, 101)
# Largest allowed max|x - ref| / max|ref| against fp32, by kind of output. bf16 keeps 8 significant
# bits (eps 3.9e-3), fp16 11 (eps 4.9e-4); through 12 text and 6 visual layers the pooled outputs
# drift a few eps, and small logits computed from them (alignment scores of max ~0.16) lose more to
# cancellation. Measured on a CPU with the base config, batch 4: bf16 losses <= 9e-4, pooled
# <= 1.2e-2, logits <= 2.2e-2; fp16 about 8x less. A broken cast or an overflowing mask is off by
# 1e-1 or more, or not finite.
TOLERANCE = {"bf16": dict(loss=1e-2, pooled=2.5e-2, logits=5e-2),
             "fp16": dict(loss=2e-3, pooled=5e-3, logits=1e-2)}
SDPA_TOLERANCE = {"bf16": 2e-2, "fp16": 5e-3, "fp32": 1e-4}  # a backend's output against MATH's
# Packages vilbert imports that the GPU machine may lack: import name -> distribution.
OFFLINE_PACKAGES = {"lmdb": "lmdb", "tensorboardX": "tensorboardX", "google.protobuf": "protobuf"}


def load_config(quick: bool):
    """The checks' config with dropout off, so that two forward passes are comparable."""
    from bench_model import without_dropout

    return without_dropout(_config_with_dropout(quick))


def _config_with_dropout(quick: bool):
    """The config as written (dropout on): which backend runs depends on the dropout probability."""
    from vilbert.config import ViLBertConfig

    return ViLBertConfig.from_json_file(CONFIGS[quick])


def make_batch(config, batch: int, tokens: int, regions: int, device, seed: int = 0,
               labels: str = "pretrain") -> dict:
    """bench_model.synthetic_batch with padding in both streams (row 0 full, the others keep between
    half and all of their tokens and regions) and the labels of `labels` ("pretrain" or "vqa")."""
    from bench_model import Workload, synthetic_batch

    workload = Workload("check", tokens, regions, "" if labels == "pretrain" else "vil_prediction")
    return synthetic_batch(config, workload, batch, device, seed=seed, padded=True)


def compare(value, reference) -> dict:
    """max |value - reference|, that over max |reference|, and whether value is finite."""
    value, reference = value.float(), reference.float()
    max_abs = (value - reference).abs().max().item()
    scale = reference.abs().max().item()
    return dict(max_abs=max_abs, max_rel=max_abs / max(scale, 1e-6), ref_max=scale,
                finite=bool(value.isfinite().all()))


def _snapshot(model) -> list:
    return [p.detach().clone() for p in model.parameters()]


def _same(snapshot: list, model) -> bool:
    return all(a.equal(p.detach()) for a, p in zip(snapshot, model.parameters()))


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def check_precision(device, quick: bool, batch: int | None = None) -> tuple[bool, str, dict]:
    import torch

    from vilbert.model import ViLBertForPretraining, ViLBertForVLTasks
    from vilbert.tasks.losses import vl_classifier_loss

    config = load_config(quick)
    batch = batch or (4 if quick else 32)
    torch.manual_seed(0)
    pretrain = ViLBertForPretraining(config).to(device).eval()
    tasks = ViLBertForVLTasks(config, num_labels=VQA_LABELS).to(device).eval()
    pre_batch = make_batch(config, batch, *PRETRAIN_SHAPE, device, seed=1, labels="pretrain")
    vqa_batch = make_batch(config, batch, *VQA_SHAPE, device, seed=2, labels="vqa")
    vqa_inputs = {k: v for k, v in vqa_batch.items() if k != "target"}

    @torch.no_grad()
    def outputs() -> dict:
        out = pretrain(**pre_batch)
        encoded = tasks.vilbert(**vqa_inputs)
        logits = tasks(**vqa_inputs, heads={"vil_prediction"}).vil_prediction  # (B, 3129)
        return {  # name: (kind of output, value)
            "pretrain.masked_lm_loss": ("loss", out.masked_lm_loss),
            "pretrain.masked_img_loss": ("loss", out.masked_img_loss),
            "pretrain.alignment_loss": ("loss", out.next_sentence_loss),
            "pretrain.alignment_scores": ("logits", out.seq_relationship_score),  # (B, 2)
            "pretrain.mlm_scores": ("logits", out.prediction_scores_t),  # (N_t, vocab)
            "vqa.pooled_text": ("pooled", encoded.pooled_output_t),  # (B, bi_hidden)
            "vqa.pooled_visual": ("pooled", encoded.pooled_output_v),
            "vqa.logits": ("logits", logits),  # (B, 3129)
            "vqa.loss": ("loss", vl_classifier_loss(logits, vqa_batch)),
        }

    reference = outputs()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    details = dict(config=CONFIGS[quick].name, batch=batch, reference="fp32",
                   fp32_matmul_precision=torch.get_float32_matmul_precision(), modes={})
    passed, worst_lines = True, []
    for mode, dtype in dtypes.items():
        with torch.autocast(device.type, dtype=dtype):
            got = outputs()
        per = {}
        for key, (kind, ref) in reference.items():
            value = got[key][1]
            per[key] = dict(compare(value, ref), kind=kind, tolerance=TOLERANCE[mode][kind],
                            dtype=str(value.dtype).replace("torch.", ""))
            per[key]["ok"] = per[key]["finite"] and per[key]["max_rel"] <= per[key]["tolerance"]
        ok = all(v["ok"] for v in per.values())
        worst = max(per, key=lambda k: per[k]["max_rel"] / per[k]["tolerance"])  # nearest its tolerance
        details["modes"][mode] = dict(tolerance=TOLERANCE[mode], passed=ok, worst=worst, outputs=per)
        passed &= ok
        worst_lines.append(f"{mode} worst {worst} rel {per[worst]['max_rel']:.1e} "
                           f"(tol {per[worst]['tolerance']:g})")
    return passed, "; ".join(worst_lines), details


def check_gradscaler(device, quick: bool, batch: int | None = None, steps: int = 5) -> tuple[bool, str, dict]:
    import torch

    from vilbert.model import ViLBertForPretraining
    from vilbert.training import DistInfo, Precision, build_optimizer, train_step, warmup_linear_schedule
    from vilbert.training.objectives import PretrainingObjective

    if device.type == "cuda":
        precision = Precision.create("fp16", device)
        note = "Precision.create('fp16', device)"
    else:  # Precision refuses fp16 on a CPU; the same scaler logic, so that --quick covers this check
        precision = Precision(mode="fp16", device=device, scaler=torch.amp.GradScaler("cpu"))
        note = "Precision('fp16', cpu, GradScaler('cpu')): Precision.create refuses fp16 on a CPU"
    scaler = precision.scaler
    config = load_config(quick)
    batch = batch or (4 if quick else 32)
    torch.manual_seed(0)
    model = ViLBertForPretraining(config).to(device).train()
    optimizer = build_optimizer(model, 1e-4)
    scheduler = warmup_linear_schedule(optimizer, 0, 10**6)
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    objective = PretrainingObjective()
    batches = [make_batch(config, batch, *PRETRAIN_SHAPE, device, seed=10 + i) for i in range(2)]

    def one_step(batch):
        before, scale = _snapshot(model), scaler.get_scale()
        out = train_step(model, [batch], objective, optimizer, scheduler, precision, dist)
        loss = out.loss.item()
        return dict(loss=loss, loss_finite=loss == loss and abs(loss) != float("inf"),
                    grad_norm=out.grad_norm.float().item(), scale_before=scale, scale_after=scaler.get_scale(),
                    skipped=scaler.get_scale() < scale, weights_changed=not _same(before, model))

    records = [one_step(batches[i % 2]) for i in range(steps)]
    taken = [r for r in records if not r["skipped"]]
    steps_ok = (all(r["loss_finite"] for r in records) and bool(taken)
                and all(r["weights_changed"] != r["skipped"] for r in records))

    # An inf gradient on one weight: unscale_ finds it, step() skips the optimizer, update() backs off.
    weight = model.vilbert.text_layers[0].attention.query.weight
    handle = weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    try:
        injected = one_step(batches[0])
    finally:
        handle.remove()
    expected_scale = injected["scale_before"] * scaler.get_backoff_factor()
    inf_ok = not injected["weights_changed"] and injected["scale_after"] == expected_scale
    after = [one_step(batches[1])]  # training goes on: a step is taken within three
    while after[-1]["skipped"] and len(after) < 3:
        after.append(one_step(batches[len(after) % 2]))
    recovered = not after[-1]["skipped"] and all(
        r["loss_finite"] and r["weights_changed"] != r["skipped"] for r in after)

    details = dict(precision=note, config=CONFIGS[quick].name, batch=batch, init_scale=records[0]["scale_before"],
                   steps=records, steps_ok=steps_ok,
                   injected_inf=dict(injected, expected_scale=expected_scale, ok=inf_ok),
                   steps_after_inf=after, recovered=recovered)
    summary = (f"{len(taken)}/{len(records)} steps taken, scale {records[0]['scale_before']:g} -> "
               f"{records[-1]['scale_after']:g}; inf step skipped={not injected['weights_changed']}, "
               f"scale {injected['scale_before']:g} -> {injected['scale_after']:g}")
    return steps_ok and inf_ok and recovered, summary, details


SDPA_OPS = {  # aten op name prefix -> the backend it belongs to
    "_scaled_dot_product_flash_attention": "FLASH_ATTENTION",  # also ..._for_cpu
    "_flash_attention": "FLASH_ATTENTION",
    "_scaled_dot_product_efficient_attention": "EFFICIENT_ATTENTION",
    "_efficient_attention": "EFFICIENT_ATTENTION",
    "_scaled_dot_product_cudnn_attention": "CUDNN_ATTENTION",
    "_cudnn_attention": "CUDNN_ATTENTION",
    "_scaled_dot_product_attention_math": "MATH",
    "_scaled_dot_product_fused_attention_overrideable": "OVERRIDEABLE",
}
KERNEL_WORDS = ("fmha", "flash", "attention", "attn", "sdpa", "mha")


def profiled_attention(run, device) -> dict:
    """The SDPA aten ops (with counts), their backends and the attention kernels that `run()` launches."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    ops, kernels, backends = {}, {}, set()
    for event in prof.key_averages():
        name = event.key
        if name.startswith("aten::"):
            op = name[len("aten::"):]
            backend = next((b for prefix, b in SDPA_OPS.items() if op.startswith(prefix)), None)
            if backend:
                ops[name] = ops.get(name, 0) + event.count
                backends.add(backend)
        elif any(word in name.lower() for word in KERNEL_WORDS):
            kernels[name[:160]] = kernels.get(name[:160], 0) + event.count
    return dict(backends=sorted(backends), ops=ops, kernels=kernels)


def check_sdpa(device, quick: bool, batch: int | None = None) -> tuple[bool, str, dict]:
    import warnings

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vilbert.model import MASK_VALUE, Attention, ViLBertForPretraining, additive_mask
    from vilbert.training import Precision
    from vilbert.training.objectives import PretrainingObjective

    c = _config_with_dropout(quick)
    batch = batch or (4 if quick else 64)
    backends = ["MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"]
    # name: (Tq, Tk, query size, key size, inner size, heads, dropout), as the model's three uses
    shapes = {
        "text_self_36": (36, 36, c.hidden_size, c.hidden_size, c.hidden_size, c.num_attention_heads,
                         c.attention_probs_dropout_prob),
        "visual_self_101": (101, 101, c.v_hidden_size, c.v_hidden_size, c.v_hidden_size, c.v_num_attention_heads,
                            c.v_attention_probs_dropout_prob),
        "text_to_visual_23x101": (23, 101, c.hidden_size, c.v_hidden_size, c.bi_hidden_size,
                                  c.bi_num_attention_heads, c.v_attention_probs_dropout_prob),
    }
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    g = torch.Generator().manual_seed(0)
    table: dict = {}  # dtype -> mode -> backend -> {shape: "ok" or the error}
    mismatches, math_failures, reasons = [], [], {}
    for shape_name, (tq, tk, qs, ks, inner, heads, dropout) in shapes.items():
        torch.manual_seed(0)
        attn = Attention(qs, ks, inner, heads, dropout).to(device)
        queries = torch.randn(batch, tq, qs, generator=g).to(device)
        keys = queries if tq == tk and qs == ks else torch.randn(batch, tk, ks, generator=g).to(device)
        lengths = torch.randint(tk // 2, tk + 1, (batch,), generator=g)
        mask = additive_mask((torch.arange(tk)[None] < lengths[:, None]).long()).to(device)  # (B, 1, 1, Tk) fp32
        for dtype_name, dtype in dtypes.items():
            def autocast():
                return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

            reference = None
            for mode in ("eval", "train"):
                for backend in backends:
                    entry = table.setdefault(dtype_name, {}).setdefault(mode, {}).setdefault(backend, {})
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            with sdpa_kernel(getattr(SDPBackend, backend)), autocast():
                                if mode == "eval":
                                    attn.eval()
                                    with torch.no_grad():
                                        out, _ = attn(queries, keys, mask)
                                else:
                                    attn.train()
                                    q = queries.detach().requires_grad_()
                                    out, _ = attn(q, q if keys is queries else keys, mask)
                                    out.float().sum().backward()
                                    attn.zero_grad(set_to_none=True)
                            entry[shape_name] = "ok"
                        except Exception as exc:  # RuntimeError, or a cuDNN/CUDA error type
                            entry[shape_name] = _first_line(exc)
                            why = [re.sub(r"\s*\(Triggered internally.*", "", str(w.message).splitlines()[0])[:200]
                                   for w in caught]
                            if why:
                                reasons.setdefault(f"{backend}/{dtype_name}/{mode}", why[:4])
                            if backend == "MATH":
                                math_failures.append(f"{shape_name}/{dtype_name}/{mode}")
                            continue
                    if mode == "eval":
                        if backend == "MATH":
                            reference = out
                        elif reference is not None:
                            diff = compare(out, reference)
                            if not diff["finite"] or diff["max_rel"] > SDPA_TOLERANCE[dtype_name]:
                                mismatches.append(dict(backend=backend, shape=shape_name, dtype=dtype_name, **diff))
    # dtype -> mode -> backend -> the shapes it ran; and the errors of those it did not
    runs = {dtype: {mode: {b: sorted(s for s, r in shapes_.items() if r == "ok") for b, shapes_ in by_backend.items()}
                    for mode, by_backend in by_mode.items()} for dtype, by_mode in table.items()}
    errors = {f"{b}/{dtype}/{mode}/{s}": r for dtype, by_mode in table.items() for mode, by_backend in by_mode.items()
              for b, shapes_ in by_backend.items() for s, r in shapes_.items() if r != "ok"}

    # What the default dispatch launches at the default precision (bf16 on a GPU): in each of the
    # three calls above (training: forward and backward), and in a whole pretraining step.
    precision = Precision.create(None, device)
    default: dict = dict(precision=precision.mode)
    for shape_name, (tq, tk, qs, ks, inner, heads, dropout) in shapes.items():
        torch.manual_seed(0)
        attn = Attention(qs, ks, inner, heads, dropout).to(device).train()
        queries = torch.randn(batch, tq, qs, generator=g).to(device).requires_grad_()
        keys = queries if tq == tk and qs == ks else torch.randn(batch, tk, ks, generator=g).to(device)
        mask = additive_mask(torch.ones(batch, tk, dtype=torch.long)).to(device)
        mask[1:, ..., tk // 2:] = MASK_VALUE  # padding in every row but the first

        def attention_step():
            with precision.autocast():
                out, _ = attn(queries, keys, mask)
            out.float().sum().backward()

        attention_step()  # warm-up outside the profiler (cuBLAS/cuDNN handles)
        default[shape_name] = profiled_attention(attention_step, device)

    objective = PretrainingObjective()
    torch.manual_seed(0)
    pretrain = ViLBertForPretraining(c).to(device).train()
    pre_batch = make_batch(c, 4 if quick else 32, *PRETRAIN_SHAPE, device, seed=1)

    def pretrain_step():
        with precision.autocast():
            terms, _ = objective(pretrain, pre_batch)
        terms.float().sum().backward()

    pretrain_step()
    default["pretrain_step"] = profiled_attention(pretrain_step, device)

    passed = not math_failures and not mismatches and all(
        v["backends"] for k, v in default.items() if k != "precision")
    details = dict(config=CONFIGS[quick].name, batch=batch, mask="additive (B, 1, 1, Tk) in the query dtype",
                   runs=runs, errors=errors, why_not=reasons, mismatches_vs_math=mismatches,
                   math_failures=math_failures, default_dispatch=default)
    bf16_train = runs.get("bf16" if device.type == "cuda" else "fp32", {}).get("train", {})
    usable = [b for b, ok in bf16_train.items() if len(ok) == len(shapes)]
    step = default["pretrain_step"]
    kernels = sorted(step["kernels"], key=lambda k: -step["kernels"][k])
    summary = (f"default ({precision.mode} step): {'+'.join(step['backends']) or 'none found'}"
               f"{' [' + kernels[0][:60] + ']' if kernels else ''}; "
               f"{'bf16' if device.type == 'cuda' else 'fp32'} training runs on all shapes: "
               f"{', '.join(usable) or 'none'}")
    return passed, summary, details


def check_ddp(device, quick: bool, batch: int | None = None) -> tuple[bool, str, dict]:
    import copy
    import tempfile
    from datetime import timedelta

    import torch
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from vilbert.model import ViLBertForPretraining
    from vilbert.training import DistInfo, Precision, build_optimizer, train_step, warmup_linear_schedule
    from vilbert.training.objectives import PretrainingObjective

    backend = "nccl" if device.type == "cuda" else "gloo"
    config = load_config(quick)  # dropout off: the two models see the same function
    batch = batch or (4 if quick else 16)
    objective = PretrainingObjective()
    weights = torch.tensor(objective.weights, device=device)
    with tempfile.TemporaryDirectory(prefix="ddp_check_") as tmp:
        kwargs = dict(backend=backend, init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1,
                      timeout=timedelta(seconds=60))
        if device.type == "cuda":
            kwargs["device_id"] = device
        torch_dist.init_process_group(**kwargs)
        try:
            torch.manual_seed(0)
            plain = ViLBertForPretraining(config).to(device).eval()
            bare = copy.deepcopy(plain)
            wrapped = DistributedDataParallel(bare, device_ids=[device.index] if device.type == "cuda" else None)
            data = make_batch(config, batch, *PRETRAIN_SHAPE, device, seed=3)

            # Gradients of the loss train_step minimises (one micro-batch, fp32).
            grads = {}
            for name, model in (("plain", plain), ("ddp", wrapped)):
                terms, _ = objective(model, data)
                (terms.float() * weights).sum().backward()
                grads[name] = {n: (p.grad.detach().clone() if p.grad is not None else None)
                               for n, p in (bare if name == "ddp" else plain).named_parameters()}
                model.zero_grad(set_to_none=True)
            none_differs = [n for n in grads["plain"] if (grads["plain"][n] is None) != (grads["ddp"][n] is None)]
            diffs = {n: (grads["ddp"][n] - g).abs().max().item() for n, g in grads["plain"].items()
                     if g is not None and grads["ddp"][n] is not None}
            max_grad_diff = max(diffs.values()) if diffs else float("nan")
            worst = max(diffs, key=diffs.get) if diffs else None
            grads_ok = not none_differs and bool(diffs) and all(
                torch.allclose(grads["ddp"][n], grads["plain"][n], rtol=1e-5, atol=1e-7) for n in diffs)

            # One full train_step each (fp32: the comparison is exact up to kernel nondeterminism).
            precision = Precision.create("fp32", device)
            dist = DistInfo(rank=0, local_rank=device.index or 0, world_size=1, device=device, backend=backend)
            losses = {}
            for name, model, params_of in (("plain", plain, plain), ("ddp", wrapped, bare)):
                optimizer = build_optimizer(params_of, 1e-4)
                scheduler = warmup_linear_schedule(optimizer, 0, 10**6)
                out = train_step(model, [data], objective, optimizer, scheduler, precision, dist)
                losses[name] = out.loss.item()
            weight_diff = max((a - b).abs().max().item() for a, b in zip(plain.parameters(), bare.parameters()))
            loss_diff = abs(losses["plain"] - losses["ddp"])
            steps_ok = weight_diff <= 1e-6 and loss_diff <= 1e-5 * max(1.0, abs(losses["plain"]))
            nccl = ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else None
        finally:
            torch_dist.destroy_process_group()
    details = dict(backend=backend, nccl_version=nccl, init_method="file://", world_size=1, batch=batch,
                   config=CONFIGS[quick].name, parameters_compared=len(diffs), grad_none_differs=none_differs,
                   max_grad_abs_diff=max_grad_diff, worst_parameter=worst, grads_ok=grads_ok,
                   train_step_losses=losses, max_weight_abs_diff_after_step=weight_diff, train_step_ok=steps_ok)
    summary = (f"{backend}{' ' + nccl if nccl else ''}: max grad diff {max_grad_diff:.1e} over {len(diffs)} tensors, "
               f"weights after a train_step differ by {weight_diff:.1e}")
    return grads_ok and steps_ok, summary, details


CHECKS = {"precision": check_precision, "gradscaler": check_gradscaler, "sdpa": check_sdpa, "ddp": check_ddp}


def run_checks(names: list[str], device_name: str | None, quick: bool, out: Path | None,
               batch: int | None = None) -> list[dict]:
    import time
    import warnings

    import torch

    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    results = []
    for name in names:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the scheduler-before-optimizer warning of skipped steps, etc.
                passed, summary, details = CHECKS[name](device, quick, batch)
        except Exception as exc:  # recorded, not raised: the next check still runs
            passed, summary = False, f"raised {_first_line(exc)}"
            details = dict(traceback=traceback.format_exc()[-4000:])
        if device.type == "cuda":
            details["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        record = dict(name=name, passed=bool(passed), summary=summary, device=str(device), quick=quick,
                      seconds=round(time.perf_counter() - start, 2), details=details)
        results.append(record)
        print(f"{name}: {'PASS' if passed else 'FAIL'} - {summary}", flush=True)
        if out is not None:
            with open(out, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
    return results


def _command(args: list[str], cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict:
    """Versions, the GPU, CPUs and the git commit; every fact that cannot be found is None."""
    from importlib import metadata

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    env: dict = dict(python=sys.version.split()[0], executable=sys.executable, platform=platform.platform(),
                     cpu_count=os.cpu_count(), cpu_affinity=affinity, omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    packages = {}
    for dist in ("torch", "transformers", "tokenizers", "numpy", "safetensors", "lmdb", "tensorboardX", "protobuf"):
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    env["packages"] = packages
    try:
        import torch

        env.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                   cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                   torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                       gpu_capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                       gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       bf16_supported=torch.cuda.is_bf16_supported(),
                       nccl=".".join(map(str, torch.cuda.nccl.version())))
    except Exception as exc:  # torch missing or broken: the report says so
        env["torch_error"] = _first_line(exc)
    smi = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    if smi:
        lines = smi.splitlines()
        header = [h.strip() for h in lines[0].split(",")]
        env["nvidia_smi"] = [dict(zip(header, (v.strip() for v in line.split(",")))) for line in lines[1:]]
    else:
        env["nvidia_smi"] = None
    commit = _command(["git", "rev-parse", "HEAD"], cwd=REPO)
    status = _command(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO) if commit else None
    env["git_commit"] = commit
    env["git_modified_files"] = len(status.splitlines()) if status is not None else None
    return env


def install_missing(wheels: Path, target: Path) -> int:
    """pip install --no-index the OFFLINE_PACKAGES that do not import, into `target` (which the caller
    puts on PYTHONPATH): no network, no system site-packages touched. Falls back to unpacking the
    wheels when pip is absent or refuses. 0 when every package imports afterwards."""
    import importlib.util

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    missing = [dist for module, dist in OFFLINE_PACKAGES.items() if not importable(module)]
    print(f"present: {', '.join(d for m, d in OFFLINE_PACKAGES.items() if d not in missing) or 'none'}; "
          f"missing: {', '.join(missing) or 'none'}", flush=True)
    if not missing:
        return 0
    # pip writes some names lower-cased (tensorboardx-2.6.5-py3-none-any.whl)
    files = {dist: sorted(set(wheels.glob(f"{dist.lower()}-*.whl")) | set(wheels.glob(f"{dist}-*.whl")))
             for dist in missing}
    lacking = [d for d, found in files.items() if not found]
    if lacking:
        print(f"no wheel in {wheels} for {', '.join(lacking)}: run `bash benchmarks/device_check.sh --prepare` "
              "on a machine with PyPI and carry .device/", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    available = [d for d in missing if files[d]]
    if available:
        pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-deps",
               "--target", str(target), "--quiet", *available]
        print(" ".join(pip), flush=True)
        if subprocess.run(pip).returncode != 0:
            import zipfile

            print("pip failed: unpacking the wheels instead", flush=True)
            for dist in available:
                with zipfile.ZipFile(files[dist][-1]) as whl:
                    whl.extractall(target)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    failed = [module for module, dist in OFFLINE_PACKAGES.items() if dist in missing
              and subprocess.run([sys.executable, "-c", f"import {module}"], env=env).returncode != 0]
    print(f"still not importable: {', '.join(failed)}" if failed else "every offline package imports", flush=True)
    return 1 if failed else 0


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _tail(path: Path, chars: int) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")
    return text[-chars:]


def read_steps(work: Path) -> list[dict]:
    """steps.tsv of device_check.sh: name, kind, rc (or "skipped"), seconds, limit, estimate, command."""
    steps = []
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        fields = line.split("\t")
        if len(fields) < 7:
            continue
        name, kind, rc, seconds, limit, estimate, command = fields[:7]
        if rc == "skipped":
            status, code = "skipped (budget)", None
        else:
            code = int(rc)
            status = "ok" if code == 0 else "timeout" if code in (124, 137) else "failed"
        step = dict(name=name, kind=kind, status=status, rc=code, seconds=float(seconds), limit_s=int(limit),
                    estimate_s=int(estimate), command=command)
        if status != "ok":
            step["log_tail"] = _tail(work / "logs" / f"{name}.log", 3000)
        steps.append(step)
    return steps


def build_report(work: Path, meta: dict) -> dict:
    steps = read_steps(work)
    checks = _read_jsonl(work / "checks.jsonl")
    seen = {c["name"] for c in checks}
    for step in steps:  # a check whose process died (timeout, crash) wrote nothing: record it failed
        if step["kind"] == "check" and step["status"] != "ok":
            name = step["name"].removeprefix("check_")
            if name not in seen:
                checks.append(dict(name=name, passed=False, summary=f"step {step['status']} (rc {step['rc']})",
                                   details=dict(log_tail=step.get("log_tail", ""))))
    bench = []
    for step in steps:
        if step["kind"] == "bench":
            for row in _read_jsonl(work / "bench" / f"{step['name']}.jsonl"):
                bench.append(dict(row, step=step["name"]))
    env = json.loads((work / "env.json").read_text()) if (work / "env.json").is_file() else {}
    failed_steps = [s["name"] for s in steps if s["status"] != "ok"]
    return dict(
        tool="benchmarks/device_check.sh",
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        summary=dict(checks_total=len(checks), checks_passed=sum(c["passed"] for c in checks),
                     all_checks_passed=bool(checks) and all(c["passed"] for c in checks),
                     bench_rows=len(bench), steps_total=len(steps), steps_failed=failed_steps,
                     seconds=round(sum(s["seconds"] for s in steps), 1)),
        environment=env, checks=checks, bench=bench, steps=steps)


def markdown(report: dict) -> str:
    env = report.get("environment", {})
    smi = env.get("nvidia_smi") or []
    gpu = smi[0] if smi else {}
    lines = [f"# device_check ({report.get('device')}{', quick' if report.get('quick') else ''})", "",
             f"{env.get('gpu') or env.get('platform', '?')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"driver {gpu.get('driver_version', '-')}, {env.get('cpu_count')} CPUs, "
             f"commit {(env.get('git_commit') or 'unknown')[:12]}; {report['created']}", "",
             "| workload | precision | compile | batch | rate | ms/step | TFLOP/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["bench"]:
        lines.append(_bench_line(r))
    with_rows = {r["step"] for r in report["bench"]}
    for s in report["steps"]:
        if s["kind"] == "bench" and s["name"] not in with_rows:
            lines.append(f"| {s['name']} | | | | **{s['status']}** (rc {s['rc']}) | | | |")
    lines += ["", "| check | result | summary |", "|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {c['summary'].replace('|', '/')} |")
    lines += ["", "| step | status | seconds | limit s | estimate s |", "|---|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['limit_s']} | {s['estimate_s']} |")
    summary = report["summary"]
    lines += ["", f"{summary['checks_passed']}/{summary['checks_total']} checks passed, "
                  f"{summary['bench_rows']} bench rows, {len(summary['steps_failed'])} steps not ok, "
                  f"{summary['seconds']:.0f} s in steps."]
    return "\n".join(lines) + "\n"


def _bench_line(row: dict) -> str:
    """One bench_model.py Result as a table row; a field it lacks shows as "?" rather than losing the report."""
    def number(key, spec):
        value = row.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "?"

    compiled = "yes" if row.get("compile") else "no"
    return (f"| {row.get('workload', '?')} | {row.get('precision', '?')} | {compiled} | {row.get('batch', '?')} | "
            f"{number('rate', ',.1f')} {row.get('unit', '')}/s | {number('step_ms', '.1f')} | "
            f"{number('tflops', '.2f')} | {number('peak_memory_gib', '.2f')} |")


def write_report(work: Path, out: Path, meta: dict, show: bool = False) -> dict:
    report = build_report(work, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    (out / "device_check.md").write_text(text)
    if show:
        print(text)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="run checks, append one JSON line each to --out")
    c.add_argument("names", nargs="+", choices=sorted(CHECKS))
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    c.add_argument("--quick", action="store_true", help="config/vilbert_tiny.json, batch 4")
    c.add_argument("--batch", type=int, default=None, help="override each check's batch size")
    c.add_argument("--out", type=Path, default=None)
    e = sub.add_parser("env", help="the environment as JSON")
    e.add_argument("--out", type=Path, default=None)
    i = sub.add_parser("install", help="install the missing offline packages from a wheel folder")
    i.add_argument("--wheels", type=Path, default=REPO / ".device" / "wheels")
    i.add_argument("--target", type=Path, required=True)
    r = sub.add_parser("report", help="device_check.json and device_check.md from device_check.sh's work folder")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", default=None)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--budget", type=int, default=None)
    r.add_argument("--print", action="store_true", help="print the markdown")
    args = p.parse_args(argv)

    if args.command == "check":
        run_checks(args.names, args.device, args.quick, args.out, args.batch)
        return 0
    if args.command == "env":
        text = json.dumps(environment(), indent=1, default=str)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
        return 0
    if args.command == "install":
        return install_missing(args.wheels, args.target)
    write_report(args.work, args.out, dict(device=args.device, quick=args.quick, budget_s=args.budget), args.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
