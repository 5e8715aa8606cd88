"""The input normalisation belongs to the model (issue 15 point 3): a trained model applies to raw
inputs what training applied to its batches, and saves, checkpoints and caches keep it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sae_theory.io import load_sae, save_sae
from sae_theory.models import MPSAE, JumpReLUSAE, ReLUSAE, TiedSAE, TopKSAE
from sae_theory.training import TrainConfig, train

from _helpers import assert_close

D, M = 8, 16


def _raw(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Rows with norms far from 1 (5 to 50), so a missing or doubled normalisation shows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * (5 + 45 * torch.rand(n, 1, generator=g, dtype=torch.float64))


MODELS = {
    "TopK": lambda: TopKSAE(d=D, n_latents=M, k=3, seed=1, dtype=torch.float64),
    "ReLU": lambda: ReLUSAE(d=D, n_latents=M, l1_coefficient=1e-3, seed=1, dtype=torch.float64),
    "JumpReLU": lambda: JumpReLUSAE(d=D, n_latents=M, seed=1, dtype=torch.float64),
    "MP": lambda: MPSAE(d=D, n_latents=M, k=3, seed=1, dtype=torch.float64),
    "Tied": lambda: TiedSAE(d=D, n_latents=M, activation="relu", seed=1, dtype=torch.float64),
}


def _trained(name: str, norm: str, steps: int = 30):
    model = MODELS[name]()
    history = train(model, _raw(400, seed=2), TrainConfig(steps=steps, batch_size=32, lr=1e-3, input_norm=norm, progress=False, seed=3))
    return model, history


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("norm", ["unit", "scale"])
def test_trained_model__raw_inputs_get_the_training_normalisation(name, norm):
    model, history = _trained(name, norm)
    c = history.input_scale
    assert model.input_norm == {"kind": norm, "scale": c if norm == "scale" else None}
    if norm == "scale":
        assert c is not None and c > 0
    x = _raw(20, seed=5)
    xn = x / x.norm(dim=1, keepdim=True) if norm == "unit" else x * c
    with model.prepared_inputs():  # what the trainer hands the model: the normalised batch
        codes_seen, recon_seen = model.encode(xn), model(xn)
        loss_seen = model.training_forward(xn).loss
    assert torch.equal(model.encode(x), codes_seen) or torch.allclose(model.encode(x), codes_seen, rtol=0, atol=1e-12)
    back = recon_seen * x.norm(dim=1, keepdim=True) if norm == "unit" else recon_seen / c
    assert_close(model(x), back, torch.float64, "forward(raw) is the reconstruction in the raw units")
    assert_close(model.decode(model.encode(x)), recon_seen, torch.float64, "decode returns the normalised units")
    # training_forward on raw inputs, outside the trainer, normalises them once
    assert_close(model.training_forward(x).loss, loss_seen, torch.float64)
    # a normalisation applied twice would change the codes for 'scale' (c != 1): once is what counts
    if norm == "scale":
        assert not torch.allclose(model.encode(x * c), codes_seen)


def test_untrained_model_has_no_normalisation_and_none_changes_nothing():
    model = MODELS["TopK"]()
    assert model.input_norm == {"kind": "none", "scale": None}
    x = _raw(10)
    ref = model.encode(x)
    model2, _ = _trained("TopK", "none")
    assert model2.input_norm["kind"] == "none"
    assert torch.equal(model(x), model.decode(ref))


@pytest.mark.parametrize("kind, scale, match", [
    ("layer", None, "one of"),
    ("unit", 2.0, "only for input norm 'scale'"),
    ("scale", -1.0, "finite positive"),
    ("scale", math.nan, "finite positive"),
    ("scale", True, "finite positive"),
])
def test_set_input_norm__refuses_bad_values(kind, scale, match):
    model = MODELS["TopK"]()
    with pytest.raises(ValueError, match=match):
        model.set_input_norm(kind, scale)
    assert model.input_norm == {"kind": "none", "scale": None}  # unchanged


def test_scale_without_a_known_scale_is_refused_on_use():
    model = MODELS["TopK"]()
    model.set_input_norm("scale", None)
    with pytest.raises(ValueError, match="scale is not known"):
        model.encode(_raw(3))


@pytest.mark.parametrize("norm", ["unit", "scale"])
def test_save_and_load_keep_the_normalisation(tmp_path, norm):
    model, _ = _trained("TopK", norm)
    save_sae(model, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["input_norm"] == model.input_norm
    loaded = load_sae(tmp_path / "run")
    assert loaded.input_norm == model.input_norm
    x = _raw(10, seed=7)
    assert torch.equal(loaded(x), model(x)) and torch.equal(loaded.encode(x), model.encode(x))


def test_a_save_without_the_record_loads_as_none_and_a_damaged_record_is_refused(tmp_path):
    model, _ = _trained("TopK", "unit")
    save_sae(model, tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    meta = json.loads(path.read_text())
    del meta["input_norm"]  # as an older sae_theory wrote it
    path.write_text(json.dumps(meta))
    assert load_sae(tmp_path / "run").input_norm == {"kind": "none", "scale": None}
    meta["input_norm"] = {"kind": "scale", "scale": -2}
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json holds an input_norm"):
        load_sae(tmp_path / "run")


def test_checkpoints_keep_the_scale_and_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    data = _raw(400, seed=2)
    cfg = dict(batch_size=32, lr=1e-3, input_norm="scale", progress=False, seed=3)
    whole = MODELS["TopK"]()
    train(whole, data, TrainConfig(steps=20, **cfg))
    part = MODELS["TopK"]()
    train(part, data, TrainConfig(steps=10, checkpoint_dir=str(tmp_path / "ck"), **cfg))
    from_disk = load_sae(tmp_path / "ck")
    assert from_disk.input_norm == part.input_norm and part.input_norm["scale"] is not None
    resumed = MODELS["TopK"]()
    train(resumed, data, TrainConfig(steps=20, checkpoint_dir=str(tmp_path / "ck"), **cfg), resume="latest")
    assert resumed.input_norm == whole.input_norm
    x = _raw(10, seed=8)
    assert torch.equal(resumed(x), whole(x))


def test_cached_runs_keep_the_normalisation(tmp_path, monkeypatch):
    from sae_theory.experiments.cache import CACHE_ENV, train_cached
    from sae_theory.experiments.specs import MethodSpec

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    spec = MethodSpec.make("TopK K=3", "TopK", k=3, train=dict(lr=1e-3, input_norm="unit"))
    data = _raw(400, seed=2).float()
    kw = dict(data_key=dict(name="raw"), d=D, n_latents=M, seed=0, run=dict(steps=20, batch_size=32, seed=3, progress=False))
    fresh = train_cached(spec, data, **kw)
    stored = train_cached(spec, data, **kw)
    assert not fresh.cached and stored.cached
    assert stored.model.input_norm == fresh.model.input_norm == {"kind": "unit", "scale": None}
    x = _raw(10, seed=9).float()
    assert torch.equal(stored.model(x), fresh.model(x))
