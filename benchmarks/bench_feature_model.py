"""Throughput of the GBA feature model and of the identifiability checks at n = 65,536.

Not a test: run it by hand and read the numbers.

    python benchmarks/bench_feature_model.py [--samples 2000000] [--d 128] [--device cpu]

Reports rows/s for streaming (X, H) in sparse chunks, for the balanced and the Zipf law, and the
seconds of H3 (sparse B^T B) and V1 (blockwise float64 Gram) at n = 65,536.
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_theory.data import SparseFeatureModel, Zipf
from sae_theory.theory.conditions import as_csr, _h3, cosine_extremes


def _stream_rate(model: SparseFeatureModel, N: int, chunk: int) -> float:
    t = time.perf_counter()
    rows = 0
    for X, _ in model.stream(N, chunk_size=chunk):
        rows += X.shape[0]
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65_536)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--samples", type=int, default=2_000_000)
    ap.add_argument("--chunk", type=int, default=65_536)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-v1", action="store_true", help="skip the O(n^2 d) coherence pass")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"n={args.n}, d={args.d}, N={args.samples:,}, chunk={args.chunk}")

    for label, law in [("balanced s=3", 3), ("Zipf a=1, E|supp|=3", Zipf(1.0, 3.0))]:
        model = SparseFeatureModel(args.n, args.d, law, seed=0, device=args.device)
        rate = _stream_rate(model, args.samples, args.chunk)
        print(f"stream {label:<22} {rate:12,.0f} rows/s  ({args.samples / rate:6.2f} s for {args.samples:,} rows)")

    model = SparseFeatureModel(args.n, args.d, 3, seed=0, device=args.device)
    t = time.perf_counter()
    _, H = model.sample(1_000_000, h_layout="sparse")
    print(f"sample 1,000,000 rows (sparse H)      {time.perf_counter() - t:6.2f} s")
    t = time.perf_counter()
    r = _h3(as_csr(H, args.n), args.n)
    print(f"H3 on 1,000,000 rows (sparse B^T B)  {time.perf_counter() - t:6.2f} s  value={r.value:.4g}, threshold={r.threshold:.4g}")
    if not args.skip_v1:
        t = time.perf_counter()
        hi, lo = cosine_extremes(model.features)
        print(f"V1 blockwise float64 Gram            {time.perf_counter() - t:6.2f} s  coherence={max(hi, -lo):.4f}")


if __name__ == "__main__":
    main()
