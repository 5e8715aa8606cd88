"""Tests of the run profiles (quick/full), device resolution and the dtype guard."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sae_theory import profiles
from sae_theory.profiles import PROFILE_NAMES, FeatureModelScale, Profile, get_profile, resolve_device


@pytest.mark.parametrize("name", ["quick", "full"])
def test_get_profile__named_profiles(name):
    P = get_profile(name, device="cpu")
    assert isinstance(P, Profile) and P.name == name and P.device == "cpu"
    assert P.theory_dtype == torch.float64 and P.dtype == torch.float32
    assert isinstance(P.feature_model, FeatureModelScale) and len(P.seeds) >= 1


def test_get_profile__full_is_larger_than_quick():
    q, f = get_profile("quick", device="cpu"), get_profile("full", device="cpu")
    assert f.feature_model.frequency_samples > q.feature_model.frequency_samples
    assert max(f.feature_model.grid_n) >= 65_536 > max(q.feature_model.grid_n)
    assert len(f.seeds) > len(q.seeds)


def test_get_profile__unknown_name_lists_options():
    with pytest.raises(ValueError, match="unknown profile 'medium'.*quick.*full"):
        get_profile("medium")
    assert PROFILE_NAMES == ("quick", "full")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback; this machine has CUDA")
def test_get_profile__auto_device_resolves_to_cpu_without_cuda():
    assert get_profile("quick").device == "cpu"
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_get_profile__auto_device_resolves_to_cuda_with_cuda():
    assert get_profile("quick").device == "cuda"


def test_get_profile__overrides_and_theory_dtype_guard():
    P = get_profile("quick", device="cpu", seeds=(0, 1, 2), dtype=torch.float64)
    assert P.seeds == (0, 1, 2) and P.dtype == torch.float64
    assert get_profile("quick", device="cpu", theory_dtype=torch.float64).theory_dtype == torch.float64
    with pytest.raises(ValueError, match="theory_dtype"):
        get_profile("quick", device="cpu", theory_dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown Profile field.*batch_size"):
        get_profile("quick", device="cpu", batch_size=3)


def test_get_profile__environment_variable_honoured(monkeypatch):
    monkeypatch.setenv("SAE_THEORY_PROFILE", "full")
    assert get_profile(device="cpu").name == "full"
    assert get_profile("quick", device="cpu").name == "quick"  # an explicit name wins
    monkeypatch.delenv("SAE_THEORY_PROFILE")
    assert get_profile(device="cpu").name == profiles.DEFAULT_PROFILE == "quick"
    monkeypatch.setenv("SAE_THEORY_PROFILE", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        get_profile(device="cpu")


@pytest.mark.parametrize("name", ["quick", "full"])
def test_Profile__to_dict_is_json_serialisable(name):
    P = get_profile(name, device="cpu")
    d = json.loads(json.dumps(P.to_dict()))
    assert d["name"] == name and d["device"] == "cpu"
    assert d["dtype"] == "torch.float32" and d["theory_dtype"] == "torch.float64"
    assert d["feature_model"]["grid_n"] == list(P.feature_model.grid_n)


def test_Profile__frozen():
    P = get_profile("quick", device="cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.device = "cuda"  # type: ignore[misc]


# -- the one thread rule ---------------------------------------------------------------------


def test_cpu_threads__quick_is_one_full_is_torchs_default():
    assert get_profile("quick", device="cpu").cpu_threads == 1
    assert get_profile("full", device="cpu").cpu_threads is None
    with pytest.raises(ValueError, match="cpu_threads must be >= 1"):
        get_profile("quick", cpu_threads=0)
    with pytest.raises(TypeError, match="cpu_threads must be an integer"):
        get_profile("quick", cpu_threads=True)


@pytest.mark.parametrize("raw, expected", [("1", 1), (" 3 ", 3), ("all", None), ("ALL", None)])
def test_parse_threads__positive_int_or_all(raw, expected):
    assert profiles.parse_threads(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", ""])
def test_parse_threads__refuses_anything_else(raw):
    with pytest.raises(ValueError, match="positive integer or 'all'"):
        profiles.parse_threads(raw)


def test_resolve_threads__environment_overrides_the_profile(monkeypatch):
    quick, full = get_profile("quick", device="cpu"), get_profile("full", device="cpu")
    monkeypatch.delenv(profiles.THREADS_ENV, raising=False)
    assert profiles.resolve_threads(quick) == 1 and profiles.resolve_threads(full) is None
    assert profiles.resolve_threads() == 1
    monkeypatch.setenv(profiles.THREADS_ENV, "2")
    assert profiles.resolve_threads(quick) == 2 and profiles.resolve_threads(full) == 2
    monkeypatch.setenv(profiles.THREADS_ENV, "all")
    assert profiles.resolve_threads(quick) is None
    monkeypatch.setenv(profiles.THREADS_ENV, "many")
    with pytest.raises(ValueError, match="SAE_THEORY_THREADS.*Unset it"):
        profiles.resolve_threads(quick)


def test_set_threads__applies_the_rule_to_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(profiles.THREADS_ENV, "2")
        assert profiles.set_threads(get_profile("quick", device="cpu")) == 2 == torch.get_num_threads()
        monkeypatch.delenv(profiles.THREADS_ENV)
        assert profiles.set_threads(get_profile("quick", device="cpu")) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, 4, "quick", None.__class__])
def test_set_threads__refuses_what_is_not_a_profile(bad):
    from sae_theory import set_threads

    with pytest.raises(TypeError, match="profile must be a Profile or None"):
        set_threads(bad)


# ---- overrides (study.field=value) -------------------------------------------------------------


def test_apply_overrides__text_read_as_the_fields_type_and_recorded():
    P = get_profile("full", device="cpu")
    Q = profiles.apply_overrides(P, profiles.parse_overrides("hierarchy.seeds=0; hierarchy.steps=1500;seeds=3,4;toy.widths=512"))
    assert Q.hierarchy.seeds == (0,) and Q.hierarchy.steps == 1500 and Q.seeds == (3, 4) and Q.toy.widths == (512,)
    assert Q.hierarchy.rhos == P.hierarchy.rhos and Q.toy.steps == P.toy.steps  # nothing else moves
    assert Q.overrides == (("hierarchy.seeds", (0,)), ("hierarchy.steps", 1500), ("seeds", (3, 4)), ("toy.widths", (512,)))
    assert json.loads(json.dumps(Q.to_dict()))["overrides"] == {"hierarchy.seeds": [0], "hierarchy.steps": 1500, "seeds": [3, 4],
                                                                 "toy.widths": [512]}
    assert P.overrides == () and P.to_dict()["overrides"] == {}
    # Python values pass through, a second application keeps the first's record
    R = profiles.apply_overrides(Q, {"hierarchy.exact_seeds": [1, 2]})
    assert R.hierarchy.exact_seeds == (1, 2) and dict(R.overrides)["hierarchy.seeds"] == (0,)


@pytest.mark.parametrize("text, match", [
    ("hierarchy.seeds", "path=value"),
    ("hierarchy.seeds=0;hierarchy.seeds=1", "twice"),
    ("hierarchy.stps=1", "unknown field 'stps' of hierarchy"),
    ("hierachy.steps=1", "unknown study 'hierachy'"),
    ("name=full", "unknown override 'name'"),
    ("theory_dtype=float32", "unknown override"),
    ("hierarchy.steps=many", "'many' is not a int"),
    ("hierarchy.seeds=0,x", "'x' is not a int"),
    ("a.b.c=1", "'field' or 'study.field'"),
    ("hierarchy.absorption_cells=0.1", "tuple of tuples"),
])
def test_apply_overrides__refuses_what_it_cannot_read(text, match):
    with pytest.raises(ValueError, match=match):
        profiles.apply_overrides(get_profile("quick", device="cpu"), profiles.parse_overrides(text))


def test_get_profile__applies_the_overrides_variable(monkeypatch):
    monkeypatch.setenv(profiles.OVERRIDES_ENV, "hierarchy.seeds=1,2")
    P = get_profile("quick", device="cpu")
    assert P.hierarchy.seeds == (1, 2) and P.overrides == (("hierarchy.seeds", (1, 2)),)
    monkeypatch.setenv(profiles.OVERRIDES_ENV, "hierarchy.seeds=one")
    with pytest.raises(ValueError, match=r"SAE_THEORY_OVERRIDES.*'one' is not a int.*Unset it"):
        get_profile("quick", device="cpu")
    monkeypatch.delenv(profiles.OVERRIDES_ENV)
    assert get_profile("quick", device="cpu").overrides == ()


def test_is_stock__only_the_named_profile_without_overrides():
    # the scale at which the notebooks' magnitude assertions were measured: a quick run with overrides is not it
    P = get_profile("quick", device="cpu")
    assert P.is_stock("quick") and not P.is_stock("full") and get_profile("full", device="cpu").is_stock("full")
    Q = profiles.apply_overrides(P, profiles.parse_overrides("toy.steps=16000"))
    assert not Q.is_stock("quick") and not Q.is_stock("full")
    with pytest.raises(ValueError, match="name must be one of"):
        P.is_stock("quik")
