"""Resume is the same run or an error (issue 13, point 1): a checkpoint of another run (other
TrainConfig, model or hooks) is refused naming every differing field, a fresh run does not write
into another run's checkpoints, an unwritable checkpoint_dir fails before step 1, a killed save's
temporary folder is cleaned, a damaged checkpoint is named (and skipped by resume="latest").
CPU, a tiny SAE, a few steps."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from _helpers import assert_same_state, make_data
from sae_theory.models.base import SAEConfig, UntiedSAE
from sae_theory.training import TrainConfig, load_checkpoint, train

D, M = 8, 16


class TinySAE(UntiedSAE):
    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)


class CounterHook:
    """Stateful hook without a config: counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, step: int, out) -> None:
        self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"]


@dataclasses.dataclass
class NudgeHook:
    """A dataclass hook: ``factor`` is config, ``total`` is state (in its state_dict)."""

    factor: float = 1.0
    total: float = 0.0

    def __call__(self, model, step: int, out) -> None:
        self.total += self.factor

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = state["total"]


def make_sae(seed: int = 0, n_latents: int = M) -> TinySAE:
    return TinySAE(SAEConfig(d=D, n_latents=n_latents, seed=seed))


def cfg(**kw) -> TrainConfig:
    kw.setdefault("steps", 10)
    kw.setdefault("batch_size", 32)
    kw.setdefault("progress", False)
    kw.setdefault("log_every", 5)
    return TrainConfig(**kw)


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its contents (to check that nothing was changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def run10(tmp_path):
    """A 10-step run (checkpoints at 5 and 10) in tmp_path/ckpt, with its config."""
    c = cfg(checkpoint_every=5, checkpoint_dir=str(tmp_path / "ckpt"))
    train(make_sae(), make_data(), c)
    return c, tmp_path / "ckpt"


# ---------------------------------------------------------------------------------------------
# the saved TrainConfig, model and hooks against the current ones


@pytest.mark.parametrize(
    "field, value, saved_text, given_text",
    [
        ("lr", 2e-3, "0.001", "0.002"),
        ("batch_size", 16, "32", "16"),
        ("seed", 3, "0", "3"),
        ("optimizer", "sgd", "'adam'", "'sgd'"),
        ("input_norm", "unit", "'none'", "'unit'"),
        ("schedule", "cosine", "'constant'", "'cosine'"),
        ("grad_clip", 1.0, "None", "1.0"),
    ],
)
def test_resume__a_differing_TrainConfig_field_is_named_with_both_values(run10, field, value, saved_text, given_text):
    c, ckpt = run10
    before = folder_bytes(ckpt)
    model = make_sae()
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}: saved {saved_text}, given {given_text}"):
        train(model, make_data(), cfg(**{**c.to_dict(), "steps": 20, field: value}), resume="latest")
    assert_same_state(model, make_sae())  # nothing loaded
    assert folder_bytes(ckpt) == before  # nothing written or deleted


def test_resume__every_differing_field_is_named_in_one_error(run10):
    c, ckpt = run10
    changed = cfg(**{**c.to_dict(), "lr": 5e-3, "batch_size": 8, "momentum": 0.0, "eps": 1e-6})
    with pytest.raises(ValueError) as info:
        train(make_sae(seed=4), make_data(), changed, hooks=[CounterHook()], resume=ckpt / "step_00000010")
    msg = str(info.value)
    for part in ("TrainConfig.lr: saved 0.001, given 0.005", "TrainConfig.batch_size: saved 32, given 8",
                 "TrainConfig.eps: saved 1e-08, given 1e-06", "model config seed: saved 0, given 4",
                 "hooks: saved 0 (), given 1 (CounterHook)", str(ckpt / "step_00000010")):
        assert part in msg
    assert "momentum" not in msg  # equal fields are not named


