"""Unit tests of the shared training machinery (vilbert/training): optimizer groups, schedule,
samplers, train_step's global-batch averaging, metric syncing, evaluation, checkpoints, precision."""

import copy
import os
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vilbert.training import (DistInfo, EvalSampler, MetricMeter, ModelLossObjective, Precision, TrainSampler,
                              build_optimizer, capture_rng_state, evaluate, find_latest_checkpoint,
                              load_training_state, parameter_groups, resolve_resume, restore_rng_state,
                              save_checkpoint, train_step, warmup_linear_schedule)
from vilbert.training.checkpoint import cleanup_partial, list_checkpoints

torch.set_num_threads(1)
SINGLE = DistInfo()


@dataclass
class ToyOutput:
    loss: torch.Tensor
    masked_lm_loss: torch.Tensor
    scores: torch.Tensor


class ToyMLM(torch.nn.Module):
    """Token classifier whose loss is a mean over the labelled positions only (as MLM)."""

    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.norm = torch.nn.LayerNorm(width)
        self.out = torch.nn.Linear(width, vocab)

    def forward(self, input_ids, labels):
        scores = self.out(self.norm(self.embed(input_ids)))            # (B, T, V)
        targeted = labels >= 0
        loss = F.cross_entropy(scores[targeted], labels[targeted], reduction="sum") / targeted.sum().clamp(min=1)
        return ToyOutput(loss=loss, masked_lm_loss=loss, scores=scores)

    def save_pretrained(self, directory):
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, os.path.join(directory, "model.safetensors"))
        with open(os.path.join(directory, "config.json"), "w") as f:
            f.write("{}")


class TokenObjective:
    """One term averaged over labelled tokens, plus a token-accuracy statistic."""

    names = ("masked_lm",)
    weights = (1.0,)

    def counts(self, batch):
        return (batch["labels"] >= 0).sum().float().reshape(1)

    def __call__(self, model, batch):
        out = model(**batch)
        targeted = batch["labels"] >= 0
        correct = ((out.scores.argmax(-1) == batch["labels"]) & targeted).sum()
        return out.masked_lm_loss.reshape(1), {"token_accuracy": torch.stack([correct, targeted.sum()]).float()}


def toy_batch(batch_size, length=6, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (batch_size, length), generator=g)
    labels = torch.where(torch.rand(batch_size, length, generator=g) < 0.4, ids, torch.full_like(ids, -1))
    labels[0] = -1  # one sample with no target at all: counts differ between micro-batches
    return {"input_ids": ids, "labels": labels}


def split(batch, sizes):
    out, start = [], 0
    for size in sizes:
        out.append({k: v[start:start + size] for k, v in batch.items()})
        start += size
    return out


def run_steps(micro_batch_sizes, steps=3, seed=0):
    torch.manual_seed(0)
    model = ToyMLM()
    optimizer = build_optimizer(model, lr=1e-2)
    scheduler = warmup_linear_schedule(optimizer, 1, steps)
    precision = Precision.create("fp32", torch.device("cpu"))
    outs = []
    for step in range(steps):
        batch = toy_batch(sum(micro_batch_sizes), seed=seed + step)
        outs.append(train_step(model, split(batch, micro_batch_sizes), TokenObjective(), optimizer, scheduler,
                               precision, SINGLE))
    return model, outs


