"""Throughput of fpformat's GPU kernels as a fraction of a device-to-device copy of the same bytes.

    python benchmarks/bench_cuda.py [--n 67108864] [--repeat 20] [--only mxfp4,nvfp4] [--json]

Every case calls the public API on torch CUDA tensors (``get_format(...).quantize/encode/
decode``, :func:`fpformat.gemm.mma`), so it measures what a training run pays, allocation of
the result by torch's caching allocator included.  For each case:

* ``bytes``: what the kernel must move: the input read once and the result written once (for
  ``quantize`` the values only; ``encode`` writes one byte per code, plus the scales);
* ``copy_ms``: a ``torch`` ``copy_`` between two device buffers of ``bytes / 2`` bytes each
  (it reads and writes ``bytes`` in total), timed side by side with the case: the two are
  timed in alternation with CUDA events on torch's current stream, ``--repeat`` times each
  after a warm-up call that compiles the kernels, medians reported;
* ``of_copy = copy_ms / ms``: 1.0 means the kernel runs at the copy's speed (the practical
  bandwidth limit); 0.25 means it takes four times as long as moving its bytes.

The GEMM case (a matrix unit, :func:`fpformat.gemm.mma`) is compute-bound; its ``of_copy`` is
reported for completeness, and ``gmac_per_s`` (multiply-accumulates per second) is its figure.

Needs a CUDA GPU and torch with CUDA; without one it says so on stderr and exits with status 1.
:func:`bandwidth` is the one home of these measurements: ``benchmarks/gpu_check.py`` reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Element presets and rounding modes of the element quantize cases.
ELEMENT_CASES = (("float8_e4m3fn", "rne"), ("float8_e4m3fn", "sr"), ("float8_e5m2", "rne"),
                 ("float8_e5m2", "rtz"), ("float6_e2m3fn", "rne"), ("float4_e2m1fn", "rne"),
                 ("float4_e2m1fn", "sr"), ("e4m3", "rne"), ("bfloat16", "rne"))
#: Block formats of the block quantize cases (rows of ROW elements).
BLOCK_CASES = ("mxfp8_e4m3", "mxfp4", "nvfp4", "e4m3/channel", "e4m3/tensor")
ROW = 4096
#: The GEMM case: (M, K, N), unit, input format.
GEMM_CASE = ((1024, 1024, 1024), "h100", "float8_e4m3fn")


@dataclass(frozen=True)
class Case:
    """One measured call: ``run()`` launches it on torch's current stream; it moves ``nbytes``
    bytes (input read plus result written); ``macs``: multiply-accumulates (GEMM only)."""
    label: str
    run: Callable[[], Any]
    nbytes: int
    macs: int = 0


def cases(torch, n: int, only: set[str] | None = None) -> list[Case]:
    """The benchmark's cases on ``n`` float32 elements (``n`` a multiple of ``ROW``); ``only``:
    keep the cases whose label contains one of these words."""
    from fpformat import get_format
    from fpformat.gemm import mma
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, device="cuda", generator=gen) * 50
    xb = x.to(torch.bfloat16)
    rows = x.reshape(n // ROW, ROW)
    out: list[Case] = []
    for name, mode in ELEMENT_CASES:
        f = get_format(name)
        out.append(Case(f"quantize {name} {mode} float32",
                        lambda f=f, mode=mode: f.quantize(x, rounding=mode, saturate=True, seed=1),
                        8 * n))
    f8 = get_format("float8_e4m3fn")
    out.append(Case("quantize float8_e4m3fn rne bfloat16",
                    lambda: f8.quantize(xb, saturate=True), 4 * n))
    out.append(Case("encode float8_e4m3fn rne", lambda: f8.encode(x, saturate=True), 5 * n))
    codes = f8.encode(x, saturate=True)
    out.append(Case("decode float8_e4m3fn float32", lambda: f8.decode(codes, dtype="float32"),
                    5 * n))
    for name in BLOCK_CASES:
        b = get_format(name)
        out.append(Case(f"quantize {name} rne float32", lambda b=b: b.quantize(rows), 8 * n))
    mx = get_format("mxfp4")
    out.append(Case("encode mxfp4 rne", lambda: mx.encode(rows), 5 * n + n // 32))
    (M, K, N), unit, fin = GEMM_CASE
    if n < max(M * K, K * N):
        M = K = N = ROW // 64                             # small runs: a 64x64x64 GEMM
    a = x[:M * K].reshape(M, K)
    bm = x[-K * N:].reshape(K, N)
    out.append(Case(f"mma {unit} {fin} {M}x{K}x{N}",
                    lambda: mma(a, bm, 0.0, unit, fin, quantize_inputs=True),
                    4 * (M * K + K * N + M * N), macs=M * K * N))
    if only:
        out = [c for c in out if any(w in c.label for w in only)]
    return out


def time_side_by_side(torch, fn: Callable[[], Any], copy: Callable[[], Any], repeat: int
                      ) -> tuple[float, float]:
    """Median milliseconds of ``fn`` and of ``copy``, timed in alternation with CUDA events
    on torch's current stream (so clock and thermal drift affect both alike)."""
    fn()
    copy()
    torch.cuda.synchronize()
    times_fn, times_copy = [], []
    for _ in range(repeat):
        for f, times in ((fn, times_fn), (copy, times_copy)):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            f()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    return statistics.median(times_fn), statistics.median(times_copy)


