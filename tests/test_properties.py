"""Properties of the kernels that hold for every format (docs/numerics.md), and bad input.

Formats come from :func:`fpformat.testing.formats`; inputs from :func:`inputs_near` and from the
format's own value table.  The properties are checked on decoded values (``quantize``):

* monotonic: ``x <= y`` implies ``q(x) <= q(y)`` in every deterministic mode;
* idempotent: ``q(q(x)) == q(x)`` bit for bit, in every mode (stochastic rounding included);
* odd-symmetric for signed formats: ``q(-x) == -q(x)`` in rne/rna/rtz/rto, and
  ``rtp(-x) == -rtn(x)``;
* error bound inside the range: ``|q(x) - x| <= ulp(x)/2`` (rne, rna), ``< ulp(x)`` and on the
  right side of ``x`` (rtz, rtp, rtn, rto, sr), exactly (Fractions);
* ``decode(encode(x)) == quantize(x)`` bit for bit, float32 and float64;
* stochastic rounding: unbiased (a 5-sigma bound), reproducible (same seed, same codes), a prefix
  of the input gives a prefix of the output, independent of shape, memory layout and threads.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import same_float

from fpformat import FloatFormat, get_format
from fpformat.testing import formats, inputs_near, overflow_threshold, values_of

DETERMINISTIC = ("rne", "rna", "rtz", "rtp", "rtn", "rto")
# FPFORMAT_PROPERTY_EXAMPLES raises the number of hypothesis examples for a long hunt.
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("FPFORMAT_PROPERTY_EXAMPLES", 200)),
                             deadline=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.filter_too_much])


def draw_inputs(data, fmt: FloatFormat, n: int = 80, negative: bool | None = None) -> np.ndarray:
    xs = data.draw(st.lists(inputs_near(fmt, negative=negative), min_size=1, max_size=n),
                   label="x")
    return np.array(xs, dtype=np.float64)


def ulp(fmt: FloatFormat, a: Fraction) -> Fraction:
    """The quantum of the binade holding the magnitude ``a > 0`` (docs/numerics.md)."""
    if not fmt.subnormals and a < Fraction(fmt.min_normal):
        return Fraction(fmt.min_normal)
    k = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** k > a:
        k -= 1
    return Fraction(2) ** (max(k, fmt.emin) - fmt.man_bits)


# ----------------------------------------------------------------------------- monotonic
@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=10), data=st.data())
def test_monotonic(fmt: FloatFormat, data) -> None:
    # Unsigned formats send negatives to NaN/0 and zero-less formats send 0 to NaN: keep the
    # inputs where the order of the results is defined.
    x = draw_inputs(data, fmt, negative=False if not fmt.signed else None)
    x = np.sort(x[~np.isnan(x) & ((x != 0) | fmt.has_zero)])
    assume(x.size >= 2)
    for rounding in DETERMINISTIC:
        for saturate in (True, False):
            q = fmt.quantize(x, rounding, saturate)
            if not saturate and not fmt.inf:
                # overflow may go to NaN: order only the finite results
                q = q[~np.isnan(q)]
            assert not np.isnan(q).any(), (fmt, rounding, saturate)
            with np.errstate(invalid="ignore"):       # inf - inf between equal infinities
                bad = np.nonzero(np.diff(q) < 0)[0]
            assert bad.size == 0, (f"{fmt!r} {rounding} saturate={saturate}: not monotonic at "
                                   f"x={x[bad[0]]!r}, {x[bad[0] + 1]!r} -> "
                                   f"{q[bad[0]]}, {q[bad[0] + 1]}")


# ----------------------------------------------------------------------------- idempotent
@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=10), data=st.data())
def test_idempotent(fmt: FloatFormat, data) -> None:
    x = draw_inputs(data, fmt)
    for rounding in DETERMINISTIC + ("sr",):
        for saturate in (True, False):
            q = fmt.quantize(x, rounding, saturate, seed=3)
            qq = fmt.quantize(q, rounding, saturate, seed=4)
            bad = np.nonzero(~same_float(q, qq))[0]
            assert bad.size == 0, (f"{fmt!r} {rounding} saturate={saturate}: x={x[bad[0]]!r} "
                                   f"q={q[bad[0]]!r} q(q)={qq[bad[0]]!r}")


@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=10), data=st.data())
def test_values_are_fixed_points(fmt: FloatFormat, data) -> None:
    """Every finite value encodes to a code that decodes to itself, in every mode."""
    v = np.array(data.draw(st.lists(values_of(fmt), min_size=1, max_size=40), label="v"))
    for rounding in DETERMINISTIC + ("sr",):
        q = fmt.quantize(v, rounding, False, seed=1)
        assert same_float(q, v).all() or _zero_sign_only(fmt, q, v), (fmt, rounding, v, q)


def _zero_sign_only(fmt, q, v) -> bool:
    """Differences only in the sign of zero, where the format has no negative zero."""
    diff = ~same_float(q, v)
    return not fmt.negative_zero and bool(np.all((q[diff] == 0) & (v[diff] == 0)))


# ----------------------------------------------------------------------------- odd symmetry
@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=10, signed=True), data=st.data())
def test_odd_symmetric(fmt: FloatFormat, data) -> None:
    x = draw_inputs(data, fmt, negative=False)
    x = x[~np.isnan(x)]
    assume(x.size >= 1)

    def same_up_to_zero_sign(a, b):
        ok = same_float(a, b)
        if not fmt.negative_zero:                  # fnuz: both zeros are +0
            ok |= (a == 0) & (b == 0)
        return ok

    for saturate in (True, False):
        for rounding in ("rne", "rna", "rtz", "rto"):
            qp, qn = fmt.quantize(x, rounding, saturate), fmt.quantize(-x, rounding, saturate)
            bad = np.nonzero(~same_up_to_zero_sign(qn, -qp))[0]
            assert bad.size == 0, (f"{fmt!r} {rounding} saturate={saturate}: q(-x) != -q(x) at "
                                   f"x={x[bad[0]]!r}: {qn[bad[0]]!r} vs {qp[bad[0]]!r}")
        up, down = fmt.quantize(-x, "rtp", saturate), fmt.quantize(x, "rtn", saturate)
        bad = np.nonzero(~same_up_to_zero_sign(up, -down))[0]
        assert bad.size == 0, (f"{fmt!r} saturate={saturate}: rtp(-x) != -rtn(x) at "
                               f"x={x[bad[0]]!r}: {up[bad[0]]!r} vs {down[bad[0]]!r}")


# ----------------------------------------------------------------------------- error bound
@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=10), data=st.data())
def test_error_within_half_ulp_or_one_ulp(fmt: FloatFormat, data) -> None:
    x = draw_inputs(data, fmt, negative=False if not fmt.signed else None)
    smallest = float(fmt.values()[fmt.values() > 0].min())
    inside = np.isfinite(x) & (np.abs(x) >= smallest) & (np.abs(x) <= fmt.max)
    x = x[inside]
    assume(x.size >= 1)
    for rounding in DETERMINISTIC + ("sr",):
        q = fmt.quantize(x, rounding, False, seed=11)
        for xi, qi in zip(x.tolist(), q.tolist()):
            err = Fraction(qi) - Fraction(xi)
            u = ulp(fmt, abs(Fraction(xi)))
            where = f"{fmt!r} {rounding}: x={xi!r} q={qi!r} ulp={float(u)!r}"
            if rounding in ("rne", "rna"):
                assert abs(err) <= u / 2, where
            else:
                assert abs(err) < u, where
            if rounding == "rtz":
                assert abs(qi) <= abs(xi), where
            if rounding == "rtp":
                assert qi >= xi, where
            if rounding == "rtn":
                assert qi <= xi, where


# ----------------------------------------------------------------------------- decode(encode)
@PROPERTY_SETTINGS
@given(fmt=formats(max_bits=12), data=st.data())
def test_decode_encode_equals_quantize(fmt: FloatFormat, data) -> None:
    x64 = draw_inputs(data, fmt)
    dtypes = [np.float64] + ([np.float32] if fmt.fits(np.float32) else [])
    for dtype in dtypes:
        with np.errstate(over="ignore"):
            x = x64.astype(dtype)
        for rounding in DETERMINISTIC + ("sr",):
            for saturate in (True, False):
                codes = fmt.encode(x, rounding, saturate, seed=5)
                q = fmt.quantize(x, rounding, saturate, seed=5)
                d = fmt.decode(codes, dtype=np.dtype(dtype))
                assert q.dtype == dtype and d.dtype == dtype
                ub = f"u{np.dtype(dtype).itemsize}"
                bad = np.nonzero(q.view(ub) != d.view(ub))[0]
                assert bad.size == 0, (f"{fmt!r} {rounding} saturate={saturate} {np.dtype(dtype)}:"
                                       f" x={x[bad[0]]!r} quantize={q[bad[0]]!r} "
                                       f"decode(encode)={d[bad[0]]!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", np.dtype("float32"),
                                   "float16"])
def test_decode_accepts_any_spelling_of_the_dtype(dtype) -> None:
    fmt = get_format("float8_e4m3fn")
    codes = np.arange(256, dtype=np.uint8)
    d = fmt.decode(codes, dtype=dtype)
    assert d.dtype == np.dtype(dtype)
    assert same_float(d, fmt.decode(codes)).all()


# ----------------------------------------------------------------------------- stochastic rounding
@pytest.mark.parametrize("name,x,sr_bits", [
    ("float8_e4m3fn", 0.1, None), ("float8_e4m3fn", -0.1, None), ("e2m1", 2.6, None),
    ("e2m1", 0.3, 3), ("float8_e5m2", 1.0 + 2.0 ** -5, 1), ("e3m2_ftz", 0.2, 13),
    ("float8_e8m0fnu", 3.0, None), ("float8_e4m3fn", 2.0 ** -9 * 0.3, 8)])
def test_sr_unbiased(name: str, x: float, sr_bits: int | None) -> None:
    """The mean over many elements is ``lo + P(up) * (hi - lo)`` within 5 sigma, with
    ``P(up) = floor(r * 2**b) / 2**b`` (``= r`` exactly for b = 64)."""
    fmt = get_format(name)
    n = 200_000
    q = fmt.quantize(np.full(n, x), "sr", seed=2024, sr_bits=sr_bits)
    lo, hi = fmt.quantize(np.array([x]), "rtn")[0], fmt.quantize(np.array([x]), "rtp")[0]
    assert lo < x < hi and set(np.unique(q)) <= {lo, hi}
    b = 64 if sr_bits is None else sr_bits
    r = (Fraction(x) - Fraction(lo)) / (Fraction(hi) - Fraction(lo))
    p = math.floor(r * 2 ** b) / 2 ** b
    mean_expected = lo + p * (hi - lo)
    sigma = (hi - lo) * math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(q.mean() - mean_expected) <= 5 * sigma, (q.mean(), mean_expected, sigma)
    if sr_bits is None:
        assert abs(q.mean() - x) <= 5 * sigma
    # and across seeds: 200 seeds of a 1000-element array average out too
    means = [fmt.quantize(np.full(1000, x), "sr", seed=s, sr_bits=sr_bits).mean()
             for s in range(200)]
    assert abs(np.mean(means) - mean_expected) <= 5 * sigma * math.sqrt(n / 200_000)


def test_sr_reproducible_prefix_shape_layout_threads() -> None:
    fmt = get_format("float8_e4m3fn")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 48)).astype(np.float32)
    a = fmt.encode(x, "sr", seed=77)
    assert np.array_equal(a, fmt.encode(x, "sr", seed=77))                       # same seed
    assert not np.array_equal(a, fmt.encode(x, "sr", seed=78))                   # other seed
    flat = x.reshape(-1)
    assert np.array_equal(fmt.encode(flat[:1000], "sr", seed=77), a.reshape(-1)[:1000])  # prefix
    assert np.array_equal(fmt.encode(flat, "sr", seed=77), a.reshape(-1))         # shape
    assert np.array_equal(fmt.encode(np.asfortranarray(x), "sr", seed=77), a)     # layout
    # chunking: the same elements at the same positions, encoded in pieces, agree only as a
    # prefix (element i's random number is a function of (seed, i)); threads do not matter
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fmt.encode(x, "sr", seed=77)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one, a)
    q1, q2 = fmt.quantize(x, "sr", seed=None), fmt.quantize(x, "sr", seed=None)
    assert not np.array_equal(q1, q2)                                             # fresh seeds


def test_sr_with_exact_inputs_and_specials() -> None:
    fmt = get_format("float8_e5m2")
    v = fmt.values()
    assert same_float(fmt.quantize(v, "sr", seed=1), v).all()
    x = np.array([np.inf, -np.inf, np.nan, 1e9, -1e9])
    q = fmt.quantize(x, "sr", seed=1)
    assert q[0] == np.inf and q[1] == -np.inf and np.isnan(q[2])
    assert q[3] == np.inf and q[4] == -np.inf                       # IEEE overflow
    qs = fmt.quantize(x, "sr", saturate=True, seed=1)
    assert qs[0] == fmt.max and qs[1] == -fmt.max and qs[3] == fmt.max


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,exc,param", [
    (lambda: FloatFormat(-1, 3), ValueError, "exp_bits"),
    (lambda: FloatFormat(12, 3), ValueError, "exp_bits"),
    (lambda: FloatFormat(4, 53), ValueError, "man_bits"),
    (lambda: FloatFormat(4, -1), ValueError, "man_bits"),
    (lambda: FloatFormat(0, 0), ValueError, "exp_bits"),
    (lambda: FloatFormat(4.0, 3), TypeError, "exp_bits"),
    (lambda: FloatFormat(4, 3, bias=1.5), TypeError, "bias"),
    (lambda: FloatFormat(2, 1, nan_codes=8), ValueError, "nan_codes"),
    (lambda: FloatFormat(2, 1, nan_codes=7, inf=True), ValueError, "nan_codes"),
    (lambda: FloatFormat(2, 1, nan_codes=-1), ValueError, "nan_codes"),
    (lambda: FloatFormat(3, 2, signed=False, negative_zero=False), ValueError, "negative_zero"),
    (lambda: FloatFormat(3, 2, has_zero=False), ValueError, "has_zero"),
    (lambda: FloatFormat(11, 52, bias=-5), ValueError, "bias"),
    (lambda: get_format("float9_e9m9"), ValueError, "unknown format"),
    (lambda: get_format("e12m3"), ValueError, "exp_bits"),
])
def test_bad_formats(make, exc, param: str) -> None:
    with pytest.raises(exc, match=param):
        make()


X = np.linspace(-3, 3, 7)


@pytest.mark.parametrize("call,exc,param", [
    (lambda f: f.encode(X, "rnd"), ValueError, "rounding"),
    (lambda f: f.quantize(X, "RNE_"), ValueError, "rounding"),
    (lambda f: f.encode(X, None), ValueError, "rounding"),
    (lambda f: f.encode(X, "sr", seed=1, sr_bits=0), ValueError, "sr_bits"),
    (lambda f: f.encode(X, "sr", seed=1, sr_bits=65), ValueError, "sr_bits"),
    (lambda f: f.quantize(X, "sr", seed=1, sr_bits=-3), ValueError, "sr_bits"),
    (lambda f: f.encode(X, "sr", seed=1.5), TypeError, "seed"),
    (lambda f: f.encode(X, saturate="yes"), TypeError, "saturate"),
    (lambda f: f.encode(np.arange(4, dtype=np.int32)), TypeError, "x"),
    (lambda f: f.quantize(np.arange(4, dtype=np.int64)), TypeError, "x"),
    (lambda f: f.encode(np.ones(3, dtype=np.complex128)), TypeError, "x"),
    (lambda f: f.quantize(np.array([1.0, "a"], dtype=object)), TypeError, "x"),
    (lambda f: f.encode(np.ones(3, dtype=bool)), TypeError, "x"),
    (lambda f: f.decode(np.array([1.5])), TypeError, "codes"),
    (lambda f: f.decode(np.array([256])), ValueError, "codes"),
])
def test_bad_calls(call, exc, param: str) -> None:
    with pytest.raises(exc, match=param):
        call(get_format("float8_e4m3fn"))


@pytest.mark.parametrize("strategy,param", [
    (lambda: inputs_near(get_format("e2m1"), dtype="int8"), "dtype"),
    (lambda: formats(exp_bits=[]), "exp_bits"),
])
def test_testing_strategies_reject_bad_arguments(strategy, param: str) -> None:
    @settings(max_examples=1, database=None)
    @given(data=st.data())
    def draw_one(data):
        data.draw(strategy())

    with pytest.raises(ValueError, match=param):
        draw_one()


# ----------------------------------------------------------------------------- the strategies
@settings(max_examples=60, deadline=None)
@given(fmt=formats(max_bits=8, signed=False))
def test_formats_strategy_respects_filters(fmt: FloatFormat) -> None:
    assert fmt.bits <= 8 and not fmt.signed


@settings(max_examples=60, deadline=None)
@given(data=st.data(), fmt=formats(max_bits=9))
def test_values_of_draws_values(data, fmt: FloatFormat) -> None:
    v = data.draw(values_of(fmt))
    table = fmt.values()
    assert v in table or (v == 0 and 0 in table)
    x = data.draw(inputs_near(fmt, dtype="float16"))
    assert math.isnan(x) or float(np.float16(x)) == x
    b = data.draw(inputs_near(fmt, dtype="bfloat16"))
    assert math.isnan(b) or (float(np.float32(b)) == b
                             and np.float32(b).view(np.uint32) & 0xFFFF == 0)
    assert overflow_threshold(fmt) > fmt.max


# ----------------------------------------------------------------------------- documentation
def test_docs_testing_examples_run() -> None:
    """The Python blocks of docs/testing.md, executed in order, and every test they define."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/testing.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) >= 3
    for f in tests:
        f()


def test_doctests_of_testing_module_and_reference() -> None:
    import doctest

    import reference

    import fpformat.testing

    for module in (fpformat.testing, reference):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
