import json

import pytest
import torch

from sae_theory.io import load_sae, save_sae
from sae_theory.models import ReLUSAE, TiedSAE, TopKSAE


@pytest.mark.parametrize(
    "make",
    [
        lambda: TiedSAE(d=6, n_latents=10, seed=3, activation="relu", output_scale_init=0.5),
        lambda: TopKSAE(d=6, n_latents=10, k=3, seed=3, dtype=torch.float64),
        lambda: ReLUSAE(d=6, n_latents=10, l1_coefficient=0.2, seed=3),
    ],
)
def test_save_sae__round_trip_keeps_class_config_weights_and_outputs(tmp_path, make):
    model = make()
    with torch.no_grad():  # move away from the seeded init so the test sees saved values, not a re-init
        for p in model.parameters():
            p.add_(0.1)
        if isinstance(model, TiedSAE):
            model.b_enc.fill_(-0.3)  # a buffer: must be saved too
    save_sae(model, tmp_path / "run")
    loaded = load_sae(tmp_path / "run")
    assert type(loaded) is type(model) and loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.randn(4, 6, dtype=model.config.dtype)
    assert torch.equal(model(x), loaded(x))
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["sae_class"] == type(model).__name__


def test_load_sae__missing_files_and_unknown_class_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_sae"):
        load_sae(tmp_path / "nothing")
    save_sae(TopKSAE(d=4, n_latents=5, k=2), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    meta["sae_class"] = "MysterySAE"
    (tmp_path / "run" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="MysterySAE"):
        load_sae(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# atomic saves


def _perturbed(model, by: float):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)
    return model


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_sae__a_failure_mid_save_leaves_the_previous_save_intact(tmp_path, monkeypatch):
    import safetensors.torch

    old = TopKSAE(d=6, n_latents=10, k=3, seed=1)
    save_sae(old, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    real = safetensors.torch.save_file

    def dies_mid_write(tensors, filename, *a, **kw):
        real(tensors, filename, *a, **kw)
        with open(filename, "r+b") as f:  # a half-written weights file, then the crash
            f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_sae(_perturbed(TopKSAE(d=6, n_latents=10, k=3, seed=1), 1.0), tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the temporary folder is gone
    assert _same_weights(load_sae(tmp_path / "run"), old)


def test_save_sae__a_killed_process_leaves_the_previous_save_loadable(tmp_path):
    """A real kill (os._exit in the middle of writing the weights, no clean-up code runs)."""
    import subprocess
    import sys
    import textwrap

    old = TopKSAE(d=6, n_latents=10, k=3, seed=1)
    save_sae(old, tmp_path / "run")
    script = textwrap.dedent(f"""
        import os, torch, safetensors.torch
        from sae_theory.io import save_sae
        from sae_theory.models import TopKSAE
        real = safetensors.torch.save_file
        def killed(tensors, filename, *a, **kw):
            real(tensors, filename, *a, **kw)
            os._exit(9)
        safetensors.torch.save_file = killed
        model = TopKSAE(d=6, n_latents=10, k=3, seed=2)
        save_sae(model, {str(tmp_path / "run")!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert _same_weights(load_sae(tmp_path / "run"), old)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.tmp")  # hidden, ignored
    new = _perturbed(TopKSAE(d=6, n_latents=10, k=3, seed=1), 0.5)
    save_sae(new, tmp_path / "run")  # the next save works
    assert _same_weights(load_sae(tmp_path / "run"), new)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two_renames"])
def test_save_sae__replaces_an_existing_save_and_leaves_no_temporary_folder(tmp_path, monkeypatch, exchange):
    import sae_theory.io as sio

    if not exchange:
        monkeypatch.setattr(sio, "_exchange", lambda a, b: False)
    save_sae(TopKSAE(d=6, n_latents=10, k=3, seed=1), tmp_path / "run")
    new = _perturbed(TopKSAE(d=6, n_latents=10, k=3, seed=1), 0.25)
    save_sae(new, tmp_path / "run")
    assert _same_weights(load_sae(tmp_path / "run"), new)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "sae.safetensors"]


def test_save_sae__refuses_to_replace_a_folder_with_other_files_or_a_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"notes.txt.*pass a folder of its own"):
        save_sae(TopKSAE(d=4, n_latents=5, k=2), tmp_path / "run")
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_sae(TopKSAE(d=4, n_latents=5, k=2), tmp_path / "file")


# ---------------------------------------------------------------------------------------------
# what load_sae refuses, and how it says so


def test_load_sae__a_folder_that_is_neither_a_save_nor_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/sae.safetensors is missing: .* neither a save_sae folder .* nor a checkpoint_dir.*pass the folder given to save_sae"):
        load_sae(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "sae.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"half/config.json is missing"):
        load_sae(tmp_path / "half")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_sae(tmp_path / "file")


def test_load_sae__old_checkpoint_layout_is_named(tmp_path):
    step = tmp_path / "ckpt" / "step_00000010"
    step.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "trainer.pt"):
        (step / name).write_bytes(b"{}")
    for where in (step, tmp_path / "ckpt"):
        with pytest.raises(FileNotFoundError, match=r"older sae_theory \(model.safetensors\).*train again"):
            load_sae(where)


def test_load_sae__a_config_that_is_not_a_save_config(tmp_path):
    save_sae(TopKSAE(d=4, n_latents=5, k=2), tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model_class": "TopKSAE"}))
    with pytest.raises(ValueError, match=r"config.json has no 'sae_class' and 'config'"):
        load_sae(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_sae(tmp_path / "run")


def test_write_sae_files__extra_keys_cannot_override_the_save_keys(tmp_path):
    from sae_theory.io import read_sae_config, write_sae_files

    model = TopKSAE(d=4, n_latents=5, k=2)
    with pytest.raises(ValueError, match=r"\['sae_class'\].*rename them"):
        write_sae_files(model, tmp_path, extra={"sae_class": "x"})
    write_sae_files(model, tmp_path, extra={"step": 3})
    meta = read_sae_config(tmp_path)
    assert meta["step"] == 3 and meta["sae_class"] == "TopKSAE"


def test_load_sae__a_cuda_save_on_a_machine_without_cuda_says_how_to_load_it(tmp_path):
    import json

    import torch

    from sae_theory import TopKSAE, load_sae, save_sae

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the save would load on it")
    folder = save_sae(TopKSAE(d=8, n_latents=16, k=2, seed=0), tmp_path / "sae")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["config"]["device"] = "cuda:0"  # as written by a save on a GPU machine
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"saved on 'cuda:0'.*device=\"cpu\""):
        load_sae(folder)
    assert load_sae(folder, device="cpu").config.device == "cpu"