def test_accumulation_matches_one_big_batch_and_the_global_token_mean():
    whole, whole_outs = run_steps([8])
    pieces, piece_outs = run_steps([3, 1, 4])  # uneven micro-batches with different target counts
    for (name, a), (_, b) in zip(whole.named_parameters(), pieces.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    for a, b in zip(whole_outs, piece_outs):
        torch.testing.assert_close(a.terms, b.terms, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.grad_norm, b.grad_norm, rtol=0, atol=1e-6)
    # The logged term is the mean over every labelled token of the global batch.
    torch.manual_seed(0)
    fresh = ToyMLM()
    batch = toy_batch(8, seed=0)
    expected = fresh(**batch).masked_lm_loss
    torch.testing.assert_close(whole_outs[0].terms[0], expected.detach(), rtol=0, atol=1e-6)


def test_per_micro_batch_mean_would_differ():
    """The check above is not vacuous: averaging micro-batch means gives another loss."""
    torch.manual_seed(0)
    model = ToyMLM()
    batch = toy_batch(8, seed=0)
    parts = split(batch, [3, 1, 4])
    with torch.no_grad():
        naive = sum(model(**p).masked_lm_loss for p in parts) / 3
        assert abs(float(naive) - float(model(**batch).masked_lm_loss)) > 1e-3


def test_step_updates_parameters_and_clips_gradients():
    torch.manual_seed(0)
    model = ToyMLM()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(model, lr=1e-2)
    scheduler = warmup_linear_schedule(optimizer, 0, 10)
    out = train_step(model, [toy_batch(4)], TokenObjective(), optimizer, scheduler,
                     Precision.create("fp32", torch.device("cpu")), SINGLE, max_grad_norm=1e-3)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert float(out.grad_norm) > 1e-3  # reported before clipping
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
    assert out.num_samples == 4


def test_metric_meter_syncs_once_and_averages_over_steps():
    _, outs = run_steps([4], steps=3)
    meter = MetricMeter(("masked_lm",), torch.device("cpu"))
    for out in outs:
        meter.update(out)
    values = meter.compute(SINGLE, weights=(1.0,), prefix="train/")
    expected = sum(float(o.terms[0]) for o in outs) / 3
    assert values["train/masked_lm"] == pytest.approx(expected, abs=1e-6)
    assert values["train/loss"] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= values["train/token_accuracy"] <= 1.0
    assert values["train/samples_per_s"] > 0
    assert meter.steps == 0  # reset after compute


def test_evaluate_averages_over_all_targets_and_restores_train_mode():
    torch.manual_seed(0)
    model = ToyMLM()
    model.train()
    batch = toy_batch(9, seed=5)
    loader = split(batch, [4, 4, 1])
    result = evaluate(model, loader, TokenObjective(), Precision.create("fp32", torch.device("cpu")), SINGLE)
    with torch.no_grad():
        expected = model(**batch).masked_lm_loss
    assert result["masked_lm"] == pytest.approx(float(expected), abs=1e-6)
    assert result["loss"] == pytest.approx(float(expected), abs=1e-6)
    assert "token_accuracy" in result
    assert model.training


def test_model_loss_objective_counts_samples():
    objective = ModelLossObjective(batch_key="input_ids")
    batch = toy_batch(5)
    assert objective.counts(batch).tolist() == [5.0]
    torch.manual_seed(0)
    terms, stats = objective(ToyMLM(), batch)
    assert terms.shape == (1,) and stats == {}


def test_parameter_groups_decay_scaled_lr_prefix_and_frozen():
    torch.manual_seed(0)
    model = ToyMLM()
    model.embed.weight.requires_grad_(False)
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.01, scaled_lr=["out.weight"],
                              lr_by_prefix={"norm.": 5e-2})
    by_name = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["param_names"]}
    assert "embed.weight" not in by_name                        # frozen: not optimised
    assert by_name["out.weight"] == (pytest.approx(1e-4), 0.01)  # 0.1x lr (BERT-initialised), decayed
    assert by_name["out.bias"] == (1e-3, 0.0)                    # bias: no decay
    assert by_name["norm.weight"] == (5e-2, 0.0)                 # LayerNorm: no decay; prefix lr
    assert by_name["norm.bias"] == (5e-2, 0.0)


def test_parameter_groups_use_the_models_no_decay_names():
    from vilbert import ViLBertConfig, ViLBertForPretraining
    from pathlib import Path

    config = ViLBertConfig.from_json_file(Path(__file__).resolve().parents[1] / "config" / "vilbert_tiny.json")
    model = ViLBertForPretraining(config)
    groups = parameter_groups(model, lr=1e-4)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    layer_norms = {f"{m}.{p}" for m, module in model.named_modules() if isinstance(module, torch.nn.LayerNorm)
                   for p, _ in module.named_parameters(recurse=False)}
    biases = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert layer_norms and no_decay == layer_norms | biases
    assert len(no_decay | decay) == len(list(model.parameters()))


