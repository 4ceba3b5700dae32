"""Block formats against a plain-Python reference of the OCP MX and NVFP4 rules.

The reference below is written from the rules in fpformat/block.py's docstring (OCP MX v1.0:
X = 2**(floor(log2 amax) - emax_elem), E8M0 clamp, saturating RNE elements; NVFP4: float32
tensor scale amax/(448*6), UE4M3 block scales, E2M1 elements) and rounds elements by searching
the element format's value list, not through the kernels.
"""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpformat import BlockFormat, FloatFormat, get_format


def _rne_sat(v: float, grid: np.ndarray) -> float:
    """Round v to the nearest value of a symmetric sorted grid, ties to the even code,
    saturating."""
    if v >= grid[-1]:
        return float(grid[-1])
    if v <= grid[0]:
        return float(grid[0])
    i = int(np.searchsorted(grid, v))
    lo, hi = grid[i - 1], grid[i]
    if v - lo < hi - v:
        return float(lo)
    if hi - v < v - lo:
        return float(hi)
    # tie: the neighbour whose magnitude code is even (index in the positive half)
    pos = grid[grid >= 0]
    k_lo = np.searchsorted(pos, abs(lo))
    return float(lo) if k_lo % 2 == 0 else float(hi)


def _grid(fmt: FloatFormat) -> np.ndarray:
    return fmt.values()


def ref_mx(x: np.ndarray, element: FloatFormat, k: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """OCP MX along the last axis: (decoded values, E8M0 scale codes)."""
    grid = _grid(element)
    emax = math.floor(math.log2(element.max))
    rows, n = x.shape
    nb = -(-n // k)
    out = np.empty_like(x, dtype=np.float64)
    codes = np.empty((rows, nb), dtype=np.int64)
    for r in range(rows):
        for b in range(nb):
            blk = x[r, b * k:(b + 1) * k].astype(np.float64)
            if not np.isfinite(blk).all():
                codes[r, b] = 255
                out[r, b * k:(b + 1) * k] = np.nan
                continue
            amax = float(np.max(np.abs(blk)))
            e = -127 if amax == 0 else math.frexp(amax)[1] - 1 - emax
            e = min(max(e, -127), 127)
            codes[r, b] = e + 127
            X = 2.0 ** e
            out[r, b * k:(b + 1) * k] = [_rne_sat(v / X, grid) * X for v in blk]
    return out, codes


def ref_nvfp4(x: np.ndarray) -> np.ndarray:
    e2m1, ue4m3 = get_format("float4_e2m1fn"), get_format("ue4m3fn")
    g, sgrid = _grid(e2m1), _grid(ue4m3)
    at = float(np.max(np.abs(x)))
    st_ = float(np.float32(at / (448 * 6))) if at > 0 else 1.0
    out = np.empty(x.shape, dtype=np.float64)
    rows, n = x.shape
    for r in range(rows):
        for b in range(0, n, 16):
            blk = x[r, b:b + 16].astype(np.float64)
            sb = _rne_sat(float(np.max(np.abs(blk))) / (6 * st_), sgrid)
            s = sb * st_
            out[r, b:b + 16] = 0.0 if sb == 0 else [_rne_sat(v / s, g) * s for v in blk]
    return out


def wide_data(rows=6, cols=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.uniform(-30, 30, (rows, 1)))
    x *= np.exp2(rng.integers(-6, 6, (rows, cols)))           # wide range inside blocks too
    x[1, :40] = 0.0                                          # a zero block (and part of one)
    x[-1, 3] *= 1e6                                          # one element far above the rest
    return x.astype(np.float32)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4",
                                  "mxint8"])
def test_mx_presets_match_reference(name):
    b = get_format(name)
    x = wide_data()
    enc = b.encode(x)
    ref, ref_codes = ref_mx(x, b.element)
    assert np.array_equal(enc.scales.astype(np.int64), ref_codes)
    assert np.array_equal(b.decode(enc), ref)
    assert np.array_equal(b.quantize(x), ref.astype(np.float32))


