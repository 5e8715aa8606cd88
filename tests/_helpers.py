"""Shared test helpers: the tolerance table keyed by dtype and the one ``assert_close`` wrapper
(a global RNG is never relied on). Imported by test modules as ``from _helpers import ...`` (pytest puts tests/ on
sys.path because tests/ has no __init__.py)."""

from __future__ import annotations

import numpy as np
import torch

#: rtol = atol for comparisons in each dtype (LX: 1e-12 in float64, 1e-6 otherwise).
TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 1e-6}


def tolerance(dtype: torch.dtype) -> float:
    """rtol/atol for ``dtype``; 1e-6 for any dtype not in the table."""
    return TOLERANCE.get(dtype, 1e-6)


def assert_close(actual, expected, dtype: torch.dtype = torch.float64, msg: str | None = None) -> None:
    """Assert ``actual`` ~= ``expected`` with rtol = atol = ``tolerance(dtype)``.

    Accepts torch tensors (dense or sparse), numpy arrays and Python numbers; everything is
    compared in float64 so the tolerance, not the container, decides.
    """

    def as64(x):
        if isinstance(x, torch.Tensor):
            x = x.to_dense() if x.is_sparse else x
            return x.detach().cpu().to(torch.float64)
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    tol = tolerance(dtype)
    torch.testing.assert_close(as64(actual), as64(expected), rtol=tol, atol=tol, msg=msg)


def make_data(n: int = 200, seed: int = 1, *, d: int = 8, m: int = 16) -> torch.Tensor:
    """Sparse non-negative combinations of ``m`` random atoms in R^``d`` (the training tests' data)."""
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(m, d, generator=g)
    H = torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < 0.15)
    return H @ V


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every tensor of the two state dicts equal, bit for bit (same keys)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"state {k!r} differs"


def tiny_bert(words, *, hidden_size: int = 16, intermediate_size: int = 32, max_position_embeddings: int = 64):
    """(tokenizer, BertModel) built here, nothing downloaded: a word-level tokenizer over ``words``
    that frames a text as [CLS] ... [SEP], and a 2-block BERT of width ``hidden_size`` in eval mode.
    transformers initialises from the global RNG, which is seeded (0) for fixed weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(words)
    t = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                  mask_token="[MASK]")
    torch.manual_seed(0)
    net = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings)).eval()
    return tok, net


TINY_WORDS = "the cat sat on a mat and dog ran far away from home while birds sang loud songs in trees".split()


def tiny_activation_cache(root, place: str):
    """640 tokens of a tiny BERT's (d = 16, :func:`tiny_bert`) ``place`` of block 1, extracted
    into ``root / "cache"`` from 40 random documents over :data:`TINY_WORDS` (nothing downloaded)."""
    import torch

    from sae_theory.data.activations import ActivationRequest, extract_activations

    tok, net = tiny_bert(TINY_WORDS)
    g = torch.Generator().manual_seed(0)
    docs = [" ".join(TINY_WORDS[i] for i in torch.randint(len(TINY_WORDS), (int(n),), generator=g).tolist())
            for n in torch.randint(20, 60, (40,), generator=g)]
    (root / "docs.txt").write_text("\n\n".join(docs))
    req = ActivationRequest(model="tiny-bert", place=place, layer=1, corpus=str(root / "docs.txt"), max_tokens=640, context=16,
                            shard_rows=128, batch_size=4)
    return extract_activations(req, root / "cache", model=(tok, net), progress=False)
