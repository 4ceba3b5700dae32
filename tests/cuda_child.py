"""Child process for tests/test_cuda.py: checks that need numba.cuda configured before import.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_child.py sim  # GPU kernels in the CUDA simulator
    python tests/cuda_child.py ptx                          # compile the kernels for sm_90 (no GPU)

``sim`` runs fpformat.cuda's kernels under numba's CUDA simulator and compares every result with
the CPU kernels; ``ptx`` compiles the same kernels with NVVM for a real GPU (compute capability
9.0) without a GPU or driver, so that code the simulator accepts but CUDA cannot lower is caught
here.  Each prints one JSON object ``{case: "ok" | error text}`` on its last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The simulator runs the core as Python on numpy scalars: uint64 arithmetic in the
# counter-based generator wraps by design, and numpy warns about it (in the simulator's
# threads, where np.errstate set here would not apply).
warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)

MODES = ("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr")
N = 256                       # elements per element-format call (the simulator is slow)


def element_formats():
    from fpformat import FloatFormat, get_format
    return {
        "float8_e4m3fn": get_format("float8_e4m3fn"),
        "float8_e5m2": get_format("float8_e5m2"),
        "e2m1": get_format("e2m1"),
        "e3m2": get_format("e3m2"),
        "float8_e8m0fnu": get_format("float8_e8m0fnu"),
        "e4m3_nosub": FloatFormat(4, 3, subnormals=False, name="e4m3_nosub"),
        "ue4m3fn": get_format("ue4m3fn"),
        "float8_e4m3fnuz": get_format("float8_e4m3fnuz"),
        "float8_e5m2fnuz": get_format("float8_e5m2fnuz"),
    }


def inputs(fmt, n: int, seed: int) -> np.ndarray:
    """float64 inputs exercising ``fmt``: specials, ties between neighbours (midpoints), the
    neighbours themselves, values beyond max, and random values over the format's range."""
    rng = np.random.default_rng(seed)
    vals = fmt.values()
    mids = (vals[1:] + vals[:-1]) / 2
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -1e-45, 1e-40,
                        fmt.max, -fmt.max, fmt.max * 1.01, -fmt.max * 3, 1e300])
    lo = np.log2(max(fmt.min_subnormal if fmt.min_subnormal > 0 else 2.0 ** fmt.emin, 1e-300))
    hi = np.log2(fmt.max) + 1
    rand = rng.choice([-1.0, 1.0], n) * np.exp2(rng.uniform(lo - 2, hi, n))
    x = np.concatenate([special, rng.choice(mids, n // 4), rng.choice(vals, n // 8), rand])
    return x[:n]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        w = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        nan = np.isnan(a) & np.isnan(b)                      # NaN payloads: any NaN is a NaN
        return bool(np.array_equal(np.where(nan, 0, a.view(w)), np.where(nan, 0, b.view(w))))
    return bool(np.array_equal(a, b))


def run_sim() -> dict[str, str]:
    from numba import cuda

    from fpformat import cuda as fc
    from fpformat import get_format
    results: dict[str, str] = {}

    def case(name, fn):
        try:
            fn()
            results[name] = "ok"
        except Exception as exc:  # reported to the parent test, which fails on it
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"

    def dev(a):
        return cuda.to_device(np.ascontiguousarray(a))

    fmts = element_formats()

    # encode and quantize: every format x rounding mode x saturate, float32 and float64 inputs
    for fname, fmt in fmts.items():
        x64 = inputs(fmt, N, seed=len(fname))
        with np.errstate(over="ignore"):
            x32 = x64.astype(np.float32)
        for mode in MODES:
            for sat in (False, True):
                def check(fmt=fmt, mode=mode, sat=sat, x64=x64, x32=x32):
                    for x in (x32, x64):
                        want = fmt.encode(x, rounding=mode, saturate=sat, seed=11)
                        got = fc.encode(fmt, dev(x), mode, sat, 11, None).copy_to_host()
                        assert _same(got, want), (
                            f"encode {x.dtype}: {np.flatnonzero(got != want)[:5]}")
                        if fmt.fits(x.dtype):
                            want = fmt.quantize(x, rounding=mode, saturate=sat, seed=11)
                            got = fc.quantize(fmt, dev(x), mode, sat, 11, None).copy_to_host()
                            assert _same(got, want), f"quantize {x.dtype}"
                case(f"elem:{fname}:{mode}:{'sat' if sat else 'ieee'}", check)

    # stochastic rounding: sr_bits, the flat index of a 2-D array, prefix property, seeds differ
    def sr_checks():
        fmt = fmts["float8_e4m3fn"]
        x = inputs(fmt, 2 * N, seed=5).astype(np.float32).reshape(16, -1)
        for bits in (1, 8, 23):
            want = fmt.encode(x, rounding="sr", seed=3, sr_bits=bits)
            got = fc.encode(fmt, dev(x), "sr", False, 3, bits).copy_to_host()
            assert _same(got, want), f"sr_bits={bits}"
        full = fc.encode(fmt, dev(x), "sr", False, 9, None).copy_to_host().reshape(-1)
        part = fc.encode(fmt, dev(x.reshape(-1)[:100]), "sr", False, 9, None).copy_to_host()
        assert _same(part, full[:100]), "prefix of the input must give a prefix of the output"
        other = fc.encode(fmt, dev(x), "sr", False, 10, None).copy_to_host().reshape(-1)
        assert not np.array_equal(full, other), "different seeds gave identical SR codes"
    case("sr:bits-index-prefix-seed", sr_checks)

    # decode: every code of each format, float64 and (where values fit) float32/float16
    for fname, fmt in fmts.items():
        def dcheck(fmt=fmt):
            codes = np.arange(1 << fmt.bits, dtype=fmt.dtype)
            for dtype in ("float64", "float32", "float16"):
                if dtype != "float64" and not fmt.fits(dtype):
                    continue
                want = fmt.decode(codes, dtype=dtype)
                got = fc.decode(fmt, dev(codes), dtype).copy_to_host()
                assert _same(got, want), f"decode {dtype}"
            shaped = codes[:12].reshape(3, 4).astype(np.int32)        # signed codes, 2-D
            got = fc.decode(fmt, dev(shaped)).copy_to_host()
            assert got.shape == (3, 4) and _same(got, fmt.decode(shaped))
        case(f"decode:{fname}", dcheck)

    def decode_range():
        fmt = fmts["e2m1"]
        try:
            fc.decode(fmt, dev(np.array([1, 16], dtype=np.uint8)))
        except ValueError as exc:
            assert "codes must be in 0..15" in str(exc)
        else:
            raise AssertionError("an out-of-range code did not raise ValueError")
    case("decode:out-of-range", decode_range)

    # float16 device arrays: widened on the device, results narrowed back
    def half():
        fmt = fmts["float8_e4m3fn"]
        x = inputs(fmt, N, seed=2).astype(np.float16)
        got = fc.quantize(fmt, dev(x), "rne", True, None, None).copy_to_host()
        want = fmt.quantize(x, rounding="rne", saturate=True)
        assert got.dtype == np.float16 and _same(got, want)
        got = fc.encode(fmt, dev(x), "sr", False, 4, None).copy_to_host()
        assert _same(got, fmt.encode(x, rounding="sr", seed=4))
    case("float16-input", half)

    # a float32 input whose format needs the float64 layout (quantum below float32's range)
    def wide_layout():
        from fpformat import FloatFormat
        fmt = FloatFormat(8, 2, bias=140, name="e8m2b140")
        x = (np.random.default_rng(1).standard_normal(N) * 1e-40).astype(np.float32)
        got = fc.encode(fmt, dev(x), "rne", False, None, None).copy_to_host()
        assert _same(got, fmt.encode(x))
    case("float32-into-float64-layout", wide_layout)

    def bad_input():
        fmt = fmts["e2m1"]
        for call, exc in ((lambda: fc.encode(fmt, dev(np.ones(4, np.int32))), TypeError),
                          (lambda: fc.encode(fmt, dev(np.ones(4, np.float32)), "near"), ValueError),
                          (lambda: fc.quantize(fmt, dev(np.ones((4, 4), np.float32))[:, 1]),
                           ValueError),
                          (lambda: fc.encode(fmt, np.ones(4, np.float32)), TypeError)):
            try:
                call()
            except exc:
                continue
            raise AssertionError(f"expected {exc.__name__}")
    case("bad-input", bad_input)

    # the public API routes arrays with __cuda_array_interface__ here (simulated arrays lack
    # the attribute, so a subclass adds it) and answers with device arrays
    def dispatch():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        class WithInterface(FakeCUDAArray):
            @property
            def __cuda_array_interface__(self):
                return {"shape": self._ary.shape, "typestr": self._ary.dtype.str,
                        "data": (self._ary.ctypes.data, False), "version": 3, "strides": None}

        fmt = fmts["float8_e5m2"]
        x = inputs(fmt, N, seed=8).astype(np.float32).reshape(8, -1)
        codes = fmt.encode(WithInterface(x), rounding="sr", seed=2)
        assert getattr(codes, "__cuda_ndarray__", False), type(codes)
        assert _same(codes.copy_to_host(), fmt.encode(x, rounding="sr", seed=2))
        q = fmt.quantize(WithInterface(x), saturate=True)
        assert _same(q.copy_to_host(), fmt.quantize(x, saturate=True))
        c = fmt.encode(x)
        assert _same(fmt.decode(WithInterface(c)).copy_to_host(), fmt.decode(c))
    case("dispatch:FloatFormat", dispatch)

    def empty():
        fmt = fmts["e3m2"]
        got = fc.encode(fmt, dev(np.zeros((0, 3), np.float32))).copy_to_host()
        assert got.shape == (0, 3) and got.dtype == fmt.dtype
    case("empty", empty)

    # block formats: codes, scales and quantized values identical to the CPU's fused kernel
    blocks = {"mxfp4": "mxfp4", "mxfp8_e4m3": "mxfp8_e4m3", "mxfp6_e3m2": "mxfp6_e3m2",
              "mxint8": "mxint8", "nvfp4": "nvfp4", "e4m3/channel": "e4m3/channel",
              "e2m1/16/ue4m3fn": "e2m1/16/ue4m3fn", "e3m2/32/e8m0@ragged": "e3m2/32/e8m0",
              "e4m3/tensor": "e4m3/tensor"}
    rng = np.random.default_rng(0)
    for label, spec in blocks.items():
        bf = get_format(spec)
        L = 72 if "ragged" in label else 64                      # 72: a ragged last block
        x = (rng.standard_normal((6, L)) * np.exp2(rng.uniform(-30, 30, (6, 1)))).astype(np.float32)
        x[1] = 0.0                                               # a zero row (zero blocks)
        x[2, 5] = rng.uniform(1e3, 1e5)                          # an outlier: others flush
        if "nvfp4" not in label and "tensor" not in label:
            x[3, 7] = np.nan                                     # NaN / inf blocks
            x[4, 40] = -np.inf
        for mode in ("rne", "sr", "rtz"):
            def bcheck(bf=bf, x=x, mode=mode):
                for xi in (x, x.astype(np.float64)):
                    want = bf.encode(xi, rounding=mode, seed=5)
                    got = fc.encode(bf, dev(xi), mode, True, 5, None)
                    assert _same(got.codes.copy_to_host(), want.codes), "codes"
                    assert _same(got.scales.copy_to_host(), want.scales), "scales"
                    assert got.tensor_scale == want.tensor_scale or (
                        np.isnan(got.tensor_scale) and np.isnan(want.tensor_scale))
                    wq = bf.quantize(xi, rounding=mode, seed=5)
                    gq = fc.quantize(bf, dev(xi), mode, True, 5, None).copy_to_host()
                    assert _same(gq, wq), "quantize"
            case(f"block:{label}:{mode}", bcheck)

    def block_nvfp4_nan():
        bf = get_format("nvfp4")
        x = rng.standard_normal((2, 32)).astype(np.float32)
        x[0, 3] = np.nan
        got = fc.encode(bf, dev(x), "rne", True, None, None)
        want = bf.encode(x)
        assert np.isnan(got.tensor_scale) and _same(got.scales.copy_to_host(), want.scales)
        assert _same(fc.quantize(bf, dev(x)).copy_to_host(), bf.quantize(x))
    case("block:nvfp4:nan-tensor", block_nvfp4_nan)

    def block_unsupported():
        for spec, shape in (("e4m3/128x128", (4, 4)), ("e4m3/32@axis0", (64, 4))):
            try:
                fc.quantize(get_format(spec), dev(np.ones(shape, np.float32)))
            except ValueError:
                continue
            raise AssertionError(f"{spec} did not raise ValueError")
    case("block:unsupported-layouts", block_unsupported)
    return results


def run_ptx() -> dict[str, str]:
    """Compile each kernel kind for compute capability 9.0 with NVVM, without a GPU.

    numba-cuda asks the driver for the current device's compute capability when it compiles
    device functions, and NVRTC for the supported architectures; neither exists here, so those
    two lookups are answered with sm_90 (the compilation itself is numba's and NVVM's own)."""
    import types as pytypes

    import numba.cuda.cuda_paths as paths
    import numba.cuda.cudadrv.nvrtc as nvrtc
    import numba.cuda.dispatcher as dispatcher
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
    nvrtc.get_arch_option = lambda major, minor: f"compute_{major}{minor}"
    paths._get_nvrtc_path = lambda: None
    from numba import cuda, types

    from fpformat import core, get_format
    from fpformat import cuda as fc
    from fpformat.rounding import call_tuple, value_tuple
    fc._cuda()
    results: dict[str, str] = {}
    try:
        cuda.compile_ptx(fc._convert_kernel().py_func, (types.float32[::1], types.float64[::1]),
                         cc=(9, 0))
    except Exception as exc:  # no NVVM here: the parent test skips
        return {"unavailable": f"{type(exc).__name__}: {exc}"}

    def case(name, kernel, sig):
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            assert ".entry" in ptx
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"

    A = lambda t: t[::1]                                          # noqa: E731
    for fname, mode, S in (("float8_e4m3fn", "sr", core.SRC_FLOAT32),
                           ("float8_e5m2", "rne", core.SRC_FLOAT64),
                           ("float8_e8m0fnu", "rtp", core.SRC_FLOAT32)):
        f = get_format(fname)
        C = call_tuple(f, mode, False, None)
        V = value_tuple(f, C, S)
        bits = types.uint32 if S == core.SRC_FLOAT32 else types.int64
        case(f"encode:{fname}:{mode}", fc._encode_kernel(S, f.params, C),
             (A(bits), A(types.uint8), types.uint64))
        case(f"quantize:{fname}:{mode}", fc._quantize_kernel(S, f.params, C, V),
             (A(bits), A(bits), types.uint64))
    f = get_format("float8_e4m3fn")
    case("decode:float16", fc._decode_kernel(f.params, 2.0 ** -9),
         (A(types.uint8), A(types.float16), A(types.int32)))
    for src, dst in ((types.float16, types.float32), (types.float32, types.float16),
                     (types.float64, types.float32)):
        case(f"convert:{src}->{dst}", fc._convert_kernel(), (A(src), A(dst)))
    case("amax", fc._amax_kernel(), (A(types.float32), A(types.float64), A(types.int32)))
    for spec, mode, want_out, sdt in (("mxfp4", "sr", True, types.uint8),
                                      ("nvfp4", "rne", False, types.uint8),
                                      ("e4m3/channel", "rne", True, types.uint32)):
        bf = get_format(spec)
        k = bf.block_size if isinstance(bf.block_size, int) else 64
        B, FE, CE, FS, CS = fc.block_params(bf, k, 1.0 if bf.scale_rule == "nvfp4" else None,
                                             mode, True, None)
        case(f"block:{spec}:{mode}", fc._block_kernel(B, FE, CE, FS, CS, want_out),
             (types.float32[:, ::1], types.uint64, types.uint8[:, ::1], sdt[:, ::1],
              types.float32[:, ::1]))
    # The matrix-unit core (aligned and late summations) compiles as device code too.
    from fpformat import unit_core
    from fpformat.units import get_unit
    def unit_kernel_for(U, F, C, V):
        def unit_kernel(sa, ea, sb, eb, out):
            i = cuda.grid(1)
            if i < out.size:
                out[i] = unit_core.block_fma(sa[i], ea[i], sb[i], eb[i], 0.0, U, F, C, V)
        return pytypes.SimpleNamespace(py_func=unit_kernel)

    for unit_name, fin in (("h100", "float8_e4m3fn"), ("mi300x", "float16")):
        tuples = get_unit(unit_name, fin).tuples(get_format(fin), get_format("float32"))
        case(f"unit:{unit_name}:{fin}", unit_kernel_for(*tuples),
             (types.int64[:, ::1], types.int64[:, ::1], types.int64[:, ::1],
              types.int64[:, ::1], types.float64[::1]))
    return results


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "sim"
    out = run_sim() if which == "sim" else run_ptx()
    print(json.dumps(out))