def test_warmup_then_linear_decay():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_linear_schedule(optimizer, warmup_steps=4, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[4:] == sorted(lrs[4:], reverse=True)
    assert lrs[-1] == pytest.approx(1 / 6)
    assert scheduler.get_last_lr()[0] == 0.0


def shard(sampler_args, world_size, epoch=0, start_step=0):
    out = []
    for rank in range(world_size):
        sampler = TrainSampler(*sampler_args, rank=rank, world_size=world_size, seed=7)
        sampler.set_epoch(epoch, start_step)
        out.append(list(sampler))
    return out


def test_train_sampler_shards_global_batches_and_resumes():
    num, batch = 23, 6
    (single,) = shard((num, batch), 1)
    two = shard((num, batch), 2)
    assert len(single) == 18 and all(len(r) == 9 for r in two)  # 3 full global batches, the rest dropped
    for step in range(3):  # each global batch holds the same samples whatever the number of ranks
        global_batch = set(single[step * 6:(step + 1) * 6])
        assert set(two[0][step * 3:(step + 1) * 3]) | set(two[1][step * 3:(step + 1) * 3]) == global_batch
    assert set(two[0]).isdisjoint(two[1])
    assert all(key[0] == 0 for key in single)
    (resumed,) = shard((num, batch), 1, start_step=2)
    assert resumed == single[12:]
    (other_epoch,) = shard((num, batch), 1, epoch=1)
    assert [k[1] for k in other_epoch] != [k[1] for k in single]
    assert shard((num, batch), 1) == [single]  # reproducible


def test_train_sampler_errors():
    with pytest.raises(ValueError, match="not divisible"):
        TrainSampler(10, 5, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TrainSampler(3, 4)


def test_eval_sampler_covers_everything_once():
    keys = [k for rank in range(3) for k in EvalSampler(10, rank, 3)]
    assert sorted(k[1] for k in keys) == list(range(10))
    assert list(EvalSampler(4, 0, 1, keys=False)) == [0, 1, 2, 3]


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_checkpoints_atomic_keep_last_and_resume(tmp_path):
    torch.manual_seed(0)
    model = ToyMLM()
    optimizer = build_optimizer(model, lr=1e-3)
    root = tmp_path / "run" / "checkpoints"
    assert resolve_resume("auto", root) is None  # nothing yet: a fresh start
    for step in (2, 4, 6):
        save_checkpoint(root, step, model, {"optimizer": optimizer.state_dict(), "rng": [capture_rng_state()],
                                            "epoch": 0, "step_in_epoch": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(root)] == ["step-4", "step-6"]
    # A save killed half way (a tmp dir) and an incomplete directory are never picked.
    (root / "step-8.tmp-1234").mkdir()
    (root / "step-9").mkdir()
    (root / "step-9" / "config.json").write_text("{}")
    assert find_latest_checkpoint(root).name == "step-6"
    assert resolve_resume("auto", root).name == "step-6"
    state = load_training_state(resolve_resume("auto", root))
    assert state["global_step"] == 6 and state["step_in_epoch"] == 6
    assert state["optimizer"]["param_groups"]
    cleanup_partial(root)
    assert not (root / "step-8.tmp-1234").exists()
    with pytest.raises(FileNotFoundError, match="no training_state.pt"):
        resolve_resume(str(root / "step-9"), root)
    from safetensors.torch import load_file

    saved = load_file(str(root / "step-6" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_precision_modes():
    cpu = torch.device("cpu")
    assert Precision.create(None, cpu).mode == "fp32"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Precision.create("fp16", cpu)
    with pytest.raises(ValueError, match="must be one of"):
        Precision.create("fp8", cpu)
    bf16 = Precision.create("bf16", cpu)
    layer = torch.nn.Linear(4, 4)
    with bf16.autocast():
        y = layer(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert bf16.state_dict() == {}


def test_fused_adamw_is_chosen_and_matches_foreach():
    from vilbert.training.optim import can_fuse

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 2))
    twin = copy.deepcopy(model)
    fused = build_optimizer(model, lr=1e-2)
    assert fused.defaults["fused"] and can_fuse(fused.param_groups)
    plain = torch.optim.AdamW(parameter_groups(twin, lr=1e-2), lr=1e-2, betas=(0.9, 0.98), eps=1e-8,
                              weight_decay=0.01, foreach=True)
    for _ in range(5):
        x = torch.randn(4, 6)
        for m, opt in ((model, fused), (twin, plain)):
            m(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not can_fuse([{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]}])
