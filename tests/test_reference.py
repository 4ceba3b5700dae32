"""Differential tests: the numba kernels against the exact-rational reference (tests/reference.py).

Formats and inputs are drawn by hypothesis (fpformat.testing); every rounding mode, saturating
and not, float64/float32/float16/bfloat16 inputs, stochastic rounding with the kernels' own
per-element random integers (``sr_random_u64(seed, i)``), and decode of every code.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import MODES, reference, same_float

from fpformat import FloatFormat, get_format
from fpformat.kernels import sr_random_u64
from fpformat.testing import formats, inputs_near, overflow_threshold

DETERMINISTIC = ("rne", "rna", "rtz", "rtp", "rtn", "rto")
SR_BITS = (None, 1, 2, 5, 13, 32, 64)


def systematic_inputs(fmt: FloatFormat, rng: np.random.Generator, limit: int = 400) -> np.ndarray:
    """Exact values, every midpoint and its float64 neighbours, the overflow threshold and the
    bottom of the range, ±0, ±inf, NaN (subsampled to about ``limit`` values per kind)."""
    ref = reference(fmt)
    beyond = float(ref.beyond) if ref.beyond < 2 ** 1024 else math.inf   # float64's own max
    lv = np.array([float(v) for v in ref.levels] + [beyond])
    if len(lv) > limit:       # keep both ends, sample the middle
        keep = np.unique(np.concatenate([np.arange(6), np.arange(len(lv) - 6, len(lv) - 1),
                                         rng.integers(0, len(lv) - 1, limit)]))
        lv_lo, lv_hi = lv[keep], lv[keep + 1]
        lv = np.concatenate([lv_lo, lv[-1:]])
    else:
        lv_lo, lv_hi = lv[:-1], lv[1:]
    mids = lv_lo + (lv_hi - lv_lo) / 2
    if ref.levels[0] == 0 and not fmt.subnormals:
        mids = np.append(mids, fmt.min_normal / 2)
    special = [0.0, math.inf, math.nan, fmt.max, beyond, (fmt.max + beyond) / 2, 2 * beyond,
               1e300, 5e-324, fmt.min_subnormal / 2, fmt.min_subnormal / 4, fmt.min_normal / 2]
    pos = np.concatenate([lv, mids, np.nextafter(mids, np.inf), np.nextafter(mids, 0),
                          np.nextafter(lv, np.inf), np.nextafter(lv, 0),
                          lv_lo + (lv_hi - lv_lo) * rng.random(len(lv_lo)), special])
    x = np.concatenate([pos, -pos])
    if not fmt.signed:        # -inf into unsigned formats: see test_unsigned_negative_infinity
        x = x[~(np.isinf(x) & (x < 0))]
    if fmt.signed and not fmt.has_zero:     # see test_signed_zeroless_tiny_inputs
        x = x[~(np.abs(x) < float(ref.smallest))]
    return x


def compare_encode(fmt: FloatFormat, x: np.ndarray, rounding: str, saturate: bool,
                   seed: int | None = None, sr_bits: int | None = None) -> None:
    """Assert the kernel's codes for ``x`` equal the reference's, with a precise message."""
    ref = reference(fmt)
    got = np.asarray(fmt.encode(x, rounding, saturate, seed=seed, sr_bits=sr_bits))
    assert got.dtype == fmt.dtype and got.shape == x.shape
    us = None
    flat = x.reshape(-1)
    if rounding == "sr":
        us = sr_random_u64(seed, np.arange(flat.size))
    want = ref.encode_many(flat.astype(np.float64), rounding, saturate, us, sr_bits)
    bad = np.nonzero(got.reshape(-1).astype(np.uint64) != want)[0]
    if bad.size:
        rows = [f"x={flat[i]!r} ({flat.dtype}, bits {flat[i:i+1].view(f'u{flat.itemsize}')[0]:#x})"
                f" got {int(got.reshape(-1)[i]):#x} want {int(want[i]):#x}" for i in bad[:8]]
        pytest.fail(f"{fmt!r} rounding={rounding} saturate={saturate} sr_bits={sr_bits} "
                    f"seed={seed}: {bad.size}/{flat.size} codes differ:\n  " + "\n  ".join(rows))


def check_encode_against_reference(fmt: FloatFormat, data, limit: int) -> None:
    """Systematic inputs plus hypothesis-drawn ones, in one input dtype, every mode (sr with a
    drawn seed and sr_bits), saturating and not."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    dtype = data.draw(st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
                      label="dtype")
    drawn = data.draw(st.lists(inputs_near(fmt, dtype=dtype), min_size=1, max_size=60),
                      label="drawn")
    x = np.concatenate([systematic_inputs(fmt, rng, limit=limit), np.array(drawn)])
    with np.errstate(over="ignore"):
        x = x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    for rounding in DETERMINISTIC:
        for saturate in (False, True):
            compare_encode(fmt, x, rounding, saturate)
    seed = data.draw(st.integers(0, 2**63 - 1), label="seed")
    sr_bits = data.draw(st.sampled_from(SR_BITS), label="sr_bits")
    compare_encode(fmt, x, "sr", data.draw(st.booleans(), label="saturate"), seed, sr_bits)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=formats(max_bits=12), data=st.data())
