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


class _KilledAt:
    """A batch source that stops the process (KeyboardInterrupt) when asked for batch ``at``."""

    def __init__(self, source, at):
        self.source, self.at, self.calls = source, at, 0

    def next_batch(self, batch_size):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt("killed for the test")
        return self.source.next_batch(batch_size)

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)


def test_checkpointed_run__killed_half_way_resumes_bit_for_bit(cache_dir, monkeypatch):
    from sae_theory.training import as_source

    monkeypatch.setenv(cache.CHECKPOINT_ENV, "4")
    real_train, calls = cache.train, []

    def killed(model, data, cfg, **kw):
        calls.append(kw.get("resume"))
        return real_train(model, _KilledAt(as_source(data, cfg), at=10), cfg, **kw)

    monkeypatch.setattr(cache, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(snapshots=[5, 12])
    partial = [p for p in cache_dir.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and sorted(p.name for p in partial[0].iterdir()) == ["step_00000008"]  # the newest only
    monkeypatch.setattr(cache, "train", lambda *a, **kw: calls.append(kw.get("resume")) or real_train(*a, **kw))
    resumed = _run(snapshots=[5, 12])
    assert calls == [None, "latest"] and not resumed.cached
    assert not partial[0].exists() and (cache_dir / resumed.key / "run.json").is_file()
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    whole = _run(snapshots=[5, 12])  # no cache, no checkpoints: one uninterrupted run
    assert _same_state(resumed.model, whole.model) and resumed.history.rows == whole.history.rows
    assert resumed.snapshots.keys() == whole.snapshots.keys() == {5, 12}
    assert all(torch.equal(resumed.snapshots[s][k], whole.snapshots[s][k]) for s in (5, 12) for k in whole.snapshots[s])


def test_checkpointed_run__an_unusable_checkpoint_is_dropped_with_a_warning(cache_dir, monkeypatch):
    import shutil

    monkeypatch.setenv(cache.CHECKPOINT_ENV, "4")
    key = _run().key  # to learn the key; then fake an interrupted run whose checkpoint is damaged
    shutil.rmtree(cache_dir / key)
    other = cache_dir / f".{key}.partial" / "step_00000004"
    other.mkdir(parents=True)
    for name in ("sae.safetensors", "config.json", "trainer.pt"):
        (other / name).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be resumed"):
        run = _run()
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    assert _same_state(run.model, _run().model) and not (cache_dir / f".{key}.partial").exists()


def test_checkpoint_cadence__default_and_environment(monkeypatch):
    monkeypatch.delenv(cache.CHECKPOINT_ENV, raising=False)
    assert cache.checkpoint_cadence(cache.CHECKPOINT_MIN_STEPS - 1) is None
    assert cache.checkpoint_cadence(30_000) == 1_500
    monkeypatch.setenv(cache.CHECKPOINT_ENV, "0")
    assert cache.checkpoint_cadence(30_000) is None
    monkeypatch.setenv(cache.CHECKPOINT_ENV, "250")
    assert cache.checkpoint_cadence(100) == 250
    for bad in ("ten", "-1"):
        monkeypatch.setenv(cache.CHECKPOINT_ENV, bad)
        with pytest.raises(ValueError, match=cache.CHECKPOINT_ENV):
            cache.checkpoint_cadence(100)


def test_checkpointed_run__a_key_another_process_trains_runs_without_checkpoints(cache_dir, monkeypatch):
    import shutil

    monkeypatch.setenv(cache.CHECKPOINT_ENV, "4")
    key = _run().key
    shutil.rmtree(cache_dir / key)  # not cached any more; its key known
    seen, real_train = [], cache.train
    monkeypatch.setattr(cache, "train", lambda *a, **kw: seen.append(a[2].checkpoint_dir) or real_train(*a, **kw))
    held = cache._try_lock(cache_dir / f".{key}.lock")  # as another process training this key holds it
    assert held is not None
    try:
        again = _run()
    finally:
        held.close()
    assert seen == [None] and not (cache_dir / f".{key}.partial").exists()  # trained without checkpoints
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    assert _same_state(again.model, _run().model)
