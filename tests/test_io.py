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
