"""Throughput of block-format fake-quantization, as ratios to np.copyto measured side by side.

    python benchmarks/bench_block.py [--n 16777216] [--repeat 9] [--formats mxfp4,...]
    python benchmarks/bench_block.py --formats nvfp4,float8_e4m3fn/128,float8_e4m3fn/128x128

For 16M float32 elements (rows of 4096) prints np.copyto (the memory-bound limit), the element
format float4_e2m1fn (FloatFormat.quantize, ``out=``), and for each block format
``quantize(x, out=y)``, ``quantize(x)`` (allocates its result), ``quantize(x, rounding="sr",
out=y)`` (stochastic rounding) and ``encode(x)`` (uint8 codes + scales).  Each figure is the
median of ``--repeat`` runs, all operations interleaved in every round so that a noisy
neighbour affects all alike.  Kernels are specialised (compiled with the format as constants)
before timing, as they are in a training loop after the first 64M elements.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

#: Row length of the 2-D data (blocks along rows; 2-D tiles such as 128x128 span rows).
ROW = 4096


def _median_times(fns: dict, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def run(n: int, repeat: int, formats: list[str]) -> dict[str, float]:
    """Time every operation; returns {name: median seconds}."""
    os.environ["FPFORMAT_SPECIALIZE"] = "always"          # specialised kernels, compiled now
    from fpformat import get_format
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-8, 8, n))).astype(np.float32)
    x = x.reshape(-1, ROW) if n % ROW == 0 else x.reshape(1, -1)    # 2-D: tiles apply too
    y = np.empty_like(x)
    e2m1 = get_format("float4_e2m1fn")
    fns = {
        "np.copyto": lambda: np.copyto(y, x),
        "float4_e2m1fn element (out=)": lambda: e2m1.quantize(x, saturate=True, out=y),
    }
    for name in formats:
        b = get_format(name)
        fns[f"{name} quantize (out=)"] = lambda b=b: b.quantize(x, out=y)
        fns[f"{name} quantize (allocates)"] = lambda b=b: b.quantize(x)
        fns[f"{name} quantize sr (out=)"] = lambda b=b: b.quantize(x, rounding="sr", seed=1,
                                                                    out=y)
        fns[f"{name} encode"] = lambda b=b: b.encode(x)
    for fn in fns.values():                              # compile, fault in pages
        fn()
    return _median_times(fns, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16 << 20, help="elements (default 16M)")
    ap.add_argument("--repeat", type=int, default=9, help="rounds; the median is reported")
    ap.add_argument("--formats", default="mxfp4,mxfp8_e4m3",
                    help="comma-separated block formats (default mxfp4,mxfp8_e4m3)")
    args = ap.parse_args()
    if args.n < 1024 or args.repeat < 1:
        ap.error("--n must be >= 1024 and --repeat >= 1")
    import numba
    t = run(args.n, args.repeat, [f.strip() for f in args.formats.split(",") if f.strip()])
    base = t["np.copyto"]
    print(f"{args.n / 2**20:.0f}M float32 elements, numba threads: {numba.get_num_threads()}, "
          f"median of {args.repeat}")
    print(f"{'operation':38s} {'ms':>9s} {'x copy tput':>11s}")
    for k, v in t.items():
        print(f"{k:38s} {v * 1e3:9.2f} {base / v:11.3f}")


if __name__ == "__main__":
    main()
