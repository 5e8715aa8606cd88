"""Tests of the generic trainer (sae_theory/training): schedules, the loop's contract with models
and hooks, data sources, checkpoints and bit-exact resume. CPU, tiny problems.

The SAE under test is defined here (an untied ReLU SAE on the base-class helpers) so these tests
do not depend on the model files."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import torch
from torch import Tensor

from sae_theory.data import SparseFeatureModel
from _helpers import assert_same_state, make_data
from sae_theory.models.base import SAEConfig, TrainOutput, UntiedSAE
from sae_theory.training import (
    History,
    TrainConfig,
    as_source,
    latest_checkpoint,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    train,
)

D, M = 8, 16




class TinySAE(UntiedSAE):
    """Untied ReLU SAE that counts ``post_step`` calls and can record the batches it sees."""

    def __init__(self, config: SAEConfig, record: bool = False):
        super().__init__(config)
        self.post_steps = 0
        self.seen: list[Tensor] = [] if record else None

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def training_forward(self, x: Tensor) -> TrainOutput:
        if self.seen is not None:
            self.seen.append(x.detach().clone())
        return super().training_forward(x)

    @torch.no_grad()
    def post_step(self) -> None:
        self.post_steps += 1


class CounterHook:
    """Stateful hook: counts calls, records steps and a running sum of the loss."""

    def __init__(self):
        self.calls, self.steps, self.loss_sum = 0, [], 0.0

    def __call__(self, model, step: int, out: TrainOutput) -> None:
        self.calls += 1
        self.steps.append(step)
        self.loss_sum += float(out.loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "steps": list(self.steps), "loss_sum": self.loss_sum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls, self.steps, self.loss_sum = state["calls"], list(state["steps"]), state["loss_sum"]


class StopAfter:
    """A custom source (Gaussian batches) that raises KeyboardInterrupt on its (n+1)-th draw,
    simulating a killed job."""

    def __init__(self, n: int | None, seed: int = 0):
        self.n, self.draws = n, 0
        self.gen = torch.Generator().manual_seed(seed)

    def next_batch(self, batch_size: int) -> Tensor:
        if self.n is not None and self.draws >= self.n:
            raise KeyboardInterrupt
        self.draws += 1
        return torch.randn(batch_size, D, generator=self.gen)

    def state_dict(self):
        return {"gen": self.gen.get_state(), "draws": self.draws}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
        self.draws = state["draws"]


def make_sae(seed: int = 0, dtype=torch.float32, n_latents: int = M, **kw) -> TinySAE:
    return TinySAE(SAEConfig(d=D, n_latents=n_latents, dtype=dtype, seed=seed), **kw)


def cfg(**kw) -> TrainConfig:
    kw.setdefault("steps", 20)
    kw.setdefault("batch_size", 32)
    kw.setdefault("progress", False)
    kw.setdefault("log_every", 5)
    return TrainConfig(**kw)


# ---------------------------------------------------------------------------------------------
# learning-rate schedules


def test_lr_at__constant_with_warmup_ramp():
    c = TrainConfig(steps=10, lr=1.0, warmup_steps=4)
    # t / W for t <= W = 4, then lr
    assert [lr_at(t, c) for t in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_lr_at__cosine_endpoints_and_midpoint():
    c = TrainConfig(steps=102, lr=2.0, schedule="cosine", warmup_steps=2, min_lr_ratio=0.1)
    # W = 2, S = 102: u = (t - 2) / 100; m = 0.2
    assert lr_at(2, c) == 2.0  # end of warmup
    assert lr_at(52, c) == pytest.approx(0.2 + 1.8 * 0.5)  # u = 1/2: cos = 0
    assert lr_at(102, c) == pytest.approx(0.2)  # u = 1: the floor m
    assert lr_at(3, c) == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi / 100)))


def test_lr_at__wsd_stable_then_linear_decay_to_min():
    c = TrainConfig(steps=10, lr=1.0, schedule="wsd", decay_fraction=0.4, min_lr_ratio=0.2, warmup_steps=2)
    # D = 4 decay steps: stable through t = 6, then 1 - 0.8 (t - 6) / 4
    got = [lr_at(t, c) for t in range(1, 11)]
    want = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert got == pytest.approx(want)


def test_lr_at__rejects_steps_outside_the_run():
    c = TrainConfig(steps=5)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="step"):
            lr_at(bad, c)


def test_train__history_lr_follows_lr_at():
    c = cfg(schedule="cosine", warmup_steps=3, log_every=1)
    h = train(make_sae(), make_data(), c)
    assert [r["lr"] for r in h.rows] == [lr_at(t, c) for t in range(1, 21)]


# ---------------------------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(steps=0), "steps"),
        (dict(steps=10, batch_size=0), "batch_size"),
        (dict(steps=10, lr=-1.0), "lr"),
        (dict(steps=10, optimizer="lion"), "optimizer"),
        (dict(steps=10, optimizer="adam", momentum=0.9), "momentum"),
        (dict(steps=10, optimizer="sgd", momentum=1.0), "momentum"),
        (dict(steps=10, optimizer="sgd", weight_decay=0.1), "weight_decay"),
        (dict(steps=10, weight_decay=0.1), "adamw"),
        (dict(steps=10, betas=(0.9, 1.0)), "betas"),
        (dict(steps=10, schedule="linear"), "schedule"),
        (dict(steps=10, checkpoint_every=5), "checkpoint_dir"),
        (dict(steps=10, warmup_steps=11), "warmup_steps"),
        (dict(steps=10, decay_fraction=0.0), "decay_fraction"),
        (dict(steps=10, decay_fraction=1.5), "decay_fraction"),
        (dict(steps=10, schedule="wsd", warmup_steps=9, decay_fraction=0.2), "warmup_steps"),
        (dict(steps=10, min_lr_ratio=2.0), "min_lr_ratio"),
        (dict(steps=10, grad_clip=0.0), "grad_clip"),
        (dict(steps=10, input_norm="l2"), "input_norm"),
        (dict(steps=10, log_every=0), "log_every"),
    ],
)
def test_TrainConfig__bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_TrainConfig__adamw_weight_decay_is_accepted_and_round_trips():
    c = TrainConfig(steps=10, optimizer="adamw", weight_decay=0.01, checkpoint_dir="x", checkpoint_every=2)
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c


# ---------------------------------------------------------------------------------------------
# the loop


def test_train__reduces_the_loss_on_a_tiny_problem():
    h = train(make_sae(), make_data(), cfg(steps=300, lr=1e-2, log_every=10))
    first, last = h.rows[0]["loss"], h.last("loss")
    assert last < 0.5 * first, (first, last)
    assert h.steps_run == 300 and h.rows[-1]["step"] == 300


def test_train__history_rows_every_log_every_and_the_last_step():
    h = train(make_sae(), make_data(), cfg(steps=23, log_every=5))
    assert [r["step"] for r in h.rows] == [5, 10, 15, 20, 23]
    row = h.rows[-1]
    assert {"step", "loss", "lr", "l0", "mse"} <= row.keys()
    assert 0 <= row["l0"] <= M
    df = h.to_frame()
    assert list(df["step"]) == [5, 10, 15, 20, 23]
    with pytest.raises(KeyError, match="nope"):
        h.last("nope")


def test_train__l0_is_the_mean_number_of_nonzero_codes():
    model = make_sae(record=True)
    h = train(model, make_data(), cfg(steps=1, log_every=1))
    # the codes of step 1 are those of the initial weights on the batch it saw
    init = make_sae()
    expected = float((init.encode(model.seen[0]) != 0).sum(-1).float().mean())
    assert h.rows[0]["l0"] == pytest.approx(expected)


def test_train__hooks_called_once_per_step_with_steps_from_one():
    hook = CounterHook()
    order: list[tuple[str, int]] = []
    train(make_sae(), make_data(), cfg(steps=7), hooks=[hook, lambda m, s, o: order.append(("second", s))])
    assert hook.steps == list(range(1, 8)) and hook.calls == 7
    assert order == [("second", s) for s in range(1, 8)]


def test_train__post_step_called_once_per_step():
    model = make_sae()
    seen_post_steps: list[int] = []
    train(model, make_data(), cfg(steps=9), hooks=[lambda m, s, o: seen_post_steps.append(m.post_steps)])
    assert model.post_steps == 9
    assert seen_post_steps == list(range(1, 10))  # post_step ran before the hook of each step


def test_train__does_not_touch_the_global_rng():
    before = torch.get_rng_state()
    train(make_sae(), make_data(), cfg(steps=5))
    train(make_sae(), SparseFeatureModel(M, D, sparsity=2, seed=0), cfg(steps=5))
    assert torch.equal(before, torch.get_rng_state())


def test_train__same_seed_same_weights_other_seed_other_data():
    a, b, c = make_sae(), make_sae(), make_sae()
    train(a, make_data(), cfg(seed=3))
    train(b, make_data(), cfg(seed=3))
    train(c, make_data(), cfg(seed=4))
    assert_same_state(a, b)
    assert not torch.equal(a.W_dec, c.W_dec)


def test_train__grad_clip_bounds_the_gradient_norm(tmp_path):
    X = 100.0 * make_data()  # large inputs: a large gradient
    clip = 1e-3
    h = train(make_sae(), X, cfg(steps=1, log_every=1, grad_clip=clip, checkpoint_dir=str(tmp_path)))
    assert h.rows[0]["grad_norm"] > 100 * clip  # the raw gradient was far above the clip
    # Adam's first moment after one step is (1 - beta1) g: the clipped gradient has norm = clip
    opt = torch.load(tmp_path / "step_00000001" / "trainer.pt", weights_only=True)["optimizer"]
    norm = math.sqrt(sum(float(s["exp_avg"].pow(2).sum()) for s in opt["state"].values()))
    assert norm / 0.1 == pytest.approx(clip, rel=1e-4)


def test_train__float64_model_gets_float64_batches():
    model = make_sae(dtype=torch.float64, record=True)
    train(model, make_data(), cfg(steps=2))  # float32 data, float64 SAE
    assert all(x.dtype == torch.float64 for x in model.seen)
    assert model.W_dec.dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# data sources and input normalisation


def test_TensorSource__epochs_are_permutations_and_drop_the_last_partial_batch():
    X = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, D)
    src = as_source(X, cfg(seed=0))
    epoch = torch.cat([src.next_batch(3)[:, 0] for _ in range(3)])  # 9 of 10 rows; the 10th dropped
    assert epoch.unique().numel() == 9
    nxt = torch.cat([src.next_batch(3)[:, 0] for _ in range(3)])  # a fresh permutation
    assert nxt.unique().numel() == 9 and src.epoch == 2
    with pytest.raises(ValueError, match="batch_size"):
        src.next_batch(11)


def test_as_source__rejects_objects_without_the_protocol():
    with pytest.raises(TypeError, match="next_batch"):
        as_source(object())
    # an iterable is taken as a sampler of batches (SamplerSource); items that are no tensors fail on the first batch
    with pytest.raises(TypeError, match="an item of SamplerSource.*is a int"):
        as_source([1, 2, 3]).next_batch(2)


def test_train__nan_data_raises_valueerror_naming_step():
    X = make_data()
    X[5, 2] = float("nan")
    with pytest.raises(ValueError, match=r"step \d+.*NaN"):
        train(make_sae(), X, cfg(steps=50, batch_size=50))


def test_train__wrong_width_data_raises():
    with pytest.raises(ValueError, match="d=8"):
        train(make_sae(), torch.randn(100, D + 1), cfg())


def test_train__input_norm_unit_gives_unit_rows_and_keeps_zero_rows_zero():
    class WithZeroRow(StopAfter):
        def next_batch(self, batch_size):
            x = super().next_batch(batch_size)
            x[0] = 0.0
            return x

    model = make_sae(record=True)
    train(model, WithZeroRow(None), cfg(steps=3, input_norm="unit"))
    for x in model.seen:
        norms = x.norm(dim=-1)
        assert norms[0] == 0
        torch.testing.assert_close(norms[1:], torch.ones_like(norms[1:]))


def test_train__input_norm_scale_is_one_constant_from_the_first_batch():
    model = make_sae(record=True)
    h = train(model, make_data(), cfg(steps=5, input_norm="scale"))
    X = make_data()
    first = model.seen[0]
    assert float(first.pow(2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-5)
    c = h.input_scale
    # every batch is c times rows of X
    raw = as_source(X, cfg(steps=5))
    for x in model.seen:
        torch.testing.assert_close(x, c * raw.next_batch(32))


# ---------------------------------------------------------------------------------------------
# checkpoints and exact resume


def _interrupted_then_resumed(data_fn, tmp_path, **kw) -> tuple[TinySAE, CounterHook, History]:
    run = cfg(checkpoint_every=10, checkpoint_dir=str(tmp_path / "ckpt"), **kw)
    first_hook = CounterHook()
    train(make_sae(), data_fn(), TrainConfig(**{**run.to_dict(), "steps": 10}), hooks=[first_hook])
    model, hook = make_sae(), CounterHook()
    history = train(model, data_fn(), run, hooks=[hook], resume="latest")
    return model, hook, history


@pytest.mark.parametrize(
    "data_fn",
    [make_data, lambda: SparseFeatureModel(M, D, sparsity=2, seed=0)],
    ids=["tensor", "feature_model"],
)
def test_train__resume_is_bit_identical_to_an_uninterrupted_run(data_fn, tmp_path):
    ref_model, ref_hook = make_sae(), CounterHook()
    ref_hist = train(ref_model, data_fn(), cfg(), hooks=[ref_hook])
    model, hook, history = _interrupted_then_resumed(data_fn, tmp_path)
    assert_same_state(model, ref_model)
    assert hook.state_dict() == ref_hook.state_dict()
    assert history.rows == ref_hist.rows
    assert history.steps_run == 20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train__resume_is_bit_identical_on_cuda(tmp_path):
    def sae():
        return TinySAE(SAEConfig(d=D, n_latents=M, device="cuda"))

    def data():
        return SparseFeatureModel(M, D, sparsity=2, seed=0, device="cuda")

    ref = sae()
    train(ref, data(), cfg())
    run = cfg(checkpoint_every=10, checkpoint_dir=str(tmp_path))
    train(sae(), data(), TrainConfig(**{**run.to_dict(), "steps": 10}))
    model = sae()
    train(model, data(), run, resume="latest")
    assert_same_state(model, ref)


def test_train__resume_after_a_killed_job_with_cosine_schedule_and_scale(tmp_path):
    """A job with a schedule over 20 steps dies at step 13 (its source raises); resuming from
    the step-10 checkpoint ends bit-identical to the uninterrupted run."""
    run = cfg(schedule="cosine", warmup_steps=4, input_norm="scale", checkpoint_every=10, checkpoint_dir=str(tmp_path))
    ref_model, ref_hook = make_sae(), CounterHook()
    ref = train(ref_model, StopAfter(None), cfg(schedule="cosine", warmup_steps=4, input_norm="scale"), hooks=[ref_hook])
    with pytest.raises(KeyboardInterrupt):
        train(make_sae(), StopAfter(12), run, hooks=[CounterHook()])
    assert latest_checkpoint(tmp_path).name == "step_00000010"
    model, hook = make_sae(), CounterHook()
    h = train(model, StopAfter(None), run, hooks=[hook], resume=tmp_path)
    assert_same_state(model, ref_model)
    assert hook.state_dict() == ref_hook.state_dict()
    assert h.rows == ref.rows and h.input_scale == ref.input_scale


def test_train__checkpoint_folder_layout_and_config(tmp_path):
    train(make_sae(), make_data(), cfg(steps=7, checkpoint_every=3, checkpoint_dir=str(tmp_path)))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step_00000003", "step_00000006", "step_00000007"]  # every 3 and the end
    assert sorted(p.name for p in (tmp_path / "step_00000007").iterdir()) == ["config.json", "sae.safetensors", "trainer.pt"]
    meta = json.loads((tmp_path / "step_00000007" / "config.json").read_text())
    assert meta["sae_class"] == "TinySAE"  # the save_sae keys ...
    assert meta["config"]["n_latents"] == M
    assert "sae_theory_version" in meta
    assert meta["step"] == 7 and meta["train_config"]["steps"] == 7  # ... plus the checkpoint's
    assert latest_checkpoint(tmp_path).name == "step_00000007"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_load_checkpoint__restores_weights_and_history(tmp_path):
    trained = make_sae()
    h = train(trained, make_data(), cfg(steps=6, checkpoint_dir=str(tmp_path)))
    fresh = make_sae()
    loaded = load_checkpoint(tmp_path, fresh)
    assert loaded["step"] == 6 and loaded["history"].rows == h.rows
    assert_same_state(fresh, trained)


def test_save_checkpoint__replaces_an_existing_step_folder(tmp_path):
    a, b = make_sae(seed=0), make_sae(seed=0)
    with torch.no_grad():
        b.W_dec.add_(1.0)
    save_checkpoint(tmp_path, 5, a)
    save_checkpoint(tmp_path, 5, b)
    c = make_sae(seed=0)
    load_checkpoint(tmp_path / "step_00000005", c)
    assert_same_state(c, b)
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000005"]  # no temporary folder left


def test_train__resume_with_another_model_config_raises(tmp_path):
    train(make_sae(), make_data(), cfg(steps=5, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="n_latents"):
        train(make_sae(n_latents=M + 1), make_data(), cfg(steps=10, checkpoint_dir=str(tmp_path)), resume="latest")
    with pytest.raises(ValueError, match="seed"):
        train(make_sae(seed=7), make_data(), cfg(steps=10, checkpoint_dir=str(tmp_path)), resume="latest")


def test_train__resume_with_another_hook_list_raises(tmp_path):
    train(make_sae(), make_data(), cfg(steps=5, checkpoint_dir=str(tmp_path)), hooks=[CounterHook()])
    with pytest.raises(ValueError, match="hook"):
        train(make_sae(), make_data(), cfg(steps=10, checkpoint_dir=str(tmp_path)), resume="latest")


def test_train__resume_latest_without_checkpoints_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(make_sae(), make_data(), cfg(checkpoint_dir=str(tmp_path)), resume="latest")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(make_sae(), make_data(), cfg(), resume="latest")


def test_train__nonfinite_loss_raises_and_saves_the_state_before_the_step(tmp_path):
    c = cfg(steps=10, lr=1e30, checkpoint_dir=str(tmp_path))
    blown = make_sae(record=True)
    with pytest.raises(FloatingPointError, match=r"step \d+.*lower TrainConfig.lr") as info:
        train(blown, make_data(), c)
    bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert bad_step >= 2  # step 1 starts from finite initial weights
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == f"step_{bad_step - 1:08d}"
    # that checkpoint is exactly the state of a run stopped at bad_step - 1 ...
    ref = make_sae()
    train(ref, make_data(), TrainConfig(**{**c.to_dict(), "steps": bad_step - 1, "checkpoint_dir": None}))
    saved = make_sae()
    assert load_checkpoint(ckpt, saved)["step"] == bad_step - 1
    assert_same_state(saved, ref)
    # ... with the data stream before the bad batch: resuming replays it (and fails the same way)
    again = make_sae(record=True)
    with pytest.raises(FloatingPointError, match=f"at step {bad_step} "):
        train(again, make_data(), TrainConfig(**{**c.to_dict(), "checkpoint_dir": None}), resume=ckpt)
    assert torch.equal(again.seen[0], blown.seen[-1])


def test_train__nonfinite_loss_without_checkpointing_raises():
    with pytest.raises(FloatingPointError, match="lr"):
        train(make_sae(), make_data(), cfg(steps=10, lr=1e30))


def test_load_checkpoint__refuses_another_model_class(tmp_path):
    class OtherTiny(TinySAE):
        pass

    save_checkpoint(tmp_path, 1, make_sae())
    with pytest.raises(ValueError, match="holds a TinySAE but the model is a OtherTiny"):
        load_checkpoint(tmp_path, OtherTiny(SAEConfig(d=D, n_latents=M)))


# ---------------------------------------------------------------------------------------------
# checkpoints are save_sae folders


@pytest.fixture
def relu_run(tmp_path):
    """A registered SAE trained 12 steps with checkpoints at 5, 10 and 12."""
    from sae_theory.models import ReLUSAE

    model = ReLUSAE(d=D, n_latents=M, l1_coefficient=0.05, seed=2)
    train(model, make_data(), cfg(steps=12, checkpoint_every=5, checkpoint_dir=str(tmp_path / "ckpt")))
    return model, tmp_path / "ckpt"


def test_load_sae__opens_a_checkpoint_step_folder_and_a_checkpoint_dir(relu_run):
    from sae_theory.io import load_sae

    model, ckpt = relu_run
    for where in (ckpt / "step_00000012", ckpt):  # the last step; the dir's latest step
        loaded = load_sae(where)
        assert type(loaded) is type(model) and loaded.config == model.config
        assert_same_state(loaded, model)
    earlier = load_sae(ckpt / "step_00000005")
    assert not torch.equal(earlier.W_dec, model.W_dec)  # an earlier step is that step's weights


def test_load_sae__a_checkpoint_dir_ignores_incomplete_and_temporary_steps(relu_run):
    from sae_theory.io import load_sae

    model, ckpt = relu_run
    (ckpt / "step_00000099").mkdir()  # no files: incomplete
    (ckpt / ".step_00000100.tmp1").mkdir()  # a killed writer's temporary folder
    assert latest_checkpoint(ckpt).name == "step_00000012"
    assert_same_state(load_sae(ckpt), model)


def test_load_sae__checkpoint_of_an_unregistered_class_says_so(tmp_path):
    from sae_theory.io import load_sae

    train(make_sae(), make_data(), cfg(steps=2, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"config.json names SAE class 'TinySAE'"):
        load_sae(tmp_path)


def test_save_checkpoint__writes_the_model_through_the_save_sae_writer(tmp_path, monkeypatch):
    """One writer: save_sae and checkpoints both call io.write_sae_files."""
    import sae_theory.io as sio
    import sae_theory.training.checkpoint as ckpt_mod
    from sae_theory.models import ReLUSAE

    calls = []
    real = sio.write_sae_files

    def spy(model, folder, **kw):
        calls.append(kw.get("extra"))
        return real(model, folder, **kw)

    monkeypatch.setattr(sio, "write_sae_files", spy)
    monkeypatch.setattr(ckpt_mod, "write_sae_files", spy)
    model = ReLUSAE(d=D, n_latents=M, seed=0)
    sio.save_sae(model, tmp_path / "saved")
    save_checkpoint(tmp_path / "ckpt", 3, model, cfg())
    assert calls == [None, {"step": 3, "train_config": cfg().to_dict()}]
    a, b = (tmp_path / "saved" / "sae.safetensors").read_bytes(), (tmp_path / "ckpt" / "step_00000003" / "sae.safetensors").read_bytes()
    assert a == b  # byte-identical weights files


def test_train__resume_from_a_registered_sae_step_folder_is_bit_identical(relu_run):
    """Resume still bit-identical with the save_sae layout: continue 10 -> 20 from the step-10
    folder and compare with an uninterrupted 20-step run."""
    from sae_theory.models import ReLUSAE

    _, ckpt = relu_run
    ref = ReLUSAE(d=D, n_latents=M, l1_coefficient=0.05, seed=2)
    ref_hist = train(ref, make_data(), cfg(steps=20))
    again = ReLUSAE(d=D, n_latents=M, l1_coefficient=0.05, seed=2)
    hist = train(again, make_data(), cfg(steps=20), resume=ckpt / "step_00000010")
    assert_same_state(again, ref)
    assert hist.rows == ref_hist.rows


# ---------------------------------------------------------------------------------------------
# the trainer's L0 is metrics.l0


def _l0_before(codes: Tensor) -> float:
    """The trainer's own L0 before it used metrics.l0 (kept here as the reference)."""
    codes = codes.detach()
    if codes.is_sparse:
        codes = codes.to_dense()
    codes = codes.reshape(-1, codes.shape[-1])
    return float((codes != 0).sum(-1).to(torch.float64).mean())


