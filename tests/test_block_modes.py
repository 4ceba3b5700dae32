"""Block formats against the vectorised numpy reference (tests/mx_numpy_reference.py): every
preset, every deterministic rounding mode, float16/bfloat16/float32/float64 inputs, ragged
blocks, other axes, 2-D tiles, NVFP4, the amax rule with float32 and UE4M3 scales; stochastic
rounding tied to the element format's; signs of zero compared too (bit for bit)."""

from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import mx_numpy_reference as ref  # noqa: E402

from fpformat import BlockFormat, get_format  # noqa: E402

# Exponent ranges (smallest subnormal, largest binade) of the input dtypes.
RANGES = {"float16": (-24, 15), "bfloat16": (-133, 127), "float32": (-149, 127),
          "float64": (-300, 300)}


def _cast(x64: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x64.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def hard(shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> np.ndarray:
    """Wide dynamic range across rows and inside blocks, and rows that are: a zero block,
    a NaN, +inf, -inf, subnormals of ``dtype``, a ramp whose maximum overflows most element
    formats after OCP scaling (amax just below the next binade), small negative values
    (negative zeros after rounding)."""
    lo, hi = RANGES[dtype]
    rng = np.random.default_rng(seed)
    rows, L = int(np.prod(shape[:-1])), shape[-1]
    x = rng.standard_normal((rows, L)) * np.exp2(
        rng.integers(lo + 26, hi - 4, (rows, 1)) + rng.integers(-14, 3, (rows, L)))
    specials = [
        lambda r: x.__setitem__((r, slice(0, 32)), 0.0),
        lambda r: x.__setitem__((r, rng.integers(0, L)), np.nan),
        lambda r: x.__setitem__((r, rng.integers(0, L)), np.inf),
        lambda r: x.__setitem__((r, rng.integers(0, L)), -np.inf),
        lambda r: x.__setitem__((r, slice(None)), rng.integers(-700, 700, L) * 2.0 ** lo),
        lambda r: x.__setitem__((r, slice(None)),
                                np.linspace(-1, 1, L) * 1.99 * 2.0 ** rng.integers(-20, 20)),
        lambda r: x.__setitem__((r, slice(None)), -np.abs(x[r]) * 2.0 ** -40 + 0.0),
    ]
    for r in range(min(rows, len(specials))):
        specials[(r + seed) % len(specials)](r)
    return _cast(x.reshape(shape), dtype)


def same(got, expect, zero_signs: bool = True) -> bool:
    """Equal values and (with ``zero_signs``) equal signs of zeros; NaN matches NaN."""
    g = np.asarray(got, dtype=np.float64)
    e = np.asarray(expect, dtype=np.float64)
    if g.shape != e.shape:
        return False
    gn, en = np.isnan(g), np.isnan(e)
    return bool(np.array_equal(gn, en) and np.array_equal(g[~gn], e[~en])
                and (not zero_signs or np.array_equal(np.signbit(g[~gn]), np.signbit(e[~en]))))


def check_block(b: BlockFormat, x: np.ndarray, values: np.ndarray, mode: str,
                scales: np.ndarray | None = None) -> None:
    """encode's scale codes, decode(encode(x)) and quantize(x) (x's dtype) against the
    reference, zero signs included (MXINT8, two's complement, has no -0)."""
    zs = True
    enc = b.encode(x, rounding=mode)
    if scales is not None:
        assert np.array_equal(enc.scales.astype(np.int64), scales), "scale codes"
    assert same(b.decode(enc), values, zs), "decode(encode(x))"
    q = b.quantize(x, rounding=mode)
    assert q.dtype == x.dtype and q.shape == x.shape
    assert same(q.astype(np.float64), _cast(values, str(x.dtype)).astype(np.float64), zs), \
        "quantize"
    d = b.decode(enc).astype(x.dtype)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
    nan = np.isnan(q.astype(np.float64))
    assert np.array_equal(nan, np.isnan(d.astype(np.float64)))
    assert np.array_equal(q.view(bits)[~nan], d.view(bits)[~nan]), "quantize == decode(encode)"


@pytest.mark.parametrize("name", list(ref.PRESETS))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_mx_presets_every_mode(name, dtype):
    element, k = ref.PRESETS[name]
    b = get_format(name)
    x = hard((9, 100), dtype, seed=len(name))                 # 100 = 3 blocks + a ragged one
    for mode in ref.MODES:
        values, codes = ref.mx(x.astype(np.float64), element, k, mode)
        check_block(b, x, values, mode, codes)


@pytest.mark.parametrize("spec,element,k", [("e2m1/16/e8m0", "float4_e2m1fn", 16),
                                            ("e4m3fn/8/e8m0", "float8_e4m3fn", 8),
                                            ("e3m2/5/e8m0", "float6_e3m2fn", 5),
                                            ("e5m2ieee/64/e8m0", "float8_e5m2", 64)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mx_other_block_sizes_and_axes(spec, element, k, axis):
    b0 = get_format(spec)
    b = BlockFormat(b0.element, k, axis=axis, scale_format=b0.scale_format, scale_rule="ocp")
    x = hard((7, 11, 37), "float32", seed=axis + k)
    xm = np.moveaxis(x, axis, -1).astype(np.float64)
    for mode in ("rne", "rtn"):
        values, codes = ref.mx(xm, element, k, mode)
        check_block(b, x, np.moveaxis(values, -1, axis), mode, np.moveaxis(codes, -1, axis))


@pytest.mark.parametrize("tile", [(2, 4), (3, 32), (1, 16), (5, 5), (128, 128)])
def test_mx_tiles(tile):
    x = hard((45, 70), "float32", seed=sum(tile))
    b = BlockFormat("float4_e2m1fn", tile=tile, scale_format="float8_e8m0fnu", scale_rule="ocp")
    for mode in ("rne", "rna"):
        values, codes = ref.mx_tiles(x.astype(np.float64), "float4_e2m1fn", tile, mode)
        check_block(b, x, values, mode, codes)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mode", ref.MODES)
def test_nvfp4_every_mode(dtype, mode):
    b = get_format("nvfp4")
    x = hard((6, 70), dtype, seed=3)
    x = np.where(np.isfinite(x), x, 1.0).astype(x.dtype)    # NaN/inf poison the whole tensor
    values, s_b, s_t = ref.nvfp4(x.astype(np.float64), mode)
    enc = b.encode(x, rounding=mode)
    assert enc.tensor_scale == s_t
    assert np.array_equal(b.scale_format.decode(enc.scales), s_b)
    check_block(b, x, values, mode)


def test_nvfp4_nan_poisons_the_tensor():
    b = get_format("nvfp4")
    x = hard((2, 40), "float32", seed=1)
    x[1, 3] = np.inf
    values, _, s_t = ref.nvfp4(x.astype(np.float64))
    assert np.isnan(values).all() and np.isnan(s_t)
    assert np.isnan(b.quantize(x)).all()


@pytest.mark.parametrize("k", [1, 7, 32, "channel", "tensor"])
@pytest.mark.parametrize("mode", ["rne", "rtz", "rtp"])
def test_amax_float32_scales_are_sun_et_al(k, mode):
    x = hard((5, 64), "float32", seed=11)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    b = BlockFormat("e4m3", k)
    x64 = x.astype(np.float64)
    if k == "tensor":
        values, S = ref.amax_rule(x64.reshape(1, -1), ref.E4M3_SUN, x.size, mode)
        values = values.reshape(x.shape)
    else:
        values, S = ref.amax_rule(x64, ref.E4M3_SUN, x.shape[1] if k == "channel" else k, mode)
    enc = b.encode(x, rounding=mode)
    assert np.array_equal(enc.scales.astype(np.float64).ravel(), S.ravel())
    check_block(b, x, values, mode)


@pytest.mark.parametrize("rounding", ["up", "nearest"])
def test_amax_into_ue4m3_scales(rounding):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 96)) * np.exp2(rng.uniform(-14, 10, (4, 96)))).astype(np.float32)
    x[0, :8] = 0.0                                           # a zero block: scale 1
    b = BlockFormat("e2m1", 8, scale_format="ue4m3fn", scale_rule="amax", scale_rounding=rounding)
    values, S = ref.amax_rule(x.astype(np.float64), ref.ELEMENTS["float4_e2m1fn"], 8, "rne",
                              ref.UE4M3, rounding)
    enc = b.encode(x)
    assert np.array_equal(b.scale_format.decode(enc.scales), S)
    check_block(b, x, values, "rne")


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e5m2", "mxint8"])
def test_stochastic_rounding_is_the_element_formats_at_the_flat_index(name):
    """MX scales are powers of two, so a block's SR codes are the element format's SR codes of
    the exactly scaled values, element i drawing the random bits of its flat index i."""
    b = get_format(name)
    x = hard((4, 3, 50), "float32", seed=2)
    x = np.where(np.isfinite(x), x, 0.5).astype(np.float32)
    element, k = ref.PRESETS[name]
    _, codes = ref.mx(x.astype(np.float64), element, k)
    X = np.repeat(np.ldexp(1.0, codes - 127), k, axis=-1)[..., :x.shape[-1]]
    enc = b.encode(x, rounding="sr", seed=123)
    expect = b.element.encode(x.astype(np.float64) / X, rounding="sr", saturate=True, seed=123)
    assert np.array_equal(b.decode(enc), b.element.decode(expect) * X)
    if b.int_codes:                                          # two's complement of the same k
        sb = 1 << (b.element.bits - 1)
        e = expect.astype(np.int64)
        expect = np.where(e & sb, (2 * sb - (e & (sb - 1))) % (2 * sb), e)
    assert np.array_equal(enc.codes, expect)
    assert np.array_equal(b.quantize(x, rounding="sr", seed=123),
                          b.decode(enc).astype(np.float32))
    assert not np.array_equal(enc.codes, b.encode(x, rounding="sr", seed=124).codes)


def test_stochastic_rounding_is_unbiased_inside_a_block():
    b = get_format("mxfp4")
    v = np.float32(1.3)                                      # between E2M1's 1.0 and 1.5 at X=1
    x = np.full((4096, 32), v, dtype=np.float32)
    x[:, 0] = 5.0                                            # amax 5: X = 2**(2 - 2) = 1
    q = b.quantize(x, rounding="sr", seed=9)[:, 1:]
    assert set(np.unique(q).tolist()) == {1.0, 1.5}
    assert abs(float(q.mean()) - 1.3) < 0.01                 # std of the mean ~ 0.0016


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
                min_size=1, max_size=150),
       st.sampled_from(list(ref.PRESETS)), st.sampled_from(ref.MODES))
