"""Throughput of fpformat's CUDA kernels, as a fraction of the GPU's memory bandwidth.

    python benchmarks/bench_cuda.py [--n 268435456] [--repeat 10] [--peak-gbs 3350] [--json]

For ``--n`` float32 elements on the device (256M = 1 GiB by default) it times, with CUDA events
(median of ``--repeat`` runs after a warm-up that compiles the kernels):

* ``copy (D2D)``: a device-to-device copy of the input, the practical bandwidth limit;
* ``e4m3fn rne`` / ``e4m3fn sr``: fake quantization to float8_e4m3fn (the quantize kernel
  writing into a preallocated output: 8 bytes per element moved);
* ``e4m3fn encode``: codes (5 bytes per element);
* ``e4m3fn rne (API)``: ``FloatFormat.quantize`` on a numba device array, output allocated;
* ``mxfp4 rne (API)``: ``BlockFormat``'s GPU path (reads 4, writes 4 + 1 code + 1/32 scale
  bytes per element), one thread per 32-element block.

Each line reports GB/s (bytes the kernel must move / time), the fraction of the peak DRAM
bandwidth (from the device's memory clock and bus width, or ``--peak-gbs``) and the fraction of
the measured D2D copy.  Needs a CUDA GPU (``NUMBA_ENABLE_CUDASIM=1`` runs it in the simulator
with a small ``--n``, to check the script, not to time anything).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def peak_bandwidth_gbs(dev) -> float | None:
    """Theoretical DRAM bandwidth in GB/s (double data rate) from the device attributes."""
    try:
        clock_khz = dev.MEMORY_CLOCK_RATE
        bus_bits = dev.GLOBAL_MEMORY_BUS_WIDTH
    except Exception:  # attribute not exposed by this driver/numba-cuda
        return None
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def time_ms(cuda, fn, repeat: int) -> float:
    """Median milliseconds of ``fn`` measured with CUDA events on the default stream."""
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1 << 28, help="float32 elements (default 256M)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per case (median)")
    p.add_argument("--peak-gbs", type=float, default=None,
                   help="peak DRAM bandwidth in GB/s (default: from the device attributes)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        print("bench_cuda: --n and --repeat must be >= 1", file=sys.stderr)
        return 2

    from numba import cuda
    if not cuda.is_available():
        print("bench_cuda: no CUDA GPU available (numba.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    from fpformat import core, get_format
    from fpformat import cuda as fc
    from fpformat.dispatch import seed_key
    from fpformat.rounding import call_tuple, value_tuple

    dev = cuda.get_current_device()
    name = getattr(dev, "name", "simulated device")
    name = name.decode() if isinstance(name, bytes) else str(name)
    peak = args.peak_gbs or peak_bandwidth_gbs(dev)
    n = args.n
    rng = np.random.default_rng(0)
    host = (rng.standard_normal(min(n, 1 << 24)).astype(np.float32) * 50)
    x = cuda.device_array(n, dtype=np.float32)
    for i in range(0, n, host.size):                       # fill without a 1 GiB host array
        m = min(host.size, n - i)
        x[i:i + m].copy_to_device(host[:m])
    y = cuda.device_array(n, dtype=np.float32)
    codes = cuda.device_array(n, dtype=np.uint8)

    f = get_format("float8_e4m3fn")
    S = core.SRC_FLOAT32
    bits, ybits = x.view(np.uint32), y.view(np.uint32)
    blocks, threads = fc._launch_shape(n)

    def quantize_kernel(mode):
        C = call_tuple(f, mode, True, None)
        k = fc._quantize_kernel(S, f.params, C, value_tuple(f, C, S))
        key = seed_key(1, C[core.C_MODE])
        return lambda: k[blocks, threads](bits, ybits, key)

    C_rne = call_tuple(f, "rne", True, None)
    enc = fc._encode_kernel(S, f.params, C_rne)
    mx = get_format("mxfp4")
    rows = x.reshape(n // 32, 32) if n % 32 == 0 else x
    cases = {
        "copy (D2D)": (lambda: y.copy_to_device(x), 8),
        "e4m3fn rne": (quantize_kernel("rne"), 8),
        "e4m3fn sr": (quantize_kernel("sr"), 8),
        "e4m3fn encode": (lambda: enc[blocks, threads](bits, codes, np.uint64(0)), 5),
        "e4m3fn rne (API)": (lambda: f.quantize(x, saturate=True), 8),
        "mxfp4 rne (API)": (lambda: fc.quantize(mx, rows, "rne", True, None, None),
                            4 + 4 + 1 + 1 / 32),
    }
    results = []
    for label, (fn, bytes_per) in cases.items():
        fn()                                               # compile, warm up
        cuda.synchronize()
        ms = time_ms(cuda, fn, args.repeat)
        gbs = bytes_per * n / (ms * 1e-3) / 1e9
        results.append({"case": label, "ms": ms, "gb_per_s": gbs, "bytes_per_element": bytes_per})
    copy_gbs = results[0]["gb_per_s"]
    for r in results:
        r["of_peak"] = r["gb_per_s"] / peak if peak else None
        r["of_copy"] = r["gb_per_s"] / copy_gbs
    if args.json:
        print(json.dumps({"device": name, "n": n, "peak_gb_per_s": peak, "results": results},
                         indent=1))
        return 0
    print(f"{name}: {n:,} float32 elements; peak DRAM bandwidth "
          + (f"{peak:,.0f} GB/s" if peak else "unknown (pass --peak-gbs)"))
    print(f"{'case':<22}{'ms':>9}{'GB/s':>9}{'of peak':>9}{'of copy':>9}")
    for r in results:
        of_peak = f"{r['of_peak']:.2f}" if r["of_peak"] else "-"
        print(f"{r['case']:<22}{r['ms']:>9.3f}{r['gb_per_s']:>9.0f}{of_peak:>9}{r['of_copy']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