@pytest.mark.parametrize("shape", [(7, 13), (1, 5), (3, 4, 13), (2, 3, 2, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metrics_l0__equals_the_trainers_former_l0_dense_sparse_and_batched(shape, dtype):
    from sae_theory.metrics import l0

    g = torch.Generator().manual_seed(sum(shape))
    codes = torch.relu(torch.randn(shape, generator=g, dtype=dtype)).requires_grad_(True)
    want = _l0_before(codes)
    got = l0(codes)
    assert type(got) is float and got == want
    assert l0(codes.detach().to_sparse()) == want
    assert l0(-codes) == want  # signed codes count


def test_train__history_l0_is_metrics_l0_of_the_step_codes():
    from sae_theory.metrics import l0

    model = make_sae(record=True)
    h = train(model, make_data(), cfg(steps=1, log_every=1))
    assert h.rows[0]["l0"] == l0(make_sae().encode(model.seen[0]))


# ---------------------------------------------------------------------------------------------
# argument types (sae_theory._checks)


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        (dict(steps=10.0), TypeError, "steps must be an integer"),
        (dict(steps=True), TypeError, "steps must be an integer"),
        (dict(steps=10, batch_size="32"), TypeError, "batch_size must be an integer"),
        (dict(steps=10, lr=True), TypeError, "lr must be a real number"),
        (dict(steps=10, lr=float("nan")), ValueError, r"lr must be a finite number > 0"),
        (dict(steps=10, betas=(0.9, "x")), TypeError, r"betas\[1\]"),
        (dict(steps=10, betas=(0.9,)), ValueError, "betas must be two numbers"),
        (dict(steps=10, grad_clip=float("inf")), ValueError, "grad_clip"),
        (dict(steps=10, checkpoint_every=2.5, checkpoint_dir="x"), TypeError, "checkpoint_every"),
        (dict(steps=10, progress=1), TypeError, "progress must be True or False"),
    ],
)
def test_TrainConfig__wrong_types_raise_typeerror_naming_the_field(kwargs, error, field):
    with pytest.raises(error, match=field):
        TrainConfig(**kwargs)


def test_lr_at__non_integer_step_raises_typeerror():
    with pytest.raises(TypeError, match="step"):
        lr_at(1.0, TrainConfig(steps=5))
    with pytest.raises(ValueError, match=r"step \(of a run with steps=5\) must be <= 5"):
        lr_at(6, TrainConfig(steps=5))


def test_check_real__bounds_types_and_messages():
    from sae_theory._checks import check_real

    assert check_real("x", 2) == 2.0 and type(check_real("x", 2)) is float
    assert check_real("x", 0.0, minimum=0) == 0.0
    assert check_real("x", 1.0, minimum=0, maximum=1) == 1.0
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0.0"):
        check_real("x", 0.0, minimum=0, include_minimum=False)
    with pytest.raises(ValueError, match=r"x must be a finite number in \[0, 1\), got 1"):
        check_real("x", 1, minimum=0, maximum=1, include_maximum=False)
    with pytest.raises(ValueError, match=r"x must be a finite number <= 3"):
        check_real("x", 4, maximum=3)
    with pytest.raises(ValueError, match=r"x must be a finite number, got inf"):
        check_real("x", float("inf"))
    for bad in (True, "1", None, torch.tensor(1.0), 1j):
        with pytest.raises(TypeError, match="x must be a real number"):
            check_real("x", bad)


def test_SparsityController__checks_name_the_field():
    from sae_theory.training import SparsityController

    with pytest.raises(ValueError, match="target_l0 must be a finite number > 0"):
        SparsityController(target_l0=0.0)
    with pytest.raises(TypeError, match="gain must be a real number"):
        SparsityController(target_l0=1.0, gain=None)
    with pytest.raises(TypeError, match="warmup_steps must be an integer"):
        SparsityController(target_l0=1.0, warmup_steps=2.0)
    with pytest.raises(ValueError, match="log_every must be >= 1"):
        SparsityController(target_l0=1.0, log_every=0)
