"""Tests of the run specs (experiments.specs) and the evaluation-seed rule."""

from __future__ import annotations

import pytest
import torch

from sae_theory.experiments import gba as gx
from sae_theory.experiments import hierarchical as hx
from sae_theory.experiments.specs import EVAL_SEED_OFFSET, HookSpec, MethodSpec, eval_generator, eval_seed
from sae_theory.models import MatryoshkaSAE, TiedSAE, TopKSAE, family_of
from sae_theory.profiles import get_profile
from sae_theory.training import GBAConfig, GroupBiasAdaptation, SparsityController


def test_method_spec__builds_the_registered_sae_with_its_fields_and_fresh_hooks():
    spec = MethodSpec.make("GBA x", "GBA", output_scale_init=0.5, hooks=[HookSpec.gba(GBAConfig(n_groups=2, htf=0.3, ltf=0.01))],
                           train=dict(lr=3e-3, optimizer="sgd"))
    assert spec.sae == "TiedSAE" and family_of(spec.label).name == "TiedSAE"
    sae, hooks = spec.build(d=6, n_latents=12, seed=4, dtype=torch.float64)
    assert isinstance(sae, TiedSAE) and sae.config.seed == 4 and sae.config.dtype == torch.float64
    assert sae.config.output_scale_init == 0.5
    assert len(hooks) == 1 and isinstance(hooks[0], GroupBiasAdaptation) and hooks[0].config.n_groups == 2
    _, hooks2 = spec.build(d=6, n_latents=12, seed=4)
    assert hooks2[0] is not hooks[0]  # hooks hold state: one per run
    cfg = spec.train_config(steps=10, batch_size=8, seed=4, lr=1.0)
    assert cfg.lr == 3e-3 and cfg.optimizer == "sgd" and cfg.steps == 10  # the method's fields win


def test_method_spec__is_hashable_and_equal_by_value():
    a = MethodSpec.make("TopK K=3", "TopK", k=3, train=dict(lr=1e-3))
    b = MethodSpec.make("TopK K=3", "TopKSAE", train={"lr": 1e-3}, k=3)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != MethodSpec.make("TopK K=3", "TopK", k=4, train=dict(lr=1e-3))
    assert a.to_dict() == {"label": "TopK K=3", "sae": "TopKSAE", "sae_config": {"k": 3}, "hooks": [], "train": {"lr": 1e-3}}


def test_method_spec__refuses_unknown_sae_fields_and_hooks():
    with pytest.raises(KeyError, match="no registered SAE is called 'Nope'"):
        MethodSpec.make("x", "Nope")
    with pytest.raises(ValueError, match=r"TopKSAEConfig fields \['kk'\] are unknown"):
        MethodSpec.make("x", "TopK", kk=3)
    with pytest.raises(ValueError, match=r"\['seed'\] are unknown or set by the run"):
        MethodSpec.make("x", "TopK", seed=3)
    with pytest.raises(ValueError, match=r"\['learning_rate'\] are not TrainConfig fields"):
        MethodSpec.make("x", "TopK", train=dict(learning_rate=1.0))
    with pytest.raises(ValueError, match="unknown hook kind 'Magic'"):
        HookSpec("Magic")
    with pytest.raises(TypeError, match="not hashable"):
        MethodSpec.make("x", "TopK", k={"a": 1})


def test_hook_spec__controller_round_trip():
    hook = HookSpec.controller(target_l0=2.0, coefficient=0.3, rule="sign", gain=0.01).build()
    assert isinstance(hook, SparsityController) and hook.target_l0 == 2.0 and hook.coefficient == 0.3


def test_eval_seed__one_rule():
    assert eval_seed(0) == EVAL_SEED_OFFSET and eval_seed(3, 12) == EVAL_SEED_OFFSET + 312
    with pytest.raises(ValueError, match="stream must be <= 99"):
        eval_seed(0, 100)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        eval_seed(-1)
    a = torch.rand(3, generator=eval_generator(2, stream=5))
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(EVAL_SEED_OFFSET + 205)))


def test_study_specs__every_method_label_has_a_registered_family():
    P = get_profile("quick", device="cpu")
    specs = hx.method_specs(P.hierarchy)
    assert tuple(specs) == hx.METHODS + (hx.MP_UNIT_NORM, hx.TIED_RELU, hx.TIED_TOPK)
    sae, hooks = specs["Matryoshka"].build(d=20, n_latents=20, seed=1)
    assert isinstance(sae, MatryoshkaSAE) and isinstance(hooks[0], SparsityController)
    for method in gx.TOY_METHODS:
        spec = gx.toy_spec(method, P.toy, "analysed")
        assert spec.label == method and family_of(method).name == spec.sae
    assert isinstance(gx.topk_spec(7).build(d=4, n_latents=8, seed=0)[0], TopKSAE)
    with pytest.raises(ValueError, match="unknown toy method 'TopK K=7'"):
        gx.toy_spec("TopK K=7", P.toy, "analysed")