def test_mx_nan_inf_blocks_and_ragged():
    b = get_format("mxfp4")
    x = wide_data(3, 70)
    x[0, 5] = np.nan
    x[1, 65] = np.inf
    enc = b.encode(x)
    q = b.decode(enc)
    assert enc.scales[0, 0] == 255 and np.isnan(q[0, :32]).all() and np.isfinite(q[0, 32:]).all()
    assert enc.scales[1, 2] == 255 and np.isnan(q[1, 64:]).all()          # the ragged last block
    ref, codes = ref_mx(x, b.element)
    assert np.array_equal(enc.scales.astype(np.int64), codes)
    assert np.array_equal(q, ref, equal_nan=True)


def test_nvfp4_matches_reference():
    x = wide_data(4, 64, seed=3) / 1e3
    b = get_format("nvfp4")
    assert np.array_equal(b.decode(b.encode(x)), ref_nvfp4(x))


def test_mx_scale_clamps_to_e8m0_range():
    b = get_format("mxfp8_e4m3")
    x = np.array([[1e-44] * 32, [3e38] * 32], dtype=np.float32)
    enc = b.encode(x)
    assert enc.scales.tolist() == [[0], [127 - 8 + 127]]   # floor(log2 3e38) = 127; tiny: clamped


def test_amax_rule_is_sun_et_al_quantizer():
    x = wide_data(3, 64, seed=5)
    b = get_format("e4m3/channel")
    e4m3 = get_format("e4m3")
    s = (np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 480).astype(np.float32)
    expect = e4m3.quantize(x.astype(np.float64) / s.astype(np.float64), saturate=True) * s
    assert np.array_equal(b.decode(b.encode(x)), expect)
    assert b.encode(x).scales.shape == (3, 1)


def test_amax_scale_rounded_up_never_overflows():
    b = BlockFormat("e2m1", 8, scale_format="ue4m3fn", scale_rule="amax", scale_rounding="up")
    rng = np.random.default_rng(7)                           # block maxima within UE4M3's range
    x = (rng.standard_normal((2, 64)) * np.exp2(rng.uniform(-4, 8, (2, 64)))).astype(np.float32)
    enc = b.encode(x)
    vals = b.element.decode(enc.codes)
    assert np.abs(vals).max() <= 6
    # with scales rounded up, no element saturates: the block max maps to <= max_elem exactly
    s = b._scale_values(enc.scales, None)
    assert (np.abs(x).reshape(2, 8, 8).max(-1) / s <= 6 + 1e-12).all()


def test_tiles_and_tensor_blocks():
    x = wide_data(4, 64, seed=9)
    t = BlockFormat("e4m3", tile=(2, 32))
    enc = t.encode(x)
    assert enc.scales.shape == (2, 2)
    assert enc.scales[0, 0] == np.float32(np.abs(x[:2, :32]).max() / 480)
    whole = get_format("e4m3/tensor").encode(x)
    assert whole.scales.shape == (1, 1)


@pytest.mark.parametrize("spec", ["mxfp4", "nvfp4", "e3m2/32/e8m0", "e4m3/channel",
                                  "e2m1/16/ue4m3fn/nvfp4", "e4m3/128x128",
                                  "e2m1/32/ue4m3fn/amax-nearest"])
def test_spec_round_trip(spec):
    b = get_format(spec)
    assert get_format(b.spec) == b


@pytest.mark.parametrize("bad", ["e2m1/0", "e2m1/abc", "e2m1/32/e4m3/ocp", "nope/32"])
def test_bad_block_specs(bad):
    with pytest.raises(ValueError):
        get_format(bad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=80),
       st.sampled_from(["mxfp4", "mxfp6_e3m2", "e2m1/8", "nvfp4", "e3m2/16/ue4m3fn"]))
