"""Child process for tests/test_cuda_gemm.py: the matrix units on the GPU path.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_gemm_child.py sim  # fpformat.gemm.mma on simulated
                                                                # device arrays vs the CPU
    python tests/cuda_gemm_child.py ptx                         # compile the kernels for sm_90

``sim`` calls the public :func:`fpformat.gemm.mma` and :func:`fpformat.gemm.matmul` with
numba's simulated device arrays (which route to :mod:`fpformat.cuda_gemm`) and compares every
result with the CPU's, raw bits and dtype (NaN signs included).  ``ptx`` compiles the GPU
kernels with NVVM for compute capability 9.0 without a GPU.  Each prints one JSON object
``{case: "ok" | error text}`` as its last line.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The simulator runs the core as Python on numpy scalars, where numpy warns about the wrapping
# integer arithmetic that the kernels rely on.
warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)

#: (unit, input format, output format): NVIDIA presets of every generation and input width,
#: AMD CDNA3 (late and odd/even summations) and proposed units covering the window options.
UNITS = (("h100", "float16", "float32"), ("h100", "float16", "float16"),
         ("h100", "bfloat16", "float32"), ("h100", "float8_e4m3fn", "float32"),
         ("h100", "float8_e5m2", "float32"), ("h100", "tf32", "float32"),
         ("a100", "float16", "float32"), ("a100", "bfloat16", "float16"),
         ("v100", "float16", "float32"), ("b200", "float8_e4m3fn", "float32"),
         ("ada", "float8_e5m2", "float32"), ("mi300x", "float16", "float32"),
         ("mi300x", "bfloat16", "float32"), ("mi300x", "float8_e4m3fnuz", "float32"),
         ("mi300x", "float8_e5m2fnuz", "float32"),
         ("fma8/x3/rne/sticky", "float16", "float32"), ("fma16/x-4/rtz/c1", "float16", "float32"),
         ("fma4/x0/rtp/nocarry/ftzin/ftzout", "bfloat16", "float32"),
         ("fma8/x1/rna/p10/min-20", "float8_e4m3fn", "float16"))


def operands(fin, fout, shape_a, shape_b, seed: int, specials: bool = True):
    """Values of ``fin`` for a and b (wide exponent spread, subnormals, some beyond-range
    products) and of ``fout`` for c, as float64; with ``specials`` a NaN in a, an infinity (or
    the max) in b and a negative zero in c."""
    from fpformat import get_format
    fi, fo = get_format(fin), get_format(fout)
    rng = np.random.default_rng(seed)

    def values(fmt, shape, spread):
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-spread, spread + 1, shape))
        return np.asarray(fmt.quantize(x, saturate=True), dtype=np.float64)

    a = values(fi, shape_a, min(fi.emax, 12))
    b = values(fi, shape_b, min(fi.emax, 12))
    a.reshape(-1)[1::7] = 0.0
    if fi.min_subnormal > 0:
        b.reshape(-1)[2::9] = fi.min_subnormal * 3
    c_shape = shape_a[:-1] + shape_b[-1:]
    c = values(fo, c_shape, 6)
    if specials:
        a.reshape(-1)[3 % a.size] = np.nan if fi.nan_codes else 0.0
        b.reshape(-1)[-2] = np.inf if fi.inf else fi.max
        c.reshape(-1)[-1] = -0.0
        a.reshape(-1)[-1] = fi.max
        b.reshape(-1)[-1] = -fi.max
    return a, b, c


def bits_equal(got, want) -> bool:
    """Same shape, dtype and raw bits (NaN signs and payloads included)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    w = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    return bool(np.array_equal(got.view(w), want.view(w)))


def describe(got, want) -> str:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"got {got.dtype}{got.shape}, want {want.dtype}{want.shape}"
    w = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    bad = np.flatnonzero(got.view(w).reshape(-1) != want.view(w).reshape(-1))
    return (f"{bad.size} of {want.size} differ, e.g. at {bad[:3].tolist()}: "
            f"{got.reshape(-1)[bad[:3]].tolist()} vs {want.reshape(-1)[bad[:3]].tolist()}")