def test_resume__steps_logging_progress_and_checkpoint_fields_may_change(tmp_path):
    """A run of 10 steps resumed to 20 with other log_every, progress, checkpoint_every,
    checkpoint_dir and overwrite_checkpoints ends bit-identical to an uninterrupted 20-step run."""
    ref = make_sae()
    train(ref, make_data(), cfg(steps=20))
    first = cfg(steps=10, log_every=5, progress=False, checkpoint_every=5, checkpoint_dir=str(tmp_path / "a"))
    train(make_sae(), make_data(), first)
    again = make_sae()
    changed = cfg(steps=20, log_every=3, progress=True, checkpoint_every=4, checkpoint_dir=str(tmp_path / "b"), overwrite_checkpoints=True)
    h = train(again, make_data(), changed, resume=tmp_path / "a")
    assert_same_state(again, ref)
    assert h.steps_run == 20
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["step_00000012", "step_00000016", "step_00000020"]
    # the new folder continues the run: resuming from it is allowed too
    last = make_sae()
    train(last, make_data(), cfg(**{**changed.to_dict(), "progress": False}), resume="latest")
    assert_same_state(last, ref)


def test_resume__hook_kinds_and_configs_are_compared_and_state_fields_are_not(tmp_path):
    c = cfg(checkpoint_dir=str(tmp_path))
    train(make_sae(), make_data(), c, hooks=[NudgeHook(factor=2.0)])
    more = cfg(**{**c.to_dict(), "steps": 12})
    with pytest.raises(ValueError, match=r"hooks\[0\] \(NudgeHook\) factor: saved 2\.0, given 3\.0"):
        train(make_sae(), make_data(), more, hooks=[NudgeHook(factor=3.0)], resume="latest")
    with pytest.raises(ValueError, match=r"hooks\[0\]: saved a NudgeHook, given a CounterHook"):
        train(make_sae(), make_data(), more, hooks=[CounterHook()], resume="latest")
    hook = NudgeHook(factor=2.0, total=100.0)  # total is state (restored), not config
    train(make_sae(), make_data(), more, hooks=[hook], resume="latest")
    assert hook.total == 24.0


@pytest.mark.parametrize("saved, given", [("adam", "sgd"), ("sgd", "adam")])
def test_resume__adam_against_sgd_is_reported_by_name(tmp_path, saved, given):
    train(make_sae(), make_data(), cfg(optimizer=saved, checkpoint_dir=str(tmp_path)))
    model = make_sae()
    with pytest.raises(ValueError, match=rf"TrainConfig\.optimizer: saved '{saved}', given '{given}'"):
        train(model, make_data(), cfg(steps=20, optimizer=given, checkpoint_dir=str(tmp_path)), resume="latest")
    assert_same_state(model, make_sae())
    # load_checkpoint with an optimizer of the other kind (no TrainConfig to compare) says so too
    other = make_sae()
    opt = torch.optim.SGD(other.parameters(), lr=0.1) if given == "sgd" else torch.optim.Adam(other.parameters())
    with pytest.raises(ValueError, match=rf"saved with optimizer '{saved}', the optimizer given is a {type(opt).__name__}"):
        load_checkpoint(tmp_path, other, optimizer=opt)
    assert opt.state_dict()["state"] == {}


# ---------------------------------------------------------------------------------------------
# the checkpoint folder: another run's checkpoints, writability, temporary folders


def test_train__fresh_run_into_another_runs_checkpoints_is_refused_unless_overwrite(run10):
    c, ckpt = run10
    before = folder_bytes(ckpt)
    other = cfg(**{**c.to_dict(), "lr": 3e-3})
    model = make_sae()
    with pytest.raises(FileExistsError, match=r"already holds checkpoints.*resume=\"latest\".*new checkpoint_dir.*overwrite_checkpoints=True"):
        train(model, make_data(), other)
    assert_same_state(model, make_sae())
    assert folder_bytes(ckpt) == before
    # an incomplete step folder counts too
    (ckpt / "step_00000099").mkdir()
    with pytest.raises(FileExistsError, match="step_00000099"):
        train(make_sae(), make_data(), other)
    # with overwrite_checkpoints the old steps go first; the run is that of an empty folder
    model = make_sae()
    train(model, make_data(), cfg(**{**other.to_dict(), "overwrite_checkpoints": True}))
    ref = make_sae()
    train(ref, make_data(), cfg(**{**other.to_dict(), "checkpoint_every": None, "checkpoint_dir": None}))
    assert_same_state(model, ref)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000005", "step_00000010"]
    assert load_checkpoint(ckpt, make_sae())["config"]["train_config"]["lr"] == 3e-3


