"""Child process for tests/test_cuda.py: checks that need numba.cuda configured before import.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_child.py sim  # GPU kernels in the CUDA simulator
    python tests/cuda_child.py ptx                          # compile the kernels for sm_90 (no GPU)

``sim`` calls the public API (``FloatFormat``/``BlockFormat`` encode, quantize, decode) with
numba's simulated device arrays, which route to :mod:`fpformat.cuda`, and compares every result
with the CPU's raw bits (NaN signs and payloads included) and dtype; ``ptx`` compiles every
kernel kind with NVVM for a real GPU (compute capability 9.0) without a GPU or driver, so that
code the simulator accepts but CUDA cannot lower is caught here.  Each prints one JSON object
``{case: "ok" | error text}`` on its last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
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
BLOCK_PRESETS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8",
                 "nvfp4")
#: Block layouts beyond the presets: per-channel (group path), UE4M3 amax, ragged blocks, one
#: scale per tensor (grid-wide path), 2-D tiles, blocks along the first axis.
BLOCK_SPECS = ("e4m3/channel", "e2m1/16/ue4m3fn", "e3m2/32/e8m0", "e4m3/tensor", "e4m3/8x16",
               "e4m3/16@axis0", "e5m2/channel@axis0")


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
    """float64 inputs exercising ``fmt``: specials (NaNs of both signs), ties between neighbours
    (midpoints), the neighbours themselves, values beyond max, and random values over the
    format's range."""
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


