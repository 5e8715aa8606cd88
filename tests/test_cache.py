"""Tests of the on-disk run cache (experiments.cache): a cached run is the fresh run, bit for bit,
and the key changes with everything that makes a run."""

from __future__ import annotations

import pytest
import torch

from sae_theory import SparseFeatureModel
from sae_theory.experiments import cache
from sae_theory.experiments.specs import HookSpec, MethodSpec
from sae_theory.training import GBAConfig

DATA = SparseFeatureModel(32, 8, 2, seed=0)
DATA_KEY = dict(model="SparseFeatureModel", n=32, d=8, s=2, seed=0)
RUN = dict(steps=15, batch_size=32, seed=3, progress=False)
SPEC = MethodSpec.make("GBA", "TiedSAE", hooks=[HookSpec.gba(GBAConfig(n_groups=2, htf=0.3, ltf=0.01, buffer_size=64))],
                       train=dict(lr=1e-2, input_norm="unit"))


def _run(spec=SPEC, **overrides):
    kw = dict(data_key=DATA_KEY, d=8, n_latents=16, seed=1, run=RUN)
    kw.update(overrides)
    return cache.train_cached(spec, DATA, **kw)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "runs"))
    return tmp_path / "runs"


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_run__is_bit_identical_to_a_fresh_one(cache_dir, monkeypatch):
    first = _run()
    assert not first.cached and (cache_dir / first.key / "run.json").is_file()
    again = _run()
    assert again.cached and again.key == first.key
    assert _same_state(first.model, again.model) and again.history.rows == first.history.rows
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    fresh = _run()
    assert not fresh.cached and _same_state(fresh.model, again.model)


@pytest.mark.parametrize("change", [
    dict(spec=MethodSpec.make("GBA", "TiedSAE", hooks=[HookSpec.gba(GBAConfig(n_groups=2, htf=0.3, ltf=0.02, buffer_size=64))],
                              train=dict(lr=1e-2, input_norm="unit"))),
    dict(spec=MethodSpec.make("GBA", "TiedSAE", train_b_dec=False, hooks=SPEC.hooks, train=dict(SPEC.train))),
    dict(spec=MethodSpec.make("GBA", "TiedSAE", hooks=SPEC.hooks, train=dict(lr=2e-2, input_norm="unit"))),
    dict(spec=MethodSpec.make("GBA2", "TiedSAE", hooks=SPEC.hooks, train=dict(SPEC.train))),
    dict(data_key={**DATA_KEY, "seed": 1}),
    dict(d=8, n_latents=17),
    dict(seed=2),
    dict(run={**RUN, "steps": 16}),
    dict(run={**RUN, "seed": 4}),
    dict(dtype=torch.float64),
])
def test_run_key__changes_with_every_field(change, cache_dir):
    base = _run()
    assert _run(**change).key != base.key


def test_run_key__ignores_progress_and_folder_fields(cache_dir):
    _run()  # stores the run
    assert _run(run={**RUN, "progress": True}).cached
    assert _run(run={**RUN, "overwrite_checkpoints": True}).cached  # says what to do with a folder, not what to train


def test_cache__off_writes_nothing_and_half_written_runs_are_ignored(cache_dir, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    assert cache.cache_dir() is None
    _run()
    assert not cache_dir.exists()
    monkeypatch.setenv(cache.CACHE_ENV, str(cache_dir))
    first = _run()
    (cache_dir / first.key / "run.json").unlink()  # as if killed before the run was complete
    assert not _run().cached


def test_cache_dir__default_is_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "sae_theory" / "runs"


def test_code_fingerprint__ignores_docstrings_and_comments_but_not_code():
    base = cache._code_without_docstrings('"""Module."""\nclass A:\n    """Doc."""\n    x: int = 1\n    """Attr doc."""\n    def f(self):\n        """F."""\n        return 1  # one\n')
    same = cache._code_without_docstrings('"""Other words."""\nclass A:\n    x: int = 1\n\n    def f(self):\n        # a comment\n        return 1\n')
    other = cache._code_without_docstrings('class A:\n    x: int = 1\n    def f(self):\n        return 2\n')
    assert base == same and base != other
    assert len(cache.code_fingerprint()) == 16


def test_cache__a_damaged_run_is_trained_again_with_a_warning(cache_dir):
    first = _run()
    (cache_dir / first.key / "sae.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="cannot be read.*training it again"):
        again = _run()
    assert not again.cached and _same_state(first.model, again.model)
    assert _run().cached  # stored afresh


def test_snapshots__a_snapshot_is_the_model_a_shorter_run_ends_with(cache_dir):
    """With a constant learning rate the state after step s of a long run is, bit for bit, the
    final state of a run of s steps (GBA hook included), on a fresh run and on a cached one."""
    long = _run(snapshots=(5, 10))
    assert sorted(long.snapshots) == [5, 10] and long.steps == RUN["steps"]
    for s in (5, 10):
        short = _run(run={**RUN, "steps": s})
        assert _same_state(long.at(s), short.model), s
    assert long.at(RUN["steps"]) is long.model
    again = _run(snapshots=(5, 10))
    assert again.cached and again.key == long.key
    assert all(_same_state(again.at(s), long.at(s)) for s in (5, 10))
    assert not long.at(5).training and _same_state(long.model, again.model)  # the snapshot model is a copy


def test_snapshots__are_part_of_the_key_and_checked(cache_dir):
    plain, snap = _run(), _run(snapshots=(5,))
    assert plain.key != snap.key and _run(snapshots=(5, 5)).key == snap.key and _run(snapshots=(10,)).key != snap.key
    with pytest.raises(KeyError, match="no snapshot at step 7"):
        snap.at(7)
    for bad in (0, RUN["steps"], 99):
        with pytest.raises(ValueError, match=r"snapshots\[1\] must be (>= 1|<= 14)"):
            _run(snapshots=(5, bad))
    for bad in (2.5, True):
        with pytest.raises(TypeError, match=r"snapshots\[0\] must be an integer"):
            _run(snapshots=(bad,))


def test_snapshots__a_missing_snapshot_file_trains_the_run_again(cache_dir):
    first = _run(snapshots=(5,))
    (cache_dir / first.key / "snapshots.safetensors").unlink()
    with pytest.warns(UserWarning, match="cannot be read"):
        again = _run(snapshots=(5,))
    assert not again.cached and _same_state(again.at(5), first.at(5))