def test_resume_latest__never_picks_up_another_runs_checkpoint(run10):
    c, ckpt = run10
    model, hook = make_sae(seed=5), CounterHook()
    with pytest.raises(ValueError, match=r"model config seed: saved 0, given 5.*TrainConfig\.lr: saved 0\.001, given 0\.01"):
        train(model, make_data(), cfg(**{**c.to_dict(), "steps": 20, "lr": 1e-2}), resume="latest")
    assert_same_state(model, make_sae(seed=5))
    assert hook.calls == 0


def test_TrainConfig__overwrite_checkpoints_is_a_bool():
    assert TrainConfig(steps=1).overwrite_checkpoints is False
    with pytest.raises(TypeError, match="overwrite_checkpoints"):
        TrainConfig(steps=1, overwrite_checkpoints=1)


@pytest.mark.parametrize("resume", [False, True])
def test_train__unwritable_checkpoint_dir_fails_before_step_1(tmp_path, resume):
    c = cfg(checkpoint_dir=str(tmp_path / "ok"))
    train(make_sae(), make_data(), c, hooks=[CounterHook()])
    (tmp_path / "a_file").write_text("not a folder")
    bad = tmp_path / "a_file" / "ckpt"  # its parent is a file: it cannot be created
    model, hook = make_sae(), CounterHook()
    with pytest.raises(OSError, match=str(bad)):
        train(model, make_data(), cfg(steps=20, checkpoint_dir=str(bad)), hooks=[hook],
              resume=tmp_path / "ok" if resume else None)
    assert hook.calls == 0  # no step ran
    assert_same_state(model, make_sae())


def test_train__a_killed_saves_temporary_folders_are_removed_at_the_next_start(tmp_path):
    c = cfg(checkpoint_every=5, checkpoint_dir=str(tmp_path))
    tmp = tmp_path / ".step_00000005.tmp4242"  # a save killed half-way
    tmp.mkdir(parents=True)
    (tmp / "sae.safetensors").write_bytes(b"half")
    train(make_sae(), make_data(), c)  # a fresh run: the temporary folder is no other run's checkpoint
    assert not tmp.exists()
    tmp.mkdir()
    train(make_sae(), make_data(), cfg(**{**c.to_dict(), "steps": 12}), resume="latest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005", "step_00000010", "step_00000012"]


# ---------------------------------------------------------------------------------------------
# damaged checkpoints


def test_resume_latest__a_truncated_latest_step_falls_back_to_the_previous_one(run10, tmp_path):
    c, ckpt = run10
    truncate(ckpt / "step_00000010" / "sae.safetensors")
    spare = tmp_path / "spare"
    shutil.copytree(ckpt, spare)
    more = cfg(**{**c.to_dict(), "steps": 20})
    model = make_sae()
    with pytest.warns(UserWarning, match=r"step_00000010.*sae\.safetensors.*step_00000005"):
        train(model, make_data(), more, resume="latest")
    from_5 = make_sae()
    train(from_5, make_data(), cfg(**{**more.to_dict(), "checkpoint_every": None, "checkpoint_dir": None}), resume=spare / "step_00000005")
    assert_same_state(model, from_5)
    ref = make_sae()
    train(ref, make_data(), cfg(steps=20))
    assert_same_state(model, ref)


@pytest.mark.parametrize("damaged", ["sae.safetensors", "trainer.pt", "config.json"])
def test_resume__a_damaged_checkpoint_given_itself_raises_naming_it(run10, damaged):
    c, ckpt = run10
    step = ckpt / "step_00000010"
    truncate(step / damaged)
    before = folder_bytes(ckpt)
    model = make_sae()
    with pytest.raises(ValueError, match=rf"{step}' is damaged: {damaged}"):
        train(model, make_data(), cfg(**{**c.to_dict(), "steps": 20}), resume=step)
    assert_same_state(model, make_sae())
    assert folder_bytes(ckpt) == before