def test_hypothesis_mx_matches_reference(vals, name, mode):
    element, k = ref.PRESETS[name]
    x = np.array([vals], dtype=np.float32)
    values, codes = ref.mx(x.astype(np.float64), element, k, mode)
    check_block(get_format(name), x, values, mode, codes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-3e4, 3e4, width=32, allow_nan=False), min_size=1, max_size=70),
       st.sampled_from(ref.MODES))
def test_hypothesis_nvfp4_matches_reference(vals, mode):
    x = np.array([vals], dtype=np.float32)
    values, _, _ = ref.nvfp4(x.astype(np.float64), mode)
    check_block(get_format("nvfp4"), x, values, mode)


@pytest.mark.parametrize("spec", ["e4m3/1x128", "float8_e4m3fn/128x128", "e2m3/3x5/ue8m0/amax",
                                  "float4_e2m1fn/16x16/ue4m3fn/nvfp4", "e2m1/4x16/ue4m3fn/nvfp4"])
@pytest.mark.parametrize("mode", ["rne", "rtz", "sr"])
def test_fused_2d_tiles_equal_the_numpy_path(spec, mode):
    """A 2-D array's tiles go through the fused kernel (fpformat.block_kernels); a 3-D array
    takes the plain numpy path: the same tiles, so the same codes, scales and values (ragged
    tiles at both edges)."""
    b = get_format(spec)
    x = hard((45, 170), "float32", seed=len(spec))
    fused, plain = b.encode(x, rounding=mode, seed=3), b.encode(x[None], rounding=mode, seed=3)
    np.testing.assert_array_equal(fused.codes, plain.codes[0])
    np.testing.assert_array_equal(fused.scales, plain.scales[0])
    np.testing.assert_equal(fused.tensor_scale, plain.tensor_scale)      # NaN: data holds NaN
    np.testing.assert_array_equal(b.quantize(x, rounding=mode, seed=3),
                                  b.quantize(x[None], rounding=mode, seed=3)[0])
    finite = np.nan_to_num(x, nan=1.0, posinf=3e4, neginf=-3e4)
    np.testing.assert_array_equal(b.quantize(finite, rounding=mode, seed=3),
                                  b.quantize(finite[None], rounding=mode, seed=3)[0])
