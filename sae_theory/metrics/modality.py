"""MP-SAE's modality score (docs/papers.md#mp-sae-natural-data; the paper's §5, Figs 9 and 19,
after Papadimitriou et al. 2025, arXiv 2504.11695): how much of each latent's activation energy
comes from image inputs rather than text inputs of a joint image-text embedding."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_real

__all__ = ["modality_score"]


def modality_score(codes: Tensor, is_image: Tensor, *, text_weight: float | None = None) -> Tensor:
    """Per latent, MS_i = E_img(i) / (E_img(i) + w E_txt(i)), E the sum of z_i² over the inputs of
    each modality (1: image-only, 0: text-only).

    The paper scales the text energy by 1/5 for MS-COCO's five captions per image (the exact
    formula is our reading, docs/papers.md#mp-sae-natural-data): ``text_weight=0.2`` reproduces
    that; the default w = (#image inputs) / (#text inputs) is the same correction for any ratio
    (each modality's mean energy per input).

    Parameters
    ----------
    codes : Tensor (N, M)
        The SAE's codes of N inputs, any floating dtype, finite.
    is_image : Tensor (N,) of bool
        True for an image input, False for a text input; both modalities must occur.
    text_weight : float, optional
        w > 0; default the image-to-text input ratio.

    Returns
    -------
    Tensor (M,)
        float64 on CPU, in [0, 1]; **NaN for a latent with no energy on either modality** (it never
        fires: no score exists, and a histogram should leave it out, ``score[~score.isnan()]``).

    Raises
    ------
    ValueError
        Wrong shapes, NaN/Inf in ``codes``, a modality with no input, or ``text_weight`` <= 0.
    """
    if not isinstance(codes, Tensor) or codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D (inputs, latents) tensor, got {getattr(codes, 'shape', type(codes).__name__)}.")
    if not isinstance(is_image, Tensor) or is_image.dtype != torch.bool or is_image.shape != (codes.shape[0],):
        raise ValueError(f"is_image must be a bool tensor of shape ({codes.shape[0]},) (one flag per input), "
                         f"got {getattr(is_image, 'dtype', type(is_image).__name__)} {tuple(getattr(is_image, 'shape', ()))}.")
    z = codes.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(z).all()):
        raise ValueError("codes hold NaN or infinity; a modality score needs finite codes.")
    img = is_image.to("cpu")
    n_img, n_txt = int(img.sum()), int((~img).sum())
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"both modalities must occur: {n_img} image and {n_txt} text inputs.")
    w = n_img / n_txt if text_weight is None else check_real("text_weight", text_weight, minimum=0, include_minimum=False)
    e_img = z[img].pow(2).sum(0)
    e_txt = w * z[~img].pow(2).sum(0)
    total = e_img + e_txt
    score = torch.full_like(total, float("nan"))
    alive = total > 0
    score[alive] = e_img[alive] / total[alive]
    return score