def bandwidth(n: int = 1 << 26, repeat: int = 20, only: set[str] | None = None) -> list[dict]:
    """Each case's time against a device-to-device copy of the same bytes (see the module
    docstring); one dict per case: ``case, ms, copy_ms, of_copy, bytes, gb_per_s`` and, for
    the GEMM, ``gmac_per_s``.  ``RuntimeError`` without a CUDA GPU."""
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: torch.cuda.is_available() is False")
    if n < ROW or n % ROW:
        raise ValueError(f"n must be a positive multiple of {ROW}, got {n}")
    results = []
    for case in cases(torch, n, only):
        half = max(case.nbytes // 2, 1)
        src = torch.empty(half, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        ms, copy_ms = time_side_by_side(torch, case.run, lambda s=src, d=dst: d.copy_(s),
                                        repeat)
        row = {"case": case.label, "ms": ms, "copy_ms": copy_ms, "of_copy": copy_ms / ms,
               "bytes": case.nbytes, "gb_per_s": case.nbytes / (ms * 1e-3) / 1e9}
        if case.macs:
            row["gmac_per_s"] = case.macs / (ms * 1e-3) / 1e9
        results.append(row)
        del src, dst
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1 << 26,
                   help=f"float32 elements per case, a multiple of {ROW} (default 64M = 256 MiB)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per case (median)")
    p.add_argument("--only", default=None,
                   help="comma-separated words; run the cases whose label contains one")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.n < ROW or args.n % ROW:
        print(f"bench_cuda: --n must be a positive multiple of {ROW}, got {args.n}",
              file=sys.stderr)
        return 2
    if args.repeat < 1:
        print(f"bench_cuda: --repeat must be >= 1, got {args.repeat}", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("bench_cuda: needs torch with CUDA (not installed); nothing measured",
              file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA GPU (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        return 1
    only = set(filter(None, args.only.split(","))) if args.only else None
    results = bandwidth(args.n, args.repeat, only)
    name = torch.cuda.get_device_name()
    if args.json:
        print(json.dumps({"device": name, "n": args.n, "results": results}, indent=1))
        return 0
    print(f"{name}: {args.n:,} float32 elements per case; of copy = D2D copy time of the same "
          f"bytes / case time")
    print(f"{'case':<44}{'ms':>9}{'copy ms':>9}{'GB/s':>8}{'of copy':>9}")
    for r in results:
        extra = f"  {r['gmac_per_s']:.1f} GMAC/s" if "gmac_per_s" in r else ""
        print(f"{r['case']:<44}{r['ms']:>9.3f}{r['copy_ms']:>9.3f}{r['gb_per_s']:>8.0f}"
              f"{r['of_copy']:>9.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