def test_encode_matches_reference(fmt: FloatFormat, data) -> None:
    check_encode_against_reference(fmt, data, limit=60)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=formats(exp_bits=range(0, 9), man_bits=range(0, 11), bias_offset=range(-6, 7),
                   nan_codes=range(0, 9), max_bits=17), data=st.data())
def test_encode_matches_reference_wide(fmt: FloatFormat, data) -> None:
    """E 0..8, M 0..10, wider bias offsets and more NaN codes (formats up to 17 bits)."""
    check_encode_against_reference(fmt, data, limit=200)


@settings(max_examples=120, deadline=None)
@given(fmt=formats())
def test_decode_matches_reference(fmt: FloatFormat) -> None:
    ref = reference(fmt)
    codes = np.arange(1 << fmt.bits, dtype=np.uint64).astype(fmt.dtype)
    got = fmt.decode(codes)
    want = ref.decode_all()
    bad = np.nonzero(~same_float(got, want))[0]
    assert bad.size == 0, (f"{fmt!r}: decode differs at codes {[hex(int(c)) for c in bad[:8]]}: "
                           f"got {got[bad[:8]]} want {want[bad[:8]]}")
    f32 = fmt.decode(codes, dtype="float32")
    assert f32.dtype == np.float32
    assert same_float(f32, want.astype(np.float32)).all()


SMALL_PRESETS = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3", "float6_e2m3fn",
                 "float6_e3m2fn", "float4_e2m1fn", "float8_e8m0fnu", "e4m3", "e5m2", "e2m1",
                 "e3m0", "e8m0", "ue4m3fn", "e4m3_ftz", "p3109_k8p1", "p3109_k8p4", "p3109_k8p7"]


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_presets_every_tie(name: str) -> None:
    """Every value, every midpoint and its neighbours, in every mode, for the named formats."""
    fmt = get_format(name)
    x = systematic_inputs(fmt, np.random.default_rng(1), limit=10**6)
    for rounding in DETERMINISTIC:
        for saturate in (False, True):
            compare_encode(fmt, x, rounding, saturate)
    compare_encode(fmt, x, "sr", False, seed=12345, sr_bits=None)
    compare_encode(fmt, x, "sr", True, seed=7, sr_bits=3)


def test_bfloat16_and_float16_presets_sampled() -> None:
    """16-bit presets: the reference enumerates 2**15 values; sample their ties."""
    rng = np.random.default_rng(2)
    for name in ("bfloat16", "float16"):
        fmt = get_format(name)
        x = systematic_inputs(fmt, rng, limit=300)
        for rounding in MODES:
            compare_encode(fmt, x, rounding, rounding == "rtz",
                           seed=99 if rounding == "sr" else None)