def test_resume__other_data_raises_before_the_model_or_folder_is_changed(run10, tmp_path):
    c, ckpt = run10
    new_dir = tmp_path / "new"
    model = make_sae()
    with pytest.raises(ValueError, match="rows"):
        train(model, make_data(n=150), cfg(**{**c.to_dict(), "steps": 20, "checkpoint_dir": str(new_dir)}), resume=ckpt)
    assert_same_state(model, make_sae())
    assert not new_dir.exists()


def test_resume__into_another_folder_holding_a_third_runs_checkpoints_is_refused_unless_overwrite(run10, tmp_path):
    c, ckpt = run10
    third = tmp_path / "third"
    train(make_sae(seed=7), make_data(), cfg(checkpoint_every=5, checkpoint_dir=str(third), seed=7))
    before = folder_bytes(third)
    more = cfg(**{**c.to_dict(), "steps": 20, "checkpoint_dir": str(third)})
    model = make_sae()
    with pytest.raises(FileExistsError, match=rf"{third}.*already holds checkpoints.*step_00000010"):
        train(model, make_data(), more, resume=ckpt)
    assert_same_state(model, make_sae())
    assert folder_bytes(third) == before
    # with overwrite_checkpoints the third run's steps go first; the resumed run is the same run
    model = make_sae()
    train(model, make_data(), cfg(**{**more.to_dict(), "overwrite_checkpoints": True}), resume=ckpt)
    ref = make_sae()
    train(ref, make_data(), cfg(steps=20))
    assert_same_state(model, ref)
    assert sorted(p.name for p in third.iterdir()) == ["step_00000015", "step_00000020"]
    assert load_checkpoint(third, make_sae())["config"]["train_config"]["seed"] == 0


def test_resume__from_an_earlier_step_of_its_own_folder_is_not_refused(run10):
    c, ckpt = run10
    model = make_sae()
    train(model, make_data(), cfg(**{**c.to_dict(), "steps": 15}), resume=ckpt / "step_00000005")
    ref = make_sae()
    train(ref, make_data(), cfg(steps=15))
    assert_same_state(model, ref)


def test_load_sae__a_checkpoint_dir_with_a_truncated_latest_step_loads_the_newest_intact_one(tmp_path):
    from sae_theory.io import load_sae
    from sae_theory.models.relu import ReLUSAE, ReLUSAEConfig

    ckpt = tmp_path / "relu"  # a registered class: load_sae rebuilds it from config.json
    train(ReLUSAE(ReLUSAEConfig(d=D, n_latents=M)), make_data(), cfg(checkpoint_every=5, checkpoint_dir=str(ckpt)))
    at_5 = load_sae(ckpt / "step_00000005")
    truncate(ckpt / "step_00000010" / "sae.safetensors")
    with pytest.warns(UserWarning, match=r"step_00000010.*sae\.safetensors.*step_00000005"):
        model = load_sae(ckpt)
    assert_same_state(model, at_5)
    truncate(ckpt / "step_00000005" / "config.json")
    with pytest.raises(ValueError, match=r"every checkpoint in .*relu is damaged: step_00000010.*step_00000005"):
        load_sae(ckpt)


def test_keep_checkpoints__only_the_newest_step_folders_stay_and_resume_from_them_is_exact(tmp_path):
    ref = make_sae()
    train(ref, make_data(), cfg(steps=20))
    c = cfg(steps=14, checkpoint_every=3, checkpoint_dir=str(tmp_path / "ckpt"), keep_checkpoints=2)
    train(make_sae(), make_data(), c)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000012", "step_00000014"]
    # keep_checkpoints may change on resume (it is not part of the run)
    again = make_sae()
    train(again, make_data(), cfg(**{**c.to_dict(), "steps": 20, "keep_checkpoints": 1}), resume="latest")
    assert_same_state(again, ref)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step_00000020"]


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_TrainConfig__keep_checkpoints_is_a_positive_int_or_none(bad):
    with pytest.raises((TypeError, ValueError), match="keep_checkpoints"):
        cfg(keep_checkpoints=bad)