def as_kind(x64: np.ndarray, kind: str) -> np.ndarray:
    """``x64`` in a float kind (bfloat16: ml_dtypes), NaN signs kept."""
    import ml_dtypes
    with np.errstate(over="ignore", invalid="ignore"):
        return x64.astype(ml_dtypes.bfloat16 if kind == "bfloat16" else kind)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "ui":
        return a
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _same(a, b) -> bool:
    """Same shape, dtype and raw bits (NaN signs and payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(_bits(a), _bits(b)))


def _diff(a, b) -> str:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    idx = np.flatnonzero(_bits(a).reshape(-1) != _bits(b).reshape(-1))[:4]
    return f"at {idx}: {_bits(a).reshape(-1)[idx]} vs {_bits(b).reshape(-1)[idx]}"


def run_sim() -> dict[str, str]:
    # The simulator's scheduler polls its threads while they wait at a barrier; a shorter GIL
    # switch interval lets the waiting threads run sooner (about 10x faster block kernels).
    sys.setswitchinterval(5e-4)
    from numba import cuda

    from fpformat import cuda as fc
    from fpformat import cuda_kernels as ck
    from fpformat import get_format
    results: dict[str, str] = {}

    def case(name, fn):
        t0 = time.perf_counter()
        try:
            fn()
            results[name] = "ok"
        except Exception as exc:  # reported to the parent test, which fails on it
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        print(f"{time.perf_counter() - t0:8.3f} s  {name}", file=sys.stderr)

    def dev(a):
        return cuda.to_device(np.require(a, requirements="C"))     # 0-d stays 0-d

    def host(a):
        return a.copy_to_host()

    def raises(exc, call, text=""):
        try:
            call()
        except exc as e:
            assert text in str(e), f"{exc.__name__} without {text!r}: {e}"
            return
        raise AssertionError(f"expected {exc.__name__}")

    fmts = element_formats()

    # encode and quantize: every format x rounding mode x saturate, float32 and float64 inputs;
    # float16 and bfloat16 inputs for three modes
    for fname, fmt in fmts.items():
        x64 = inputs(fmt, N, seed=len(fname))
        for mode in MODES:
            for sat in (False, True):
                kinds = ("float32", "float64") + (("float16", "bfloat16")
                                                  if mode in ("rne", "rtp", "sr") else ())

                def check(fmt=fmt, mode=mode, sat=sat, x64=x64, kinds=kinds):
                    for kind in kinds:
                        x = as_kind(x64, kind)
                        want = fmt.encode(x, rounding=mode, saturate=sat, seed=11)
                        got = host(fmt.encode(dev(x), rounding=mode, saturate=sat, seed=11))
                        assert _same(got, want), f"encode {kind}: {_diff(got, want)}"
                        if fmt.fits(kind):
                            want = fmt.quantize(x, rounding=mode, saturate=sat, seed=11)
                            got = host(fmt.quantize(dev(x), rounding=mode, saturate=sat,
                                                    seed=11))
                            assert _same(got, want), f"quantize {kind}: {_diff(got, want)}"
                case(f"elem:{fname}:{mode}:{'sat' if sat else 'ieee'}", check)

    # IEEE presets as element formats: 64-bit codes with the sign bit set are negative int64s in
    # the kernels (stored into uint64 arrays with the same bits), and narrowing to 16/32 bits
    def wide_codes():
        x64 = inputs(get_format("float16"), 64, seed=21)
        x64[:8] = [-1.5, -2.0 ** -1074, -np.nan, -np.inf, -0.0, -1e308, -3e-310, -65504.5]
        for name in ("float64", "float32", "float16", "bfloat16"):
            fmt = get_format(name)
            for kind in ("float64", "float32", "float16"):
                x = as_kind(x64, kind)
                for mode in MODES if name == "float64" else ("rne", "rtz", "sr"):
                    want = fmt.encode(x, rounding=mode, seed=4)
                    got = host(fmt.encode(dev(x), rounding=mode, seed=4))
                    assert _same(got, want), f"{name} encode {kind} {mode}: {_diff(got, want)}"
                    assert (np.asarray(want) >> (fmt.bits - 1)).any(), "no negative codes"
                    if fmt.fits(kind):
                        want = fmt.quantize(x, rounding=mode, seed=4)
                        got = host(fmt.quantize(dev(x), rounding=mode, seed=4))
                        assert _same(got, want), f"{name} quantize {kind} {mode}"
    case("ieee-presets:64-bit-codes", wide_codes)

    # stochastic rounding: sr_bits, the flat index of a 2-D array, prefix property, seeds differ
    def sr_checks():
        fmt = fmts["float8_e4m3fn"]
        x = inputs(fmt, 2 * N, seed=5).astype(np.float32).reshape(16, -1)
        for bits in (1, 8, 23):
            want = fmt.encode(x, rounding="sr", seed=3, sr_bits=bits)
            got = host(fmt.encode(dev(x), rounding="sr", seed=3, sr_bits=bits))
            assert _same(got, want), f"sr_bits={bits}"
        full = host(fmt.encode(dev(x), rounding="sr", seed=9)).reshape(-1)
        part = host(fmt.encode(dev(x.reshape(-1)[:100]), rounding="sr", seed=9))
        assert _same(part, full[:100]), "prefix of the input must give a prefix of the output"
        other = host(fmt.encode(dev(x), rounding="sr", seed=10)).reshape(-1)
        assert not np.array_equal(full, other), "different seeds gave identical SR codes"
    case("sr:bits-index-prefix-seed", sr_checks)

    # decode: every code of each format, into every float dtype whose values fit
    for fname, fmt in fmts.items():
        def dcheck(fmt=fmt):
            codes = np.arange(1 << fmt.bits, dtype=fmt.dtype)
            for dtype in ("float64", "float32", "float16", "bfloat16"):
                if dtype != "float64" and not fmt.fits(dtype):
                    continue
                want = fmt.decode(codes, dtype=dtype)
                got = host(fmt.decode(dev(codes), dtype=dtype))
                assert _same(got, want), f"decode {dtype}: {_diff(got, want)}"
            shaped = codes[:12].reshape(3, 4).astype(np.int32)        # signed codes, 2-D
            got = host(fmt.decode(dev(shaped)))
            assert _same(got, fmt.decode(shaped))
        case(f"decode:{fname}", dcheck)

    def decode_range():
        fmt = fmts["e2m1"]
        raises(ValueError, lambda: fmt.decode(dev(np.array([1, 16], dtype=np.uint8))),
               "codes must be in 0..15")
        raises(ValueError, lambda: fmt.decode(dev(np.array([-1, 2], dtype=np.int16))),
               "codes must be in 0..15")
    case("decode:out-of-range", decode_range)

    # the integer conversions that replace float conversions of inputs (NaN signs kept)
    def bit_helpers():
        h = np.arange(1 << 16, dtype=np.uint16)
        want = h.view(np.float16).astype(np.float32).view(np.uint32)
        got = np.array([ck.f16_to_f32_bits(v) for v in h], dtype=np.int64)
        assert np.array_equal(got, want.astype(np.int64)), "float16 -> float32 bits"
        rng = np.random.default_rng(4)
        b = np.concatenate([rng.integers(0, 1 << 32, 4000, dtype=np.uint64),
                            [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7F800000,
                             0x80000001, 0x80000000, 1]]).astype(np.uint32)
        got = np.array([ck.f32_to_f64_bits(v) for v in b], dtype=np.int64).view(np.uint64)
        ref = b.view(np.float32).astype(np.float64).view(np.uint64)
        nan = np.isnan(b.view(np.float32))
        assert np.array_equal(got[~nan], ref[~nan]), "float32 -> float64 bits"
        assert np.array_equal(got[nan] >> np.uint64(63), ref[nan] >> np.uint64(63)), "NaN sign"
    case("bits:widening", bit_helpers)

    # a float32 input whose format needs the float64 layout (quantum below float32's range)
    def wide_layout():
        from fpformat import FloatFormat
        fmt = FloatFormat(8, 2, bias=140, name="e8m2b140")
        x = (np.random.default_rng(1).standard_normal(N) * 1e-40).astype(np.float32)
        for xi in (x, x.astype(np.float16)):
            assert _same(host(fmt.encode(dev(xi))), fmt.encode(xi))
        fmt = FloatFormat(8, 1, bias=129, name="e8m1b129")   # float32 values, float64 layout
        assert _same(host(fmt.quantize(dev(x))), fmt.quantize(x))
    case("float32-into-float64-layout", wide_layout)

    def bad_input():
        fmt = fmts["e2m1"]
        raises(TypeError, lambda: fmt.encode(dev(np.ones(4, np.int32))))
        raises(ValueError, lambda: fmt.encode(dev(np.ones(4, np.float32)), "near"), "rounding")
        raises(ValueError, lambda: fmt.quantize(dev(np.ones((4, 4), np.float32))[:, 1]),
               "C-contiguous")
        raises(ValueError, lambda: get_format("e8m2").quantize(dev(np.ones(4, np.float16))),
               "float16 values")
    case("bad-input", bad_input)

    # the public API routes simulated device arrays (no __cuda_array_interface__) to the GPU
    def dispatch():
        fmt = fmts["float8_e5m2"]
        x = inputs(fmt, N, seed=8).astype(np.float32).reshape(8, -1)
        codes = fmt.encode(dev(x), rounding="sr", seed=2)
        assert getattr(codes, "__cuda_ndarray__", False), type(codes)
        assert _same(host(codes), fmt.encode(x, rounding="sr", seed=2))
        enc = get_format("mxfp4").encode(dev(x))
        assert getattr(enc.codes, "__cuda_ndarray__", False), type(enc.codes)
    case("dispatch:public-api", dispatch)

    def empty_and_scalar():
        fmt = fmts["e3m2"]
        got = host(fmt.encode(dev(np.zeros((0, 3), np.float32))))
        assert got.shape == (0, 3) and got.dtype == fmt.dtype
        x0 = np.array(1.3, dtype=np.float32)
        assert _same(host(fmt.quantize(dev(x0))), fmt.quantize(x0))
        b = get_format("mxfp4")
        e = b.encode(dev(np.zeros((0, 32), np.float32)))
        assert host(e.codes).shape == (0, 32) and host(e.scales).shape == (0, 1)
        raises(ValueError, lambda: b.quantize(dev(x0)), "at least one dimension")
    case("empty-and-0d", empty_and_scalar)

    # out=: a separate array, in place, overlap and mismatches refused
    def out_param():
        fmt = fmts["float8_e4m3fn"]
        x = inputs(fmt, N, seed=3).astype(np.float32)
        want = fmt.quantize(x, saturate=True)
        dx, out = dev(x), cuda.device_array_like(x)
        assert fmt.quantize(dx, saturate=True, out=out) is out and _same(host(out), want)
        assert fmt.quantize(dx, saturate=True, out=dx) is dx and _same(host(dx), want)
        big = dev(np.zeros(2 * N, np.float32))
        raises(ValueError, lambda: fmt.quantize(big[:N], out=big[1:N + 1]), "overlaps")
        raises(ValueError, lambda: fmt.quantize(dev(x), out=dev(x.astype(np.float64))),
               "dtype and shape")
        raises(TypeError, lambda: fmt.quantize(dev(x), out=np.empty_like(x)), "CUDA array")
        b = get_format("nvfp4")
        xb = np.random.default_rng(2).standard_normal((4, 48)).astype(np.float16)
        want = b.quantize(xb)
        dx, out = dev(xb), cuda.device_array_like(xb)
        assert b.quantize(dx, out=out) is out and _same(host(out), want)
        assert b.quantize(dx, out=dx) is dx and _same(host(dx), want)
    case("out:element-and-block", out_param)

    # block formats: every preset and layout, float32/float64/float16/bfloat16 data; codes,
    # scales, tensor scale, quantized values and the GPU decode of the GPU encoding
    rng = np.random.default_rng(0)
    for spec in BLOCK_PRESETS + BLOCK_SPECS:
        bf = get_format(spec)
        L = 72 if spec == "e3m2/32/e8m0" else 64                # 72: a ragged last block
        x = (rng.standard_normal((6, L)) * np.exp2(rng.uniform(-20, 20, (6, 1))))
        x[1] = 0.0                                               # a zero row (zero blocks)
        x[2, 5] = rng.uniform(1e3, 1e4) * np.exp2(rng.uniform(-20, 0))   # an outlier
        if bf.scale_format is None or bf.scale_format.has_nan:
            if "nvfp4" not in spec and "tensor" not in spec:
                x[3, 7] = np.nan                                 # NaN / inf blocks
                x[4, 40] = -np.inf
        for kind, mode, sat in (("float32", "rne", True), ("float64", "rne", True),
                                ("float16", "rne", True), ("bfloat16", "rne", True),
                                ("float32", "sr", True), ("float16", "rtz", True),
                                ("float32", "rne", False)):
            def bcheck(bf=bf, x=x, kind=kind, mode=mode, sat=sat):
                xi = as_kind(x, kind)
                want = bf.encode(xi, rounding=mode, saturate=sat, seed=5)
                got = bf.encode(dev(xi), rounding=mode, saturate=sat, seed=5)
                gc = host(got.codes)
                assert _same(gc, want.codes), f"codes {_diff(gc, want.codes)}"
                assert _same(host(got.scales), want.scales), "scales"
                assert got.tensor_scale == want.tensor_scale or (
                    np.isnan(got.tensor_scale) and np.isnan(want.tensor_scale)), "tensor scale"
                assert got.dtype == want.dtype and got.shape == want.shape
                wq = bf.quantize(xi, rounding=mode, saturate=sat, seed=5)
                gq = host(bf.quantize(dev(xi), rounding=mode, saturate=sat, seed=5))
                assert _same(gq, wq), f"quantize {_diff(gq, wq)}"
                for dtype in ("float64", kind):
                    wd = bf.decode(want, dtype=dtype)
                    gd = host(bf.decode(got, dtype=dtype))
                    assert _same(gd, wd), f"decode {dtype} {_diff(gd, wd)}"
            case(f"block:{spec}:{kind}:{mode}:{'sat' if sat else 'ieee'}", bcheck)

    # the issue's float16 NVFP4 example: one rounding of the exact product on both devices
    def issue_example():
        t = np.float32(1.0009765625 / 2688)
        x = np.zeros((2, 16), np.float16)
        x[0, 0] = 1.0009765625
        x[1, 0] = np.float16(6 * 0.013671875 * float(t))
        bf = get_format("nvfp4")
        want = bf.quantize(x)
        got = host(bf.quantize(dev(x)))
        assert _same(got, want), _diff(got, want)
        assert int(got.view(np.uint16)[1, 0]) == 0x0201, hex(int(got.view(np.uint16)[1, 0]))
    case("block:nvfp4:float16-single-rounding", issue_example)

    # NaN signs: element NaN codes (non-saturating overflow) keep their sign through quantize
    def nan_signs():
        bf = get_format("mxfp8_e4m3")
        x = np.full((2, 32), 1.0, np.float32)
        x[0, :2] = [500.0, -500.0]               # scale 1: both overflow E4M3FN (NaN codes)
        x[1, 3] = -np.nan
        for kind in ("float32", "float16", "bfloat16", "float64"):
            xi = as_kind(x.astype(np.float64), kind)
            want = bf.quantize(xi, saturate=False, rounding="rtp")
            got = host(bf.quantize(dev(xi), saturate=False, rounding="rtp"))
            assert _same(got, want), f"{kind} {_diff(got, want)}"
    case("block:nan-signs", nan_signs)

    # the grid-wide path for long blocks (rows beyond WIDE_PER_THREAD * threads) and a long
    # ragged row on the group path
    def long_rows():
        n = ck.WIDE_PER_THREAD * fc.SIM_THREADS + 37
        x = np.random.default_rng(6).standard_normal((2, n)).astype(np.float32)
        x[1, 100] = np.inf
        for spec in ("e4m3/channel", "mxfp4", "e2m1/channel/ue4m3fn"):
            bf = get_format(spec)
            if spec.endswith("ue4m3fn"):
                x[1, 100] = 0.5
            want = bf.encode(x, rounding="sr", seed=1)
            got = bf.encode(dev(x), rounding="sr", seed=1)
            assert _same(host(got.codes), want.codes) and _same(host(got.scales), want.scales)
            assert _same(host(bf.quantize(dev(x))), bf.quantize(x)), spec
        bf = get_format("e4m3/40x40")                     # 2-D tiles on the grid-wide path
        x = np.random.default_rng(7).standard_normal((80, 90)).astype(np.float16)
        x[50, 3] = -np.nan
        want = bf.encode(x)
        got = bf.encode(dev(x))
        assert _same(host(got.codes), want.codes) and _same(host(got.scales), want.scales)
        assert _same(host(bf.quantize(dev(x))), bf.quantize(x)), "tiles"
    case("block:long-rows-and-tiles", long_rows)

    def refuse_nonfinite():
        bf = get_format("e2m1/16/ue5m3")                  # every scale code finite
        x = np.ones((2, 32), np.float32)
        x[1, 2] = np.nan
        raises(ValueError, lambda: bf.encode(x), "NaN")
        raises(ValueError, lambda: bf.encode(dev(x)), "NaN")
        assert _same(host(bf.quantize(dev(x))), bf.quantize(x))
    case("block:scale-without-nan", refuse_nonfinite)

    def decode_bad_codes():
        bf = get_format("mxfp4")
        enc = bf.encode(dev(np.ones((2, 32), np.float32)))
        codes = host(enc.codes)
        codes[0, 0] = 16
        from fpformat.scales import BlockEncoding
        bad = BlockEncoding(codes=dev(codes), scales=enc.scales, tensor_scale=None, format=bf,
                            shape=enc.shape, dtype=enc.dtype)
        raises(ValueError, lambda: bf.decode(bad), "codes must be in 0..15")
    case("block:decode-out-of-range", decode_bad_codes)

    # one compilation per (format, mode, dtype, kernel kind): new data, shapes, tensor scales,
    # row lengths and seeds compile nothing
    def compilations():
        rng = np.random.default_rng(9)
        # modes the cases above did not use: the first call compiles
        for spec, mode in (("nvfp4", "rna"), ("e4m3/channel", "rtn"), ("e4m3/tensor", "rna"),
                           ("mxfp8_e4m3", "rto")):
            bf = get_format(spec)
            shapes = ((2, 32), (3, 48), (1, 80), (4, 16))
            counts = []
            for i, shape in enumerate(shapes):
                x = (rng.standard_normal(shape) * 10.0 ** i).astype(np.float16)
                before = fc.compilations()
                bf.quantize(dev(x), rounding=mode, seed=i)
                counts.append(fc.compilations() - before)
            assert counts[0] >= 1 and counts[1:] == [0] * (len(shapes) - 1), (spec, counts)
        f = get_format("e5m3")
        before = fc.compilations()
        for i in range(3):
            f.quantize(dev(rng.standard_normal(5 + i).astype(np.float32)), rounding="sr", seed=i)
        assert fc.compilations() - before == 1
    case("compilations:data-and-shapes", compilations)
    return results


def run_ptx() -> dict[str, str]:
    """Compile each kernel kind for compute capability 9.0 with NVVM, without a GPU
    (:func:`tests.procs.nvvm_without_a_gpu`)."""
    import types as pytypes

    from tests.procs import nvvm_without_a_gpu
    nvvm_without_a_gpu()
    from numba import cuda, types

    from fpformat import core, get_format
    from fpformat import cuda as fc
    from fpformat import cuda_kernels as ck
    from fpformat.block_kernels import block_params
    from fpformat.rounding import call_tuple, value_tuple
    fc._cuda()
    results: dict[str, str] = {}
    try:
        cuda.compile_ptx(ck.fill_kernel().py_func, (types.int64[::1], types.int64), cc=(9, 0))
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
    i64 = types.int64
    bits = {ck.F16: types.uint16, ck.BF16: types.int16, ck.F32: types.uint32, ck.F64: types.int64}
    for fname, mode, kind in (("float8_e4m3fn", "sr", "float32"), ("float8_e5m2", "rne", "float64"),
                              ("float8_e8m0fnu", "rtp", "float16"), ("e3m2", "rne", "bfloat16")):
        f = get_format(fname)
        C = call_tuple(f, mode, False, None)
        IN = ck.KINDS[kind]
        S = fc._layout(f, fc._Raw(None, fc._Device(None, kind, "numba", None, 0), ()))
        V = value_tuple(f, C, S)
        case(f"encode:{fname}:{mode}:{kind}", ck.encode_kernel(IN, S, f.params, C),
             (A(bits[IN]), A(types.uint8), types.uint64))
        case(f"quantize:{fname}:{mode}:{kind}",
             ck.quantize_kernel(IN, S, f.params, C, V, fc._narrowing(type(f), kind, S)),
             (A(bits[IN]), A(bits[IN]), types.uint64))
    f = get_format("float64")                    # 64-bit codes: int64 results into uint64
    C = call_tuple(f, "sr", False, None)
    for kind in ("float64", "float16"):
        IN = ck.KINDS[kind]
        S = fc._layout(f, fc._Raw(None, fc._Device(None, kind, "numba", None, 0), ()))
        case(f"encode:float64:sr:{kind}", ck.encode_kernel(IN, S, f.params, C),
             (A(bits[IN]), A(types.uint64), types.uint64))
    f = get_format("float8_e4m3fn")
    case("decode:float16", ck.decode_kernel(f.params, 2.0 ** -9, 256, True,
                                            fc._narrowing(type(f), "float16", core.SRC_FLOAT64)),
         (A(types.int32), A(types.uint16), A(i64)))
    case("fill", ck.fill_kernel(), (A(i64), i64))
    for spec, mode, kind, want_codes in (("mxfp4", "sr", "float32", False),
                                         ("nvfp4", "rne", "float16", True),
                                         ("e4m3/channel", "rne", "bfloat16", False),
                                         ("mxint8", "rtz", "float64", True)):
        bf = get_format(spec)
        IN = ck.KINDS[kind]
        B, FE, CE, FS, CS = block_params(bf, 1, None, mode, True, None)
        BC = ck.block_constants(B)
        NARROW = fc._narrowing(type(bf.element), kind, core.SRC_FLOAT64)
        sdt = types.uint32 if bf.scale_format is None else types.uint8
        case(f"group:{spec}:{mode}:{kind}",
             ck.group_kernel(IN, IN, FE, CE, FS, CS, BC, NARROW, want_codes, not want_codes,
                             fc.THREADS),
             (A(bits[IN]), A(i64), types.uint64, i64, i64, i64, i64, i64, i64, A(types.uint8),
              A(sdt), A(bits[IN])))
        case(f"amax:{kind}", ck.amax_kernel(IN, fc.THREADS),
             (A(bits[IN]), i64, i64, i64, i64, i64, A(i64)))
        case(f"scale:{spec}", ck.scale_kernel(IN, FS, CS, BC, want_codes),
             (A(i64), A(i64), A(sdt), A(types.float64)))
        case(f"element:{spec}:{mode}:{kind}",
             ck.element_kernel(IN, IN, FE, CE, BC, NARROW, want_codes, not want_codes),
             (A(bits[IN]), A(types.float64), types.uint64, i64, i64, i64, i64, i64,
              A(types.uint8), A(bits[IN])))
        el, sf = bf.element, bf.scale_format
        case(f"block_decode:{spec}:{kind}",
             ck.block_decode_kernel(FE, 2.0 ** (el.emin - el.man_bits), 1 << el.bits, FS,
                                    1.0 if sf is None else 2.0 ** (sf.emin - sf.man_bits),
                                    1 << (32 if sf is None else sf.bits), BC, True, NARROW),
             (A(types.uint8), A(sdt), types.float64, i64, i64, i64, i64, i64, A(bits[IN]),
              A(i64)))
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
