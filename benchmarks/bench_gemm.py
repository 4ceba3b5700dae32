"""Multiply-accumulates per second of the matrix-unit model beside the other GEMM paths.

    python benchmarks/bench_gemm.py [--m 256] [--k 4096] [--n 256] [--repeat 3]

Side by side in one run, on the same float8_e4m3fn data: ``fpformat.gemm.mma`` through the
``h100`` unit (FP8 inputs, float32 output), ``fpformat.gemm.matmul`` with a float32 accumulator
(every addition correctly rounded) and with chunked promotion, and NumPy's float32 matmul (BLAS,
for scale).  Prints the best of ``--repeat`` runs, after one untimed call that compiles; the
unit's kernel is the specialised one (a GEMM of this size passes the specialisation threshold).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fpformat import get_format
from fpformat.gemm import matmul, mma


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    f = get_format("float8_e4m3fn")
    rng = np.random.default_rng(0)
    A = f.quantize(rng.standard_normal((a.m, a.k)).astype(np.float32))
    B = f.quantize(rng.standard_normal((a.k, a.n)).astype(np.float32))
    macs = a.m * a.k * a.n
    small = slice(0, max(a.m // 8, 1))              # the exact paths are slow: time 1/8 of rows
    rows = {
        "mma h100 (e4m3 -> float32)": (lambda: mma(A, B, 0.0, "h100", "float8_e4m3fn"), 1),
        "matmul float32 accumulator": (lambda: matmul(A[small], B, "float32"), 8),
        "matmul e8m13/rtz, chunk 128": (lambda: matmul(A[small], B, "e8m13", "rtz",
                                                       chunk=128), 8),
        "numpy float32 matmul": (lambda: A @ B, 1),
    }
    print(f"{a.m}x{a.k} @ {a.k}x{a.n} float8_e4m3fn values ({macs / 1e6:.0f} M MAC), "
          f"best of {a.repeat}")
    print(f"{'path':32s} {'s':>9s} {'M MAC/s':>10s}")
    for name, (fn, fraction) in rows.items():
        t = best(fn, a.repeat) * fraction
        print(f"{name:32s} {t:9.3f} {macs / t / 1e6:10.1f}")


if __name__ == "__main__":
    main()
