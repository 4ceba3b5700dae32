"""Matrix units: the presets against real V100/A100/H100 outputs, the kernel against the exact
reference (tests/unit_reference.py) on random units and edge cases, and the API's rules."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gemm import ref_round
from unit_reference import unit_gemm_row

from fpformat import get_format
from fpformat.gemm import mma
from fpformat.units import MatrixUnit, get_unit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matrix-units"
IN = {"fp16": "float16", "bf16": "bfloat16", "tf32": "tf32", "e4m3": "float8_e4m3fn",
      "e5m2": "float8_e5m2"}
MEASURED = [("v100", "fp16", "fp32"), ("v100", "fp16", "fp16"), ("a100", "fp16", "fp32"),
            ("a100", "fp16", "fp16"), ("a100", "bf16", "fp32"), ("a100", "tf32", "fp32"),
            ("h100", "fp16", "fp32"), ("h100", "fp16", "fp16"), ("h100", "bf16", "fp32"),
            ("h100", "tf32", "fp32"), ("h100", "e4m3", "fp32"), ("h100", "e5m2", "fp32")]


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/matrix-units is not beside the repo")
@pytest.mark.parametrize("gpu, fmt, out", MEASURED, ids=["-".join(m) for m in MEASURED])
def test_presets_reproduce_the_hardware_bit_for_bit(gpu, fmt, out):
    d = np.load(DATA / f"{gpu}_{fmt}.npz", allow_pickle=False)
    a, b, c, want = d["a"], d["b"], d[f"c_{out}"], d[f"d_{out}"]
    out_name = "float32" if out == "fp32" else "float16"
    got = mma(a[:, None, :], b[:, :, None], c[:, None, None], gpu, IN[fmt], out_name)[:, 0, 0]
    assert got.dtype == np.dtype(out_name)
    same = (got.astype(np.float64) == want.astype(np.float64)) & \
        (np.signbit(got) == np.signbit(want)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{(~same).sum()} of {len(same)} differ, first {np.flatnonzero(~same)[:5]}"


# ------------------------------------------------------------------ kernel against reference
def _values(fmt, rng, n: int, spread: int) -> np.ndarray:
    """Random values of ``fmt`` over ``2**±spread`` with zeros, subnormals and the max."""
    x = rng.standard_normal(n) * np.exp2(rng.integers(-spread, spread + 1, n))
    pick = rng.random(n)
    x[pick < 0.05] = 0.0
    x[(pick >= 0.05) & (pick < 0.1)] = fmt.min_subnormal * rng.integers(1, 4, ((pick >= 0.05)
                                                                            & (pick < 0.1)).sum())
    x[(pick >= 0.1) & (pick < 0.12)] = fmt.max
    return fmt.quantize(x, saturate=True)


other_sums = st.builds(MatrixUnit, fma=st.sampled_from([1, 2, 4, 8, 16]),
                       summation=st.sampled_from(["exact", "pairwise"]),
                       rounding=st.just("rne"), subnormal_inputs=st.booleans(),
                       subnormal_outputs=st.booleans())
aligned = st.builds(MatrixUnit, fma=st.sampled_from([1, 2, 3, 4, 8, 16, 32]),
                  extra_bits=st.integers(-12, 6), carry_bit=st.booleans(),
                  sticky=st.booleans(), rounding=st.sampled_from(["rne", "rtz", "rna", "rtp",
                                                                  "rtn", "rto"]),
                  result_bits=st.sampled_from([None, 5, 10, 13]),
                  min_exponent=st.sampled_from([None, -133, -20, -3]),
                  carry_bits=st.sampled_from([None, None, 0, 1, 3]),
                  subnormal_inputs=st.booleans(), subnormal_outputs=st.booleans())
late_sums = st.builds(MatrixUnit, fma=st.sampled_from([1, 2, 4, 8, 16]),
                      summation=st.sampled_from(["late", "odd-even"]),
                      extra_bits=st.integers(0, 8), rounding=st.just("rne"),
                      subnormal_inputs=st.booleans(), subnormal_outputs=st.booleans())
units = st.one_of(aligned, other_sums, late_sums)


def _check_against_reference(unit, in_name, out_name, a, b, c) -> None:
    fi, fo = get_format(in_name), get_format(out_name)
    got = mma(a, b, c, unit, in_name, out_name)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            want = unit_gemm_row(list(a[i]), list(b[:, j]), float(c[i, j]), unit, fi, fo)
            g = float(got[i, j])
            assert (math.isnan(g) and math.isnan(want)) or (
                g == want and math.copysign(1, g) == math.copysign(1, want)), \
                (f"{unit.spec} {in_name}->{out_name} row {i} col {j}: got {g!r} want {want!r}\n"
                 f"a={a[i].tolist()}\nb={b[:, j].tolist()}\nc={c[i, j]!r}")


@settings(max_examples=60, deadline=None)
@given(unit=units, in_name=st.sampled_from(["float16", "bfloat16", "float8_e4m3fn",
                                            "float8_e5m2", "tf32"]),
       out_name=st.sampled_from(["float32", "float16"]), k=st.integers(1, 40),
       seed=st.integers(0, 2**32 - 1), spread=st.sampled_from([2, 8, 30]))
def test_kernel_matches_the_reference_on_random_units(unit, in_name, out_name, k, seed, spread):
    if unit.summation in ("pairwise", "late", "odd-even"):
        out_name = "float32"                        # these units add in float32
    rng = np.random.default_rng(seed)
    fi, fo = get_format(in_name), get_format(out_name)
    a = _values(fi, rng, 3 * k, spread).reshape(3, k)
    b = _values(fi, rng, k * 2, spread).reshape(k, 2)
    c = fo.quantize(rng.standard_normal((3, 2)) * np.exp2(rng.integers(-spread, spread, (3, 2))),
                    saturate=True)
    _check_against_reference(unit, in_name, out_name, a, b, c)


EDGE_UNITS = [get_unit("h100", "float16", "float32"), get_unit("h100", "float8_e4m3fn"),
              get_unit("v100", "float16", "float16"), get_unit("mi100"), get_unit("mi250"),
              get_unit("mi300x"), get_unit("mi300a", "float8_e5m2fnuz"),
              MatrixUnit(fma=4, extra_bits=3, sticky=True, rounding="rne")]


@pytest.mark.parametrize("unit", EDGE_UNITS, ids=lambda u: str(u))
def test_kernel_matches_the_reference_on_edge_cases(unit):
    in_name = "float8_e4m3fn" if "e4m3" in str(unit) else \
        "float8_e5m2fnuz" if "e5m2fnuz" in str(unit) else "float16"
    out_name = "float16" if str(unit).endswith("float16") else "float32"
    fi = get_format(in_name)
    k = unit.fma
    big, tiny = fi.max, fi.min_subnormal
    rows = [
        [1.0] * k,                                            # a plain sum
        [big, -big] + [0.0] * (k - 2),                        # cancellation to zero
        [big] + [tiny] * (k - 1),                             # products below the window
        [tiny] * k,                                           # subnormal products and results
        [big] * k,                                            # the largest sums
        [1.0, 2.0 ** -12] + [-(2.0 ** -13)] * (k - 2),        # ties at the window's edge
        [1.75, 1.75] + [1.0] * (k - 2),                       # products >= 2: the carry bit
    ]
    a = np.array([r[:k] for r in rows if len(r) >= k], dtype=np.float64)
    a = get_format(in_name).quantize(a, saturate=True)
    b = np.stack([np.ones(k), -np.ones(k), np.linspace(1, 2, k)], axis=1)
    b = get_format(in_name).quantize(b, saturate=True)
    for c0 in (0.0, -0.0, 1.0, -(2.0 ** -20), 3.0e4):
        c = np.full((a.shape[0], b.shape[1]), get_format(out_name).quantize(np.array(c0)))
        _check_against_reference(unit, in_name, out_name, a, b, c)


@pytest.mark.parametrize("a0, b0, a3, want", [
    (math.nan, 1.0, 1.0, "nan"), (math.inf, 1.0, 1.0, "+inf"), (math.inf, -1.0, 1.0, "-inf"),
    (math.inf, 0.0, 1.0, "nan"), (math.inf, 1.0, -math.inf, "nan"),
    (math.inf, 1.0, math.inf, "+inf")])
def test_nan_and_infinities(a0, b0, a3, want):
    """NaN wins; an infinity times zero and opposite infinities give NaN."""
    a = np.array([[a0, 1.0, 2.0, a3]])
    b = np.array([[b0], [1.0], [1.0], [1.0]])
    d = float(mma(a, b, 0.0, "v100")[0, 0])
    assert math.isnan(d) if want == "nan" else d == float(want)
    assert math.isnan(float(mma(np.ones((1, 4)), np.ones((4, 1)), np.nan, "v100")[0, 0]))


# ------------------------------------------------------------------ API
def _promoted_reference(a, b, c, sa, sb, block_k, unit, fi, fo) -> float:
    """One output of mma with block scales, from docs/gemm.md alone: each block's partial sum
    through the unit's reference from +0, then ``D = round(D + round(sa*sb) * P)`` in exact
    rationals, rounded once to nearest even (``ref_round``)."""
    d = Fraction(float(c))
    for blk, k0 in enumerate(range(0, len(a), block_k)):
        p = unit_gemm_row(a[k0:k0 + block_k], b[k0:k0 + block_k], 0.0, unit, fi, fo)
        s = fo.code_value(ref_round(Fraction(float(sa[blk])) * Fraction(float(sb[blk])), fo,
                                    "rne"))
        if isinstance(d, float) or not math.isfinite(p):     # inf/NaN: float arithmetic's rules
            d = float(d) + float(s) * p
            continue
        d = fo.code_value(ref_round(d + s * Fraction(p), fo, "rne"))    # a float once it is inf
    return float(d)


@settings(max_examples=25, deadline=None)
@given(unit=st.sampled_from([get_unit("h100", "float8_e4m3fn"), get_unit("a100", "bfloat16"),
                             MatrixUnit(fma=4, extra_bits=3, sticky=True, rounding="rne")]),
       k=st.integers(1, 300), block_k=st.sampled_from([1, 16, 32, 128]),
       seed=st.integers(0, 2**32 - 1), spread=st.sampled_from([2, 8]))
def test_block_scales_are_applied_at_each_promotion(unit, k, block_k, seed, spread):
    in_name = "float8_e4m3fn" if "e4m3" in str(unit) or unit.fma == 4 else "bfloat16"
    fi, fo = get_format(in_name), get_format("float32")
    rng = np.random.default_rng(seed)
    nblk = -(-k // block_k)
    a = _values(fi, rng, 2 * k, spread).reshape(2, k)
    b = _values(fi, rng, k * 2, spread).reshape(k, 2)
    c = fo.quantize(rng.standard_normal((2, 2)))
    # float32 scales: powers of two, DeepSeek's amax / 448 (full significands), and ones
    sa = (rng.random((2, nblk)) * np.exp2(rng.integers(-20, 20, (2, nblk)))).astype(np.float32)
    sb = np.exp2(rng.integers(-20, 20, (nblk, 2))).astype(np.float32)
    sb = np.where(rng.random((nblk, 2)) < 0.5, sb * rng.random((nblk, 2)), sb).astype(np.float32)
    sb[rng.random((nblk, 2)) < 0.2] = 1.0
    got = mma(a, b, c, unit, in_name, a_scale=sa, b_scale=sb, block_k=block_k)
    for i in range(2):
        for j in range(2):
            want = _promoted_reference(list(a[i]), list(b[:, j]), c[i, j], sa[i], sb[:, j],
                                       block_k, unit, fi, fo)
            g = float(got[i, j])
            assert (math.isnan(g) and math.isnan(want)) or (
                g == want and math.copysign(1, g) == math.copysign(1, want)), \
                (f"{unit.spec} block_k {block_k} ({i}, {j}): got {g!r} want {want!r}")


def test_block_scales_of_one_over_all_of_k_are_the_plain_unit():
    fi = get_format("float8_e4m3fn")
    rng = np.random.default_rng(3)
    a = _values(fi, rng, 3 * 200, 4).reshape(3, 200)
    b = _values(fi, rng, 200 * 5, 4).reshape(200, 5)
    plain = mma(a, b, 0.0, "h100", fi)
    assert np.array_equal(mma(a, b, 0.0, "h100", fi, block_k=200), plain)
    # Power-of-two scales multiply each partial sum exactly; one block: the scaled plain result.
    got = mma(a, b, 0.0, "h100", fi, a_scale=np.full((3, 1), 2.0 ** -7),
              b_scale=np.full((1, 5), 8.0), block_k=256)
    assert np.array_equal(got, plain * np.float32(2.0 ** -4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_k=0), "block_k must be a positive int"),
    (dict(block_k=True), "block_k must be a positive int"),
    (dict(block_k=2, a_scale=np.ones((2, 3))), r"a_scale must have shape \(2, 2\)"),
    (dict(block_k=2, b_scale=np.ones((2, 3))), r"b_scale must have shape \(2, 2\)"),
    (dict(a_scale=np.full((2, 2), 0.1), b_scale=np.full((2, 2), 0.1), block_k=2),
     "products of a_scale and b_scale are not exact"),
])
def test_bad_block_scales_name_the_parameter(kwargs, message):
    a = np.ones((2, 4))
    b = np.ones((4, 2))
    with pytest.raises(ValueError, match=message):
        mma(a, b, 0.0, "h100", "float16", **kwargs)
    with pytest.raises(ValueError, match="block scales need 2-D a and b"):
        mma(np.ones((2, 2, 4)), b, 0.0, "h100", "float16", block_k=2)


def test_batch_semantics_follow_numpy_matmul():
    rng = np.random.default_rng(1)
    f = get_format("float16")
    a = f.quantize(rng.standard_normal((2, 1, 3, 20)))
    b = f.quantize(rng.standard_normal((4, 20, 5)))
    c = get_format("float32").quantize(rng.standard_normal(5))
    d = mma(a, b, c, "a100", "float16")
    assert d.shape == np.matmul(a, b).shape == (2, 4, 3, 5) and d.dtype == np.float32
    want = mma(a[1, 0], b[2], c, "a100", "float16")
    assert np.array_equal(d[1, 2], want)
    assert mma(a[0, 0, 0], b[0], c, "a100", "float16").shape == (5,)
    assert mma(a[0, 0, 0], b[0, :, 0], 0.0, "a100", "float16").shape == ()
    # close to the exact product: truncation errors only
    np.testing.assert_allclose(d, np.matmul(a, b) + c, rtol=1e-5, atol=1e-5)


def test_inputs_must_be_values_of_the_formats():
    with pytest.raises(ValueError, match="not float16 values"):
        mma(np.array([[1 + 2.0 ** -20]]), np.ones((1, 1)), 0.0, "v100")
    with pytest.raises(ValueError, match="c holds values that are not float32"):
        mma(np.ones((1, 1)), np.ones((1, 1)), 1 + 2.0 ** -40, "v100")
    d = mma(np.array([[1 + 2.0 ** -20]]), np.ones((1, 1)), 0.0, "v100", quantize_inputs=True)
    assert float(d[0, 0]) == 1.0
    with pytest.raises(ValueError, match="do not chain"):
        mma(np.ones((2, 3)), np.ones((4, 2)), 0.0, "v100")
    with pytest.raises(ValueError, match="does not broadcast"):
        mma(np.ones((2, 3)), np.ones((3, 2)), np.ones(3), "v100")


def test_custom_units_and_specs():
    u = MatrixUnit(fma=16, extra_bits=3, rounding="rne", sticky=True, name="proposal")
    again = get_unit(u.spec)
    assert again == u and str(u) == "proposal" and u.spec == "fma16/x3/rne/sticky"
    assert get_unit("H100", "e4m3fn", "fp32").describe()["result_bits"] == 13
    assert get_unit("h100", "float8_e4m3fn").spec == "fma32/x-10/rtz/p13/min-133"
    assert get_unit("b200", "float8_e5m2").spec == "fma32/x2/rtz/min-133"
    assert get_unit("mi250", "bfloat16").spec == "fma4/pairwise/rne/ftzin/ftzout"
    assert get_unit("fma2/exact/rne") == get_unit("mi100", "bfloat16")
    assert get_unit("mi300x", "float8_e4m3fnuz").spec == "fma16/odd-even1/rne"
    assert get_unit("fma8/late1/rne") == get_unit("mi300a", "bfloat16")
    assert get_unit("fma8/x1/rtz/min-132/ftzout") == MatrixUnit(
        fma=8, extra_bits=1, min_exponent=-132, subnormal_outputs=False)
    rng = np.random.default_rng(2)
    a = get_format("float16").quantize(rng.standard_normal((4, 64)))
    b = get_format("float16").quantize(rng.standard_normal((64, 4)))
    wide, narrow = mma(a, b, 0.0, "fma64/x8/rne"), mma(a, b, 0.0, "fma4/x-8/rtz")
    exact = a @ b
    assert np.abs(wide - exact).max() < np.abs(narrow - exact).max()


@pytest.mark.parametrize("kwargs, message", [
    (dict(fma=0), "fma must be in 1..65536"), (dict(fma=4, extra_bits=30), "extra_bits"),
    (dict(fma=4, rounding="sr"), "rounding must be one of"),
    (dict(fma=4, result_bits=0), "result_bits"), (dict(fma=4, result_bits=24), "result_bits")])
def test_bad_unit_parameters_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatrixUnit(**kwargs)


def test_get_unit_errors_name_the_choices():
    with pytest.raises(ValueError, match="presets are a100, a2, a30, ada, b200, h100, h200, l40s"):
        get_unit("tpu")
    with pytest.raises(ValueError, match="no preset for bfloat16 inputs"):
        get_unit("v100", "bfloat16")
    with pytest.raises(ValueError, match="no effect with summation='exact'"):
        MatrixUnit(fma=4, summation="exact", extra_bits=2)
    with pytest.raises(ValueError, match="power-of-two fma"):
        MatrixUnit(fma=3, summation="pairwise", rounding="rne")
    with pytest.raises(ValueError, match="out_format must be float32"):
        mma(np.ones((1, 4)), np.ones((4, 1)), 0.0, "fma4/pairwise/rne", "float16", "float16")
    with pytest.raises(ValueError, match="mi300x' has no preset for float8_e4m3fn"):
        get_unit("mi300x", "float8_e4m3fn")
    with pytest.raises(ValueError, match="AMD CDNA3"):
        MatrixUnit(fma=8, summation="late", extra_bits=1, rounding="rtz")
    with pytest.raises(ValueError, match="at most 11 mantissa bits"):
        mma(np.ones((1, 1)), np.ones((1, 1)), 0.0, MatrixUnit(fma=4), "float32")


@pytest.mark.parametrize("rounding", ["rne", "rtz", "rto"])
def test_wide_blocks_whose_integer_sum_passes_float64(rounding):
    """A 4096-product block with a 43-bit window: the integer sum needs more than 53 bits, so it
    reaches the final rounding as its round-to-odd float64 (still the exact value's rounding)."""
    unit = MatrixUnit(fma=4096, extra_bits=20, rounding=rounding)
    rng = np.random.default_rng(4)
    f16 = get_format("float16")
    a = f16.quantize(rng.uniform(1, 2, (2, 4096)) * np.exp2(rng.integers(-12, 12, (2, 4096))))
    b = f16.quantize(rng.uniform(1, 2, (4096, 1)))
    _check_against_reference(unit, "float16", "float32", a, b, np.zeros((2, 1)))


def test_integer_sums_beyond_float64_round_to_odd():
    """The block's integer sum reaches the final rounding as a float64: exact below 2**53, else
    its round-to-odd neighbour, so that no double rounding happens (a float32 tie plus a tiny
    remainder must round up, not to even)."""
    from fpformat.unit_core import _odd_float
    assert _odd_float((1 << 52) + 3) == float((1 << 52) + 3)
    tie_plus = (1 << 60) + (1 << 36) + 1              # a float32 tie, plus 1
    assert _odd_float(tie_plus) == (1 << 60) + (1 << 36) + (1 << 8)
    assert _odd_float(-tie_plus) == -_odd_float(tie_plus)
    f32 = get_format("float32")
    assert f32.quantize(np.array([_odd_float(tie_plus)]))[0] == (1 << 60) + (1 << 37)
    assert f32.quantize(np.array([float(tie_plus)]))[0] == 1 << 60   # what it would give


def test_too_few_carry_bits_wrap_around():
    """Sixteen products of 1.75 * 1.75 (3.0625 each, sum 49) need 4 carry bits beyond the sign
    and a product's 2 integer bits; an adder with 2 wraps (two's complement: 49 - 64 = -15), as
    a too-narrow hardware adder does."""
    a = np.full((1, 16), 1.75)
    b = np.full((16, 1), 1.75)
    assert float(mma(a, b, 0.0, "fma16/x2/rtz")[0, 0]) == 49.0
    assert float(mma(a, b, 0.0, "fma16/x2/rtz/c4")[0, 0]) == 49.0
    assert float(mma(a, b, 0.0, "fma16/x2/rtz/c3")[0, 0]) == 49.0 - 64     # range [-32, 32)
    assert float(mma(a, b, 0.0, "fma16/x2/rtz/c2")[0, 0]) == 49.0 - 64     # [-16, 16): 17 - 32
    _check_against_reference(get_unit("fma16/x2/rtz/c2"), "float16", "float32", a, b,
                             np.zeros((1, 1)))
    with pytest.raises(ValueError, match="carry_bits bounds the aligned window"):
        MatrixUnit(fma=4, summation="exact", carry_bits=2)