def run_sim() -> dict[str, str]:
    from numba import cuda

    from fpformat import get_format
    from fpformat.gemm import mma
    results: dict[str, str] = {}

    def case(name, fn):
        try:
            fn()
            results[name] = "ok"
        except Exception as exc:  # reported to the parent test, which fails on it
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"

    def dev(x, dtype=np.float32):
        return cuda.to_device(np.ascontiguousarray(np.asarray(x).astype(dtype)))

    def same(got, want):
        host = got.copy_to_host()
        assert bits_equal(host, want), describe(host, want)

    # every unit: batch of 2, K = 37 (a ragged last block for every fma), a c array; a as
    # float32, b as float64, c as float32 device arrays (or float16 where it holds them)
    for k, (unit, fin, fout) in enumerate(UNITS):
        def check(unit=unit, fin=fin, fout=fout, seed=k):
            a, b, c = operands(fin, fout, (2, 3, 37), (2, 37, 4), seed)
            want = mma(a, b, c, unit, fin, fout)
            cdt = np.float16 if fout == "float16" else np.float32
            got = mma(dev(a), dev(b, np.float64), dev(c, cdt), unit, fin, fout)
            same(got, want)
        case(f"unit:{unit}:{fin}->{fout}", check)

    def quantize_inputs():
        rng = np.random.default_rng(7)
        a = rng.standard_normal((4, 40)) * 300                 # beyond e4m3fn's 448: saturates
        b = rng.standard_normal((40, 3))
        want = mma(a, b, 0.0, "h100", "float8_e4m3fn", quantize_inputs=True)
        got = mma(dev(a, np.float64), dev(b), 0.0, "h100", "float8_e4m3fn",
                  quantize_inputs=True)
        same(got, want)
        got16 = mma(dev(a, np.float16), dev(b, np.float16), 0.0, "mi300x", "float16",
                    quantize_inputs=True)
        same(got16, mma(a.astype(np.float16), b.astype(np.float16), 0.0, "mi300x", "float16",
                        quantize_inputs=True))
    case("quantize-inputs", quantize_inputs)

    def broadcasting():
        a, b, _ = operands("float16", "float32", (2, 1, 3, 20), (3, 20, 2), 3, specials=False)
        c = np.array([0.5, -2.0])                              # a host array, broadcast over rows
        same(mma(dev(a), dev(b), c, "h100"), mma(a, b, c, "h100"))
        a1 = a[0, 0, 0]                                        # 1-D a: (20,) @ (3, 20, 2)
        same(mma(dev(a1), dev(b), 1.0, "a100"), mma(a1, b, 1.0, "a100"))
        b1 = b[0, :, 0]                                        # (2, 1, 3, 20) @ (20,)
        same(mma(dev(a), dev(b1), 0.0, "a100"), mma(a, b1, 0.0, "a100"))
        c_dev = dev(np.array([[0.25], [-1.0], [0.0]]))           # a device c of shape (3, 1)
        same(mma(dev(a), dev(b), c_dev, "mi300x"),
             mma(a, b, np.array([[0.25], [-1.0], [0.0]]), "mi300x"))
    case("broadcasting", broadcasting)

    def nan_signs_and_zero_k():
        c = np.array([[-np.nan, np.nan, -0.0, 3.0]], dtype=np.float32)
        a = np.zeros((1, 0))
        b = np.zeros((0, 4))
        want = mma(a, b, c, "h100")                             # K = 0: the result is c
        assert bits_equal(want.view(np.uint32)[0, :2], np.array([0xFFC00000, 0x7FC00000],
                                                                np.uint32))
        same(mma(dev(a), dev(b), dev(c), "h100"), want)
        a, b, _ = operands("float16", "float16", (2, 16), (16, 2), 4)   # NaN rows, float16 out
        same(mma(dev(a), dev(b), 0.0, "h100", "float16", "float16"),
             mma(a, b, 0.0, "h100", "float16", "float16"))
    case("nan-signs-and-k0", nan_signs_and_zero_k)

    def empty():
        b = np.ones((8, 3))
        for a in (np.zeros((0, 8)), np.zeros((2, 0, 3, 8))):
            same(mma(dev(a), dev(b), 0.0, "h100"), mma(a, b, 0.0, "h100"))
    case("empty", empty)

    def public_api_on_plain_device_arrays():
        # numba's simulated device arrays have no __cuda_array_interface__: routed all the same
        a, b, c = operands("float16", "float32", (3, 16), (16, 2), 5, specials=False)
        got = mma(cuda.to_device(a), cuda.to_device(b), cuda.to_device(c), "h100")
        assert getattr(got, "__cuda_ndarray__", False), type(got)
        same(got, mma(a, b, c, "h100"))
    case("dispatch", public_api_on_plain_device_arrays)

    def random_units():
        # hypothesis draws proposed units (every field of MatrixUnit the GPU runs), formats and
        # shapes; each draw is compared with the CPU bit for bit
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        from fpformat.units import IN_FORMATS, MatrixUnit

        @st.composite
        def units(draw):
            summation = draw(st.sampled_from(("aligned", "aligned", "late", "odd-even")))
            fields = dict(fma=draw(st.sampled_from((1, 2, 4, 8, 16, 32))), summation=summation)
            if summation == "aligned":
                fields.update(
                    extra_bits=draw(st.integers(-12, 6)), carry_bit=draw(st.booleans()),
                    sticky=draw(st.booleans()),
                    rounding=draw(st.sampled_from(("rne", "rna", "rtz", "rtp", "rtn", "rto"))),
                    result_bits=draw(st.none() | st.integers(3, 23)),
                    min_exponent=draw(st.none() | st.integers(-140, -10)),
                    carry_bits=draw(st.none() | st.integers(0, 4)))
                fout = draw(st.sampled_from(("float32", "float16")))
            else:
                fields.update(extra_bits=draw(st.integers(0, 8)), rounding="rne")
                fout = "float32"
            fields.update(subnormal_inputs=draw(st.booleans()),
                          subnormal_outputs=draw(st.booleans()))
            fin = draw(st.sampled_from(IN_FORMATS))
            return MatrixUnit(**fields), fin, fout

        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(units(), st.integers(1, 70), st.integers(0, 1000))
        def check(drawn, k, seed):
            unit, fin, fout = drawn
            a, b, c = operands(fin, fout, (2, k), (k, 3), seed, specials=seed % 3 == 0)
            same(mma(dev(a), dev(b), dev(c), unit, fin, fout), mma(a, b, c, unit, fin, fout))
        check()
    case("hypothesis:units", random_units)

    # the accumulator model (fpformat.gemm.matmul): the CPU kernel's scalar core on the device
    from fpformat.gemm import Accumulator, matmul

    def mm_operands(m, k, n, seed, specials=True):
        rng = np.random.default_rng(seed)
        f16 = get_format("float16")
        a = f16.quantize(rng.standard_normal((m, k)) * np.exp2(rng.integers(-8, 9, (m, k))))
        b = f16.quantize(rng.standard_normal((k, n)) * np.exp2(rng.integers(-8, 9, (k, n))))
        if specials and k:
            a[0, k // 2] = np.inf
            b[k - 1, n - 1] = -np.nan
            a[m - 1, :] = 0.0
        return a, b

    def mm_same(acc, a, b, seed, a_dtype=np.float32, b_dtype=np.float64):
        wv, wc = matmul(a, b, accumulator=acc, seed=seed, return_codes=True)
        gv, gc = matmul(dev(a, a_dtype), dev(b, b_dtype), accumulator=acc, seed=seed,
                        return_codes=True)
        same(gv, wv)
        gc = gc.copy_to_host()
        assert gc.dtype == wc.dtype and np.array_equal(gc, wc), f"codes {acc.label()}"

    def matmul_accumulators():
        accs = (Accumulator("e8m13", "rtz"), Accumulator("float32"),
                Accumulator("e8m13", "sr", chunk=8, sr_bits=5),
                Accumulator("e5m10", "rna", order="pairwise", fused_width=3),
                Accumulator("e6m7", "rtp", fused_width=4, chunk=12, promote_format="e8m13",
                            promote_rounding="sr"),
                Accumulator("float8_e4m3fn", "rne", saturate=True),
                Accumulator("e8m23", "rto", order="pairwise", chunk=5),
                Accumulator("bfloat16", "rtn", fused_width=70))
        for i, acc in enumerate(accs):
            for k in (0, 1, 29):
                a, b = mm_operands(3, k, 4, seed=10 * i + k)
                mm_same(acc, a, b, seed=i, b_dtype=np.float16 if i % 2 else np.float64)
        a, b = mm_operands(3, 20, 2, seed=3, specials=False)
        got = matmul(dev(a), dev(b), "e8m13", "rtz")                 # values only, in kind
        assert getattr(got, "__cuda_ndarray__", False), type(got)
        same(got, matmul(a, b, "e8m13", "rtz"))
    case("matmul:accumulators", matmul_accumulators)

    def matmul_random():
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
        modes = st.sampled_from(("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr"))

        @st.composite
        def accumulators(draw):
            return Accumulator(
                draw(st.sampled_from(("e8m13", "e5m10", "e8m23", "e6m4", "e3m12"))),
                draw(modes), draw(st.sampled_from(("sequential", "pairwise"))),
                draw(st.integers(1, 6)), draw(st.none() | st.integers(1, 12)),
                draw(st.sampled_from(("float32", "e8m13", "e6m10"))), draw(modes),
                draw(st.booleans()), draw(st.none() | st.integers(1, 12)))

        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(accumulators(), st.integers(0, 40), st.integers(0, 1000))
        def check(acc, k, seed):
            a, b = mm_operands(2, k, 3, seed, specials=seed % 3 == 0)
            mm_same(acc, a, b, seed)
        check()
    case("matmul:hypothesis", matmul_random)

    def matmul_errors():
        third = np.full((2, 3), 1.0 / 3.0)                # 53-bit values: products not exact
        big = np.full((2, 3), 2.0 ** 600)                 # products beyond float64's range
        for what, a, b in (("inexact products", third, third.T), ("exponent range", big, big.T)):
            try:
                matmul(a, b)
            except ValueError as e:
                want = str(e)
            else:
                raise AssertionError(f"{what}: the CPU accepted it")
            try:
                matmul(dev(a, np.float64), dev(b, np.float64))
            except ValueError as e:
                assert str(e) == want, f"{what}: {e} vs the CPU's {want}"
            else:
                raise AssertionError(f"{what}: expected ValueError")
        calls = {
            "1-D": (lambda: matmul(dev(np.ones(3)), dev(np.ones((3, 2)))), "must be 2-D"),
            "chain": (lambda: matmul(dev(np.ones((2, 3))), dev(np.ones((4, 2)))),
                      "do not chain"),
        }
        for what, (call, text) in calls.items():
            try:
                call()
            except ValueError as e:
                assert text in str(e), f"{what}: {e}"
                continue
            raise AssertionError(f"{what}: expected ValueError")
    case("matmul:errors", matmul_errors)

    def errors():
        fi = get_format("float8_e4m3fn")
        good = dev(np.ones((2, 8)))
        calls = {
            "a not in the format": (lambda: mma(dev(np.full((2, 8), 0.3)), dev(np.ones((8, 2))),
                                                0.0, "h100", fi), ValueError, "a holds values"),
            "b not in the format": (lambda: mma(good, dev(np.full((8, 2), 1e3)), 0.0, "h100",
                                                fi), ValueError, "b holds values"),
            "c not in the format": (lambda: mma(good, dev(np.ones((8, 2))),
                                                dev(np.full((2, 2), 0.1), np.float64), "h100",
                                                fi), ValueError, "c holds values"),
            "host c not in the format": (lambda: mma(good, dev(np.ones((8, 2))), 1e-50, "h100",
                                                     fi), ValueError, "c holds values"),
            "exact summation": (lambda: mma(good, dev(np.ones((8, 2))), 0.0, "mi100"),
                                ValueError, "aligned, late, odd-even"),
            "pairwise summation": (lambda: mma(good, dev(np.ones((8, 2))), 0.0, "mi210"),
                                   ValueError, "aligned, late, odd-even"),
            "shapes": (lambda: mma(good, dev(np.ones((7, 2))), 0.0, "h100"), ValueError,
                       "do not chain"),
            "c shape": (lambda: mma(good, dev(np.ones((8, 2))), dev(np.ones(3)), "h100"),
                        ValueError, "does not broadcast"),
            "host and device": (lambda: mma(good, np.ones((8, 2)), 0.0, "h100"), TypeError,
                                "b must be a CUDA array"),
        }
        for what, (call, exc, text) in calls.items():
            try:
                call()
            except exc as e:
                assert text in str(e), f"{what}: {e}"
                continue
            raise AssertionError(f"{what}: expected {exc.__name__}")
    case("errors", errors)
    return results


def run_ptx() -> dict[str, str]:
    """Compile the GEMM kernels for compute capability 9.0 with NVVM, without a GPU
    (:func:`tests.procs.nvvm_without_a_gpu`)."""
    from tests.procs import nvvm_without_a_gpu
    nvvm_without_a_gpu()
    from numba import cuda, types

    from fpformat import core, cuda_gemm, get_format
    from fpformat.rounding import call_tuple, value_tuple
    from fpformat.units import get_unit
    cuda_gemm._cuda()
    results: dict[str, str] = {}
    try:
        cuda.compile_ptx(cuda_gemm._zero_kernel().py_func, (types.int32[::1],), cc=(9, 0))
    except Exception as exc:  # no NVVM here: the parent test skips
        return {"unavailable": f"{type(exc).__name__}: {exc}"}

    def case(name, kernel, sig):
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            assert ".entry" in ptx
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"

    I3 = types.int64[:, :, ::1]
    tup = types.UniTuple(types.int64, 1)
    for unit, fin, fout in (("h100", "float8_e4m3fn", "float32"), ("h100", "float16", "float16"),
                            ("mi300x", "float16", "float32"),
                            ("mi300x", "float8_e4m3fnuz", "float32")):
        fi, fo = get_format(fin), get_format(fout)
        U, F, C, V = get_unit(unit, fi, fo).tuples(fi, fo)
        item = 2 if fout == "float16" else 4
        rt, bt = (types.float16, types.uint16) if item == 2 else (types.float32, types.uint32)
        case(f"unit:{unit}:{fin}->{fout}", cuda_gemm._unit_kernel(U, F, C, V, item),
             (I3, I3, I3, I3, types.float32[::1], types.uint32[::1], types.float64,
              types.boolean, rt[:, :, ::1], bt[:, :, ::1], tup, tup, tup, tup, types.int64,
              types.int64))
        for src, quantize in ((types.float16, True), (types.float64, False)):
            Ci = call_tuple(fi, "rne", quantize, None)
            kernel = cuda_gemm._operand_kernel(fi.params, Ci, value_tuple(fi, Ci,
                                                                           core.SRC_FLOAT64),
                                               fi.man_bits, fi.emin, True, quantize)
            case(f"operand:{fin}:{src}:{'quantize' if quantize else 'check'}", kernel,
                 (src[::1], types.int64[::1], types.int64[::1], types.int32[::1], types.int64))
    from fpformat.gemm import Accumulator, _plan
    F2, I2 = types.float64[:, ::1], types.int64[:, ::1]
    for acc, src, cdt in ((Accumulator("e8m13", "sr", chunk=32), types.float32, types.uint32),
                          (Accumulator("e5m10", "rne", order="pairwise", fused_width=4),
                           types.float16, types.uint16)):
        p = _plan(acc, 64, None, 1)
        case(f"matmul:{acc.label()}",
             cuda_gemm._matmul_kernel(p.Fa, p.Ca, p.Fp, p.Cp, p.Cs, p.pairwise, p.promote,
                                      p.scaled),
             (src[:, ::1], src[:, ::1], F2, F2, types.int64, types.int64, types.int64,
              types.float64, types.float64, types.uint64, types.uint64, F2, I2, F2, I2, F2,
              cdt[:, ::1]))
    case("significands", cuda_gemm._significand_kernel(),
         (types.float32[::1], types.int64[::1], types.int64))
    case("significands-start", cuda_gemm._info_start_kernel(), (types.int64[::1],))
    fo = get_format("float32")
    Co = call_tuple(fo, "rne", False, None)
    case("check:float32", cuda_gemm._check_kernel(fo.params, Co, value_tuple(fo, Co,
                                                                           core.SRC_FLOAT64)),
         (types.float32[::1], types.int32[::1], types.int64))
    return results


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "sim"
    out = run_sim() if which == "sim" else run_ptx()
    print(json.dumps(out))
