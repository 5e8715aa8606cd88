"""Tests of the SAE registry: a variant defined in one place is known to saving, loading,
checkpoints, the method order of the plots and the builders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from sae_theory import SparseFeatureModel, TrainConfig, train
from sae_theory.io import load_sae, save_sae
from sae_theory.models import (
    MPSAE,
    ReLUSAE,
    TiedSAE,
    TopKSAE,
    build_sae,
    family_of,
    get_sae,
    method_order,
    register_sae,
    registered_saes,
)
from sae_theory.models.base import SAEConfig, UntiedSAE
from sae_theory.models.registry import unregister_sae


@dataclass(frozen=True)
class ShrinkSAEConfig(SAEConfig):
    """A throwaway variant: soft-thresholded codes."""

    shrink: float = 0.1


class ShrinkSAE(UntiedSAE):
    config: ShrinkSAEConfig

    def __init__(self, config: ShrinkSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else ShrinkSAEConfig(**kwargs))

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_acts - self.config.shrink)


@pytest.fixture
def shrink_registered():
    register_sae("Shrink", config=ShrinkSAEConfig, aliases=("Soft",))(ShrinkSAE)
    yield ShrinkSAE
    unregister_sae("ShrinkSAE")


def test_registry__every_packaged_sae_is_registered_in_plot_order():
    names = [e.name for e in registered_saes()]
    assert names[:7] == ["MPSAE", "ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "MatryoshkaSAE", "TiedSAE"]
    for entry in registered_saes():
        assert entry.cls.__name__ == entry.name and get_sae(entry.label) is entry


def test_registered_variant__trains_saves_loads_and_resumes(shrink_registered, tmp_path):
    data = SparseFeatureModel(32, 8, 2, seed=0)
    X, _ = data.sample(2_000, h_layout="sparse")
    model = build_sae("Shrink", d=8, n_latents=16, shrink=0.05, seed=3)
    assert isinstance(model, ShrinkSAE) and model.config.shrink == 0.05
    cfg = TrainConfig(steps=20, batch_size=64, checkpoint_every=10, checkpoint_dir=str(tmp_path / "ckpt"), progress=False)
    train(model, X, cfg)

    save_sae(model, tmp_path / "saved")
    loaded = load_sae(tmp_path / "saved")
    assert type(loaded) is ShrinkSAE and loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k

    # resume from step 10 reaches the same weights as the uninterrupted run
    again = build_sae("Soft", d=8, n_latents=16, shrink=0.05, seed=3)
    train(again, X, cfg, resume=str(tmp_path / "ckpt" / "step_00000010"))
    assert torch.equal(again.W_dec, model.W_dec) and torch.equal(again.b_enc, model.b_enc)


def test_unregistered_class__save_says_how_to_register(tmp_path):
    class Stray(ShrinkSAE):
        pass

    with pytest.raises(TypeError, match="cannot save a Stray.*register_sae"):
        save_sae(Stray(d=4, n_latents=4), tmp_path / "x")


def test_register_sae__refuses_taken_labels_and_non_saes():
    with pytest.raises(ValueError, match=r"\['TopK'\].*already used by TopKSAE"):
        register_sae("TopK", config=ShrinkSAEConfig)(ShrinkSAE)
    with pytest.raises(TypeError, match="SAE subclasses"):
        register_sae("Thing", config=ShrinkSAEConfig)(int)
    with pytest.raises(TypeError, match="SAEConfig subclass"):
        register_sae("Thing", config=dict)(ShrinkSAE)
    with pytest.raises(ValueError, match="non-empty"):
        register_sae(" ", config=ShrinkSAEConfig)(ShrinkSAE)
    assert "ShrinkSAE" not in [e.name for e in registered_saes()]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(label="Thing", config=int), TypeError, r"config must be an SAEConfig subclass, got <class 'int'>"),
        (dict(label="Thing", config=ShrinkSAEConfig, aliases="Th"), TypeError, r"aliases must be an iterable.*aliases=\('Th',\)"),
        (dict(label="", config=ShrinkSAEConfig), ValueError, r"labels must be non-empty"),
        (dict(label="Thing", config=ShrinkSAEConfig, aliases=(3,)), ValueError, r"labels must be.*got 3"),
    ],
)
def test_register_sae__bad_arguments_raise_when_called_before_any_class_is_decorated(kwargs, error, message):
    label = kwargs.pop("label")
    with pytest.raises(error, match=message):
        register_sae(label, **kwargs)  # no class given yet


def test_get_and_build__by_name_label_alias_and_errors():
    assert get_sae("TopKSAE") is get_sae("TopK")
    assert get_sae("L1").cls is ReLUSAE and get_sae("BA").cls is TiedSAE and get_sae("MP").cls is MPSAE
    with pytest.raises(KeyError, match="no registered SAE is called 'Nope'.*TopKSAE"):
        get_sae("Nope")
    model = build_sae("TopK", d=6, n_latents=12, k=3)
    assert isinstance(model, TopKSAE) and model.k == 3
    with pytest.raises(TypeError, match="TopKSAE needs a TopKSAEConfig"):
        build_sae("TopK", config=ShrinkSAEConfig(d=6, n_latents=12))
    with pytest.raises(ValueError, match="not both"):
        build_sae("TopK", get_sae("TopK").config_cls(d=6, n_latents=12, k=2), k=2)


def test_family_of__longest_label_that_starts_the_method():
    assert family_of("TopK K=20").name == "TopKSAE"
    assert family_of("BatchTopK").name == "BatchTopKSAE"
    assert family_of("L1 lambda=0.03").name == "ReLUSAE"
    assert family_of("GBA wrong range").name == "TiedSAE"
    assert family_of("MP-SAE k=L0(BA)").name == "MPSAE"
    assert family_of("TopKish") is None and family_of("Unknown") is None


def test_method_order__families_in_registration_order(shrink_registered):
    given = ["GBA", "Soft x", "TopK K=50", "Other", "MP-SAE", "TopK K=20", "L1 lambda=0.1", "GBA"]
    assert method_order(given) == ["MP-SAE", "L1 lambda=0.1", "TopK K=50", "TopK K=20", "GBA", "Soft x", "Other"]