def test_reference_known_answers() -> None:
    """The reference itself, on facts stated in docs/numerics.md and the OCP/ml_dtypes specs."""
    e4m3fn = reference(get_format("float8_e4m3fn"))
    assert float(e4m3fn.max) == 448.0 and float(e4m3fn.beyond) == 480.0
    assert e4m3fn.encode(464.0) == 0x7E                    # tie below the threshold: even 448
    assert e4m3fn.encode(464.0001) == 0x7F                 # rounds to 480: overflow -> NaN
    assert e4m3fn.encode(-1e9, "rtz") == 0xFE
    assert e4m3fn.encode(math.nan) == 0x7F and e4m3fn.encode(-math.nan) == 0xFF
    e5m2 = reference(get_format("float8_e5m2"))
    assert e5m2.encode(math.nan) == 0x7E and e5m2.encode(1e6) == 0x7C
    assert e5m2.encode(1e6, "rtn") == 0x7B and e5m2.encode(-1e6, "rtn") == 0xFC
    assert e5m2.encode(math.inf, saturate=True) == 0x7B
    fnuz = reference(get_format("float8_e4m3fnuz"))
    assert fnuz.encode(-0.0) == 0 and fnuz.encode(math.nan) == 0x80 and fnuz.encode(1e9) == 0x80
    e8m0 = reference(get_format("float8_e8m0fnu"))
    assert e8m0.encode(0.0) == 0xFF and e8m0.encode(1.0) == 127 and e8m0.encode(1.5) == 128
    assert e8m0.encode(1e-300) == 0 and e8m0.encode(-1.0) == 0xFF
    assert e8m0.encode(-1.0, saturate=True) == 0
    fp4 = reference(get_format("float4_e2m1fn"))
    assert fp4.encode(math.nan) == 0x8 and fp4.encode(-math.nan) == 0x0   # opposite-sign zero
    assert fp4.encode(1e9) == 0x7 and fp4.encode(5.0) == 0x6 and fp4.encode(0.25) == 0
    ftz = reference(FloatFormat(3, 2, subnormals=False))
    assert ftz.encode(0.125) == 0 and ftz.encode(0.1250001) == 0x4 and ftz.encode(0.125, "rna") == 4
    assert ftz.encode(1e-9, "rto") == 0x4 and ftz.encode(-1e-9, "rtz") == 0x20
    e5m0 = reference(get_format("e3m0"))
    assert e5m0.encode(3.0) == e5m0.encode(4.0)         # M = 0: ties go to the larger magnitude
    assert e4m3fn.encode(0.1, "sr", u=0) == e4m3fn.encode(0.1, "rtp")
    assert e4m3fn.encode(0.1, "sr", u=2**64 - 1) == e4m3fn.encode(0.1, "rtz")
    assert overflow_threshold(get_format("float8_e4m3fn")) == 480.0
    assert overflow_threshold(FloatFormat(0, 3)) == 1.0


@pytest.mark.parametrize("name", ["float8_e8m0fnu", "ue4m3fn", "ue3m2"])
def test_unsigned_negative_infinity(name: str) -> None:
    """-inf into an unsigned format is a negative input (numerics.md, "Unsigned formats and
    negative inputs"): 0 (the smallest value) when saturating, else NaN or 0 -- never +max."""
    fmt = get_format(name)
    ref = reference(fmt)
    x = np.array([-np.inf, -1e300, -1.0], dtype=np.float64)
    for rounding in DETERMINISTIC:
        for saturate in (False, True):
            want = ref.encode_many(x, rounding, saturate)
            assert want[0] == want[1] == want[2]
            compare_encode(fmt, x, rounding, saturate)


def test_decode_accepts_numpy_scalar_types() -> None:
    """``decode(codes, dtype=np.float32)`` (a scalar type, like the default ``np.float64``)."""
    fmt = get_format("float8_e4m3fn")
    codes = np.arange(256, dtype=np.uint8)
    out = fmt.decode(codes, dtype=np.float32)
    assert out.dtype == np.float32
    assert same_float(out, reference(fmt).decode_all()).all()


def test_signed_zeroless_tiny_inputs() -> None:
    """A signed format without zero (not a preset): ±0 give NaN (either sign: numerics.md does not
    say), and a value below the smallest magnitude gives the smallest value *of its own sign*
    (numerics.md states the positive case; the negative one is its mirror image)."""
    fmt = FloatFormat(5, 2, signed=True, subnormals=False, nan_codes=1, has_zero=False)
    ref = reference(fmt)
    assert np.isnan(fmt.decode(fmt.encode(np.array([0.0, -0.0])))).all()
    tiny = float(ref.smallest) / 3
    x = np.array([tiny, -tiny, 5e-324, -5e-324])
    for rounding in DETERMINISTIC:
        compare_encode(fmt, x, rounding, False)