def test_every_element_on_grid_times_its_scale(vals, name):
    b = get_format(name)
    x = np.array([vals], dtype=np.float32)
    enc = b.encode(x)
    q = b.decode(enc)
    s = b._broadcast(b._scale_values(enc.scales, enc.tensor_scale), x.shape)
    grid = set(b.element.values().tolist())
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(s > 0, q / s, 0.0)
    assert all(float(r) in grid for r in ratio.ravel())
    assert np.array_equal(b.quantize(x), q.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_other_input_dtypes(dtype):
    x = wide_data(2, 64, seed=11)
    x = np.clip(x, -6e4, 6e4).astype(dtype)
    b = get_format("mxfp8_e4m3")
    assert np.array_equal(b.decode(b.encode(x)), ref_mx(x.astype(np.float64), b.element)[0])
    assert b.quantize(x).dtype == np.dtype(dtype)


def _assert_fused_equals_numpy(b, x, mode, saturate):
    """The fused kernels' codes, scales and values equal the numpy path's, for ``x`` as
    float32 and as float64 (seed 4 for stochastic rounding)."""
    for src in (x, x.astype(np.float64)):
        fused = b.encode(src, mode, saturate, seed=4)
        plain = b._encode_numpy(src, src.dtype.name, mode, saturate, 4, None)
        assert np.array_equal(fused.codes, plain.codes), b
        assert np.array_equal(fused.scales.view(np.uint8), plain.scales.view(np.uint8)), b
        q = b.quantize(src, mode, saturate, seed=4)
        assert np.array_equal(q, b.decode(plain).astype(src.dtype), equal_nan=True), b


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e5m2", "mxint8", "nvfp4", "e4m3/channel",
                                  "e4m3/tensor", "e2m1/7", "e2m1/16/ue4m3fn/amax-nearest",
                                  "e3m2/32/e8m0"])
@pytest.mark.parametrize("mode,saturate",
                         [("rne", True), ("sr", True), ("rtz", False), ("rna", False)])
def test_fused_kernel_equals_numpy_path(name, mode, saturate):
    b = get_format(name)
    x = wide_data(5, 90, seed=13)
    x[0, 7] = np.nan
    x[3, 50] = -np.inf
    _assert_fused_equals_numpy(b, x, mode, saturate)


def test_fused_kernel_keeps_scale_codes_wider_than_32_bits():
    """The kernel writes every format's scale codes as uint64 (one compilation for all of
    them): a 39-bit scale format's codes come out whole."""
    b = get_format("e4m3/32/e8m30")
    x = wide_data(5, 90, seed=17)
    for mode in ("rne", "sr"):
        _assert_fused_equals_numpy(b, x, mode, True)
    assert b.encode(x).scales.dtype == np.uint64 and b.encode(x).scales.max() >= 2**32


@pytest.mark.parametrize("name", ["mxfp4", "mxint8", "nvfp4", "e4m3/channel", "e2m1/7",
                                  "e2m1/16/ue4m3fn/amax-nearest", "float8_e4m3fn/128"])
@pytest.mark.parametrize("mode,saturate",
                         [("rne", True), ("sr", True), ("rtz", False), ("rtp", True)])
@pytest.mark.parametrize("rows", [90, 256, 300])
def test_fused_kernel_down_columns_equals_numpy_path(name, mode, saturate, rows):
    """Blocks along axis 0 of a 2-D array (the fused kernel's ``(k, 1)`` tiles, what a
    weight-gradient GEMM quantizes) against the numpy path: codes, scales and values, with
    ragged column blocks, NaN and inf; stochastic rounding indexes elements in C order."""
    b = dataclasses.replace(get_format(name), axis=0)
    x = np.ascontiguousarray(wide_data(7, rows, seed=rows).T)
    x[7, 0] = np.nan
    x[rows - 1, 3] = -np.inf
    _assert_fused_equals_numpy(b, x, mode, saturate)
