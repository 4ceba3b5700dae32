"""Throughput of fpformat's CPU kernels, as ratios to np.copyto measured side by side.

    python benchmarks/bench_fpformat.py [--n 16777216] [--repeat 15] [--cold]

Prints, for 16M float32 elements: np.copyto (the memory-bound limit), fake-quantize to
float8_e4m3fn with RNE, stochastic rounding, MXFP4 (when block formats are available), and
ml_dtypes' astype round trip; each as the median of ``--repeat`` runs, interleaved so that a noisy
neighbour affects all alike, and, beside it, the ratio of best rounds (np.copyto, memory-bound,
gains most from a quiet moment, so this ratio is the lower one).  ``--cold`` measures the first
call in a fresh process with an empty numba cache (compile time) instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def _times(fns: dict, repeat: int) -> dict[str, tuple[float, float]]:
    """(median, best) seconds of each function over ``repeat`` interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: (float(np.median(v)), min(v)) for k, v in times.items()}


def warm(n: int, repeat: int) -> None:
    from fpformat import get_format
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32) * 50
    y = np.empty_like(x)
    f = get_format("float8_e4m3fn")
    # The specialised kernels throughout (a long run reaches them after 64M elements per
    # combination); the "(generic kernel)" rows force the generic ones.
    os.environ["FPFORMAT_SPECIALIZE"] = "always"

    def generic(fn):
        def run():
            os.environ["FPFORMAT_SPECIALIZE"] = "never"
            try:
                fn()
            finally:
                os.environ["FPFORMAT_SPECIALIZE"] = "always"
        return run

    fns = {
        "np.copyto": lambda: np.copyto(y, x),
        "np.copy (allocates)": lambda: x.copy(),
        "e4m3fn rne (allocates)": lambda: f.quantize(x),
        "e4m3fn rne": lambda: f.quantize(x, out=y),
        "e4m3fn sr": lambda: f.quantize(x, rounding="sr", seed=1, out=y),
        "e4m3fn encode": lambda: f.encode(x),
        "e4m3fn rne (generic kernel)": generic(lambda: f.quantize(x, out=y)),
        "e4m3fn sr (generic kernel)": generic(lambda: f.quantize(x, rounding="sr", seed=1, out=y)),
    }
    try:
        mx = get_format("mxfp4")
        x2, y2 = x.reshape(-1, 4096), y.reshape(-1, 4096)
        fns["mxfp4 rne"] = lambda: mx.quantize(x2, out=y2)
        fns["mxfp4 rne (allocates)"] = lambda: mx.quantize(x2)
    except Exception as exc:  # block formats not available
        print(f"(mxfp4 skipped: {exc})")
    try:
        import ml_dtypes
        small = x[: n // 8]
        fns["ml_dtypes astype (n/8)"] = (
            lambda: small.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    except ImportError:
        print("(ml_dtypes not installed: its comparison skipped)")
    for fn in fns.values():           # compile and fault in pages before timing
        fn()
    t = _times(fns, repeat)
    base, base_best = t["np.copyto"]
    print(f"{n / 2**20:.0f}M float32 elements, numba threads: {_threads()}, median of {repeat}"
          " (best of: each operation's fastest round against np.copyto's fastest)")
    print(f"{'operation':28s} {'ms':>9s} {'GB/s(rw)':>9s} {'x copy tput':>11s} {'(best of)':>9s}")
    for k, (v, best) in t.items():
        elems = n // 8 if "(n/8)" in k else n
        ratio, ratio_best = (elems / v) / (n / base), (elems / best) / (n / base_best)
        print(f"{k:28s} {v * 1e3:9.2f} {2 * 4 * elems / v / 1e9:9.2f} {ratio:11.3f} "
              f"{ratio_best:9.3f}")
    if "ml_dtypes astype (n/8)" in t:
        speedup = (t["ml_dtypes astype (n/8)"][0] * 8) / t["e4m3fn rne"][0]
        print(f"fpformat e4m3fn rne vs ml_dtypes astype round trip: {speedup:.1f}x faster")


def _threads() -> int:
    import numba
    return numba.get_num_threads()


def cold() -> None:
    """First call in a fresh process, with an empty numba cache, then a warm-cache process."""
    code = ("import time, numpy as np; t=time.perf_counter(); from fpformat import get_format;"
            "f=get_format('float8_e4m3fn'); f.quantize(np.ones(1024, np.float32));"
            "print(f'{time.perf_counter()-t:.2f}')")
    cache = tempfile.mkdtemp(prefix="fpx-numba-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    try:
        first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout.strip()
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"import + first quantize, empty numba cache: {first} s")
    print(f"import + first quantize, warm numba cache:  {second} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16 << 20)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args()
    cold() if a.cold else warm(a.n, a.repeat)


if __name__ == "__main__":
    main()