# ----------------------------------------------------------------- wide mantissas (M = 23, 52)
def wide_inputs(fmt: FloatFormat, dtype, rng: np.random.Generator, n: int = 250) -> np.ndarray:
    """``dtype`` inputs around ``fmt``'s range: random bit patterns with exponents from below
    the format's smallest subnormal to above its max, values and ties of the format (where
    ``dtype`` holds them), and the specials."""
    info = np.finfo(dtype)
    ubits = np.uint32 if dtype == np.float32 else np.uint64
    lo = max(fmt.emin - fmt.man_bits - 3, int(info.minexp) - int(info.nmant))
    hi = min(fmt.emax + 2, int(info.maxexp) - 1)
    exps = rng.integers(lo, hi + 1, n)
    mant = rng.random(n) + 1.0
    with np.errstate(over="ignore"):
        x = np.ldexp(mant, exps).astype(dtype)
        codes = rng.integers(0, fmt._maxmag + 1, n, dtype=np.uint64).astype(fmt.dtype)
        values = fmt.decode(codes)
        ulp = np.ldexp(1.0, np.maximum(np.frexp(values)[1] - 1, fmt.emin) - fmt.man_bits)
        near = np.concatenate([values, values + ulp / 2, values - ulp / 2]).astype(dtype)
    special = np.array([0.0, np.inf, np.nan, fmt.max, fmt.min_subnormal, fmt.min_normal,
                        info.max, info.tiny, info.smallest_subnormal], dtype=np.float64)
    with np.errstate(over="ignore"):
        pos = np.concatenate([x, near, special.astype(dtype)])
    pos = pos[np.isfinite(pos) | np.isinf(pos) | np.isnan(pos)]
    return np.concatenate([pos, -pos]).view(ubits).view(dtype)


WIDE = ["float32", "e8m23", "e5m23", "e8m23fn", "e4m23_ftz", "float64", "e10m52", "e6m52b40"]


@pytest.mark.parametrize("name", WIDE)
def test_wide_mantissas_match_reference(name: str) -> None:
    """Formats with float32's and float64's mantissa (the reference computes these from the
    binade, without listing levels), float32 and float64 inputs, every mode."""
    fmt = get_format(name)
    rng = np.random.default_rng(23)
    for dtype in (np.float32, np.float64):
        x = wide_inputs(fmt, dtype, rng)
        for rounding in DETERMINISTIC:
            for saturate in (False, True):
                compare_encode(fmt, x, rounding, saturate)
        compare_encode(fmt, x, "sr", False, seed=99, sr_bits=None)


@pytest.mark.parametrize("rounding", list(MODES))
@pytest.mark.parametrize("name, dtype", [("float32", np.float32), ("float64", np.float64)])
def test_identity_conversion_returns_the_input(name: str, dtype, rounding: str) -> None:
    """float32 into the float32 preset and float64 into float64: every input comes back bit for
    bit (NaNs as NaNs), in every mode, saturating or not."""
    ubits = np.uint32 if dtype == np.float32 else np.uint64
    rng = np.random.default_rng(7)
    bits = rng.integers(0, np.iinfo(ubits).max, 20000, dtype=ubits, endpoint=True)
    info = np.finfo(dtype)
    edges = np.array([0.0, -0.0, info.max, -info.max, info.tiny, info.smallest_subnormal,
                      np.inf, -np.inf, 1.0, 1.5, -3.0], dtype=dtype)
    x = np.concatenate([bits.view(dtype), edges])
    fmt = get_format(name)
    for saturate in (False, True):
        y = fmt.quantize(x, rounding=rounding, saturate=saturate, seed=3)
        codes = fmt.encode(x, rounding=rounding, saturate=saturate, seed=3)
        nan = np.isnan(x)
        if saturate:                     # saturation clamps ±inf to ±max
            keep = ~nan & ~np.isinf(x)
        else:
            keep = ~nan
        assert np.array_equal(y.view(ubits)[keep], x.view(ubits)[keep])
        assert np.array_equal(codes.astype(ubits)[keep], x.view(ubits)[keep])
        assert np.isnan(y[nan]).all()
