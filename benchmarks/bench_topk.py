"""TopK-style codes on the CPU: torch.topk against selection (models.base.selection_mask).

Not a test: run it by hand and read the ratios (one torch thread, float32, one process).

    python benchmarks/bench_topk.py [--repeats 7]

For each shape it times, interleaved, the median over ``repeats`` of the codes and their gradient
(forward and backward of ``(codes * w).sum()``) through both paths, whatever the rule of
``selection_applies`` says, and prints the ratio torch.topk / selection and whether the package
selects at that shape. The rule's constants (``SELECT_MIN_K``, ``SELECT_MAX_WIDTH``,
``BUDGET_SELECT_MIN_ENTRIES``) and the numbers in their comments come from this table.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import sae_theory.models.base as base
import sae_theory.models.batchtopk as batchtopk
from _peers import _median_time  # benchmarks/_peers.py: a warm-up call, then the median of the timed calls

ROWS = [(256, 512, 8), (256, 512, 20), (256, 512, 50), (256, 1536, 32), (20_000, 512, 20), (256, 4096, 20),
        (4096, 4096, 16), (200, 20, 2)]  # (B, M, k) of topk_relu
BATCHES = [(200, 20, 272, 0.0), (256, 512, 2048, 0.0), (256, 512, 2048, -1.3), (256, 1536, 8192, -1.3),
           (1024, 4096, 16_384, -1.3)]  # (B, M, budget, shift of the pre-activations) of batch_topk


class _Forced:
    """Selection at every shape (the rule's constants opened up) or never (the masks switched off)."""

    def __init__(self, select: bool):
        self.select = select

    def __enter__(self):
        self.saved = (base.SELECT_MIN_K, base.SELECT_MAX_WIDTH, batchtopk.BUDGET_SELECT_MIN_ENTRIES,
                      base.selection_mask, batchtopk._budget_mask)
        if self.select:
            base.SELECT_MIN_K, base.SELECT_MAX_WIDTH, batchtopk.BUDGET_SELECT_MIN_ENTRIES = 1, None, 1
        else:
            base.selection_mask = lambda *args, **kwargs: None
            batchtopk._budget_mask = lambda *args, **kwargs: None

    def __exit__(self, *exc):
        (base.SELECT_MIN_K, base.SELECT_MAX_WIDTH, batchtopk.BUDGET_SELECT_MIN_ENTRIES,
         base.selection_mask, batchtopk._budget_mask) = self.saved


def _pair(make_codes, pre: torch.Tensor, repeats: int) -> tuple[float, float]:
    w = torch.randn(pre.shape)

    def step():
        x = pre.detach().requires_grad_()
        (make_codes(x) * w).sum().backward()

    times = {True: [], False: []}
    for _ in range(repeats):  # interleaved, so a drift in the machine's speed hits both
        for select in (False, True):
            with _Forced(select):
                times[select].append(_median_time(step, 3))
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("topk_relu: codes and gradient, one thread, float32 (median ms)")
    print("| B, M, k | torch.topk (ms) | selection (ms) | torch.topk / selection | selected by the package |")
    print("| --- | --- | --- | --- | --- |")
    for b, m, k in ROWS:
        pre = torch.randn(b, m)
        t_topk, t_sel = _pair(lambda x: base.topk_relu(x, k), pre, args.repeats)
        used = base.selection_mask(pre, k, positive=True) is not None
        print(f"| {b}, {m}, {k} | {t_topk * 1e3:.2f} | {t_sel * 1e3:.2f} | {t_topk / t_sel:.2f}x | {'yes' if used else 'no'} |")
    print()
    print("batch_topk(relu(pre)): codes and gradient, one thread, float32 (median ms)")
    print("| B, M, budget | zeros after the ReLU | torch.topk (ms) | selection (ms) | torch.topk / selection | selected by the package |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b, m, budget, shift in BATCHES:
        pre = torch.randn(b, m) + shift
        t_topk, t_sel = _pair(lambda x: batchtopk.batch_topk(torch.relu(x), budget), pre, args.repeats)
        used = batchtopk._budget_mask(torch.relu(pre).reshape(-1), budget) is not None
        zeros = float((pre <= 0).float().mean())
        print(f"| {b}, {m}, {budget} | {zeros:.0%} | {t_topk * 1e3:.2f} | {t_sel * 1e3:.2f} | {t_topk / t_sel:.2f}x | {'yes' if used else 'no'} |")


if __name__ == "__main__":
    main()
