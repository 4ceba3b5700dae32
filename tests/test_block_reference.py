"""Block formats against the independent OCP MX / NVFP4 reference (tests/mx_reference.py), and
the vectorised float32 MX kernel (fpformat/block_core.py) against the general block kernel."""

from __future__ import annotations

import dataclasses
import os
import sys
from unittest import mock

import ml_dtypes
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import mx_reference as ref  # noqa: E402

from fpformat import (  # noqa: E402
    BlockFormat,
    block_core,  # noqa: E402
    block_kernels,
    core,
    get_format,
)
from fpformat.block_kernels import run_blocks  # noqa: E402
from fpformat.rounding import call_tuple  # noqa: E402

E8M0 = "float8_e8m0fnu"
EXP_RANGE = {"float16": (-24, 14), "bfloat16": (-133, 126), "float32": (-149, 126),
             "float64": (-1074, 1022)}


def _cast(x64: np.ndarray, dtype: str) -> np.ndarray:
    return x64.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def hard_data(shape, dtype="float32", seed=0, element_max=6.0, k=32) -> np.ndarray:
    """Wide dynamic range (per row and inside blocks), a zero block, a NaN block, an inf block,
    a -inf block, a block whose max overflows the element format after scaling, a block of
    subnormals of ``dtype`` and one mixing subnormals with its largest normals."""
    rng = np.random.default_rng(seed)
    lo, hi = EXP_RANGE[dtype]
    rows, L = int(np.prod(shape[:-1])), shape[-1]
    row_exp = rng.integers(lo + min(30, (hi - lo) // 3), hi - min(10, (hi - lo) // 8), (rows, 1))
    x = rng.standard_normal((rows, L)) * np.exp2(row_exp + rng.integers(-12, 4, (rows, L)))
    kk = min(k, L)
    # block maxima just below the next binade: x/X rounds above element max -> saturates
    emax = np.floor(np.log2(element_max))
    special = [
        lambda r: x.__setitem__((r, slice(0, kk)), 0.0),
        lambda r: x.__setitem__((r, min(3, L - 1)), np.nan),
        lambda r: x.__setitem__((r, L - 1), np.inf),
        lambda r: x.__setitem__((r, 0), -np.inf),
        lambda r: x.__setitem__((r, slice(0, kk)),
                                np.linspace(-1, 1, kk) * 1.99 * 2.0 ** (emax + 3)),
        lambda r: x.__setitem__((r, slice(0, kk)),
                                rng.integers(-2 ** 9, 2 ** 9, kk) * 2.0 ** lo),
        lambda r: x.__setitem__((r, slice(0, kk)),
                                np.where(np.arange(kk) % 2 == 0,
                                         rng.integers(-2 ** 9, 2 ** 9, kk) * 2.0 ** lo,
                                         rng.standard_normal(kk) * 2.0 ** (lo + 40))),
    ]
    for r, f in zip(range(rows), special):
        f(r)
    with np.errstate(over="ignore"):
        return _cast(x.reshape(shape), dtype)


def _check(enc, r: ref.RefResult, b, x) -> None:
    spec = r.codes >= 0
    assert np.array_equal(enc.codes.astype(np.int64)[spec], r.codes[spec])
    sspec = r.scales >= 0
    assert np.array_equal(enc.scales.astype(np.int64)[sspec], r.scales[sspec])
    q = b.decode(enc)
    assert np.array_equal(q, r.values, equal_nan=True)
    # quantize == decode(encode), rounded to x's dtype, bit for bit
    got = np.asarray(b.quantize(x))
    want = _cast(q, x.dtype.name if x.dtype != ml_dtypes.bfloat16 else "bfloat16")
    assert got.dtype == x.dtype
    w = np.dtype(got.dtype).itemsize * 8
    ub = {16: np.uint16, 32: np.uint32, 64: np.uint64}[w]
    nan = np.isnan(want.astype(np.float64))
    assert np.array_equal(np.isnan(got.astype(np.float64)), nan)
    assert np.array_equal(got.view(ub)[~nan], want.view(ub)[~nan])


@pytest.mark.parametrize("preset", sorted(ref.PRESET_ELEMENT))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(9, 96), (7, 77)])
def test_mx_presets_match_reference(preset, dtype, shape):
    b = get_format(preset)
    x = hard_data(shape, dtype, seed=hash((preset, dtype)) % 1000, element_max=b.element.max)
    _check(b.encode(x), ref.ref_mx(x, ref.PRESET_ELEMENT[preset]), b, x)


@pytest.mark.parametrize("shape", [(40,), (3, 2, 64), (1, 31)])
def test_mx_other_shapes(shape):
    b = get_format("mxfp4")
    x = hard_data((1, int(np.prod(shape))), seed=4).reshape(shape)
    _check(b.encode(x), ref.ref_mx(x, "float4_e2m1fn"), b, x)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(6, 64), (5, 45)])
def test_nvfp4_matches_reference(dtype, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))
    x[0, :16] = 0.0                                        # zero block
    x[1, :16] *= 2.0 ** -40                                # s_b rounds to 0: elements +0
    x[2, :16] *= 2.0 ** 12                                 # the tensor's amax
    x = _cast(x, dtype)
    b = get_format("nvfp4")
    enc = b.encode(x)
    r = ref.ref_nvfp4(x)
    assert enc.tensor_scale == r.tensor_scale
    _check(enc, r, b, x)


def test_nvfp4_nan_or_inf_poisons_the_tensor():
    x = np.random.default_rng(2).standard_normal((2, 40)).astype(np.float32)
    x[1, 20] = np.inf
    b = get_format("nvfp4")
    enc = b.encode(x)
    r = ref.ref_nvfp4(x)
    assert np.isnan(enc.tensor_scale)
    _check(enc, r, b, x)


@pytest.mark.parametrize("tile", [(4, 32), (1, 32), (3, 5)])
def test_tiles_match_reference(tile):
    x = hard_data((2, 10, 70), seed=5)
    b = BlockFormat("float4_e2m1fn", tile=tile, scale_format=E8M0, scale_rule="ocp")
    _check(b.encode(x), ref.ref_mx(x, "float4_e2m1fn", tile=tile), b, x)


def test_blocks_along_another_axis():
    x = hard_data((9, 70), seed=6).T.copy()                # (70, 9): blocks run down axis 0
    b = BlockFormat("float8_e4m3fn", 32, axis=0, scale_format=E8M0, scale_rule="ocp")
    enc = b.encode(x)
    assert enc.scales.shape == (3, 9)
    _check(enc, ref.ref_mx(x, "float8_e4m3fn", axis=0), b, x)


def test_overflow_after_scaling_saturates():
    b = get_format("mxfp8_e4m3")
    x = np.array([[479.0] + [1.0] * 31], dtype=np.float32)  # X = 1, 479/1 rounds to 480 > 448
    enc = b.encode(x)
    assert enc.scales[0, 0] == 127 and enc.codes[0, 0] == 0x7E
    assert b.quantize(x)[0, 0] == 448.0


def test_inf_in_a_block_gives_a_nan_scale():
    b = get_format("mxfp4")
    x = np.ones((1, 64), dtype=np.float32)
    x[0, 40] = -np.inf
    enc = b.encode(x)
    assert enc.scales.tolist() == [[127 - 2, 255]]          # amax 1: X = 2**(0 - 2)
    q = b.quantize(x)
    assert np.isnan(q[0, 32:]).all() and (q[0, :32] == 1.0).all()


def test_mxint8_never_produces_minus_128():
    b = get_format("mxint8")
    x = np.full((1, 32), -1.999, dtype=np.float32)          # X = 1: -1.999 * 64 = -127.9
    q = b.quantize(x)
    assert (q == np.float32(-127 / 64)).all()
    assert set(b.encode(x).codes.ravel().tolist()) == {0x81}         # two's complement of -127


def test_mxint8_codes_are_twos_complement_without_negative_zero():
    b = get_format("mxint8")
    assert b.int_codes and b.spec.startswith("int8/32/")
    x = np.array([[1.0, -1.0, 1 / 64, -1 / 64, -1e-4, 0.0, -0.0, 127 / 64] + [0.0] * 24],
                 dtype=np.float32)                           # amax 127/64: X = 1
    enc = b.encode(x)
    assert enc.codes[0, :8].tolist() == [64, 256 - 64, 1, 255, 0, 0, 0, 127]
    q = b.quantize(x)
    assert not np.signbit(q[0, 4:7]).any()                   # no -0
    assert np.array_equal(b.decode(enc), q.astype(np.float64))
    # 0x80 (-128) is never produced but decodes as -2 * X
    codes = enc.codes.copy()
    codes[0, 0] = 0x80
    from fpformat.block import BlockEncoding
    dec = b.decode(BlockEncoding(codes, enc.scales, None, b, enc.shape, enc.dtype))
    assert dec[0, 0] == -2.0
    assert get_format("int8/32/e8m0") == b
    with pytest.raises(ValueError, match="int_codes"):
        BlockFormat("e2m1", 32, int_codes=True)


# ------------------------------------------------------------------ the fast float32 MX kernel
MODES = ["rne", "rna", "rtz", "rtp", "rtn", "rto", "sr"]


def _general(b, x2, k, mode, sat, seed, want_out, down_columns=False):
    """(codes, scales, values or None) of the general kernel: codes from an encode pass, values
    from a quantize pass (the kernel writes one or the other); ``down_columns``: blocks of
    ``k`` rows down each column.  Always its generic compilation, whatever the test's policy:
    the reference needs no specialisation, which would compile for seconds per format."""
    k, tile_rows = (1, k) if down_columns else (k, 1)
    with mock.patch.dict(os.environ, {"FPFORMAT_SPECIALIZE": "never"}):
        codes, scales, _ = run_blocks(b, x2, k, None, mode, sat, seed, None, False, tile_rows)
        out = (run_blocks(b, x2, k, None, mode, sat, seed, None, True, tile_rows)[2]
               if want_out else None)
    return codes, scales, out


def _assert_fast_equals_general(b, x2, k, mode, sat, seed, down_columns=False):
    """The fast kernel's codes, E8M0 scales and values equal the general kernel's, bit for bit."""
    codes, scales, _ = block_core.run_ocp_f32(b, x2, k, mode, sat, seed, None, True, False,
                                              down_columns=down_columns)
    _, _, out = block_core.run_ocp_f32(b, x2, k, mode, sat, seed, None, False, True,
                                       down_columns=down_columns)
    gc, gs, go = _general(b, x2, k, mode, sat, seed, True, down_columns)
    assert np.array_equal(codes, gc), (x2.shape, k)
    assert np.array_equal(scales, gs), (x2.shape, k)
    assert np.array_equal(out.view(np.uint32), go.view(np.uint32)), (x2.shape, k)


@pytest.mark.parametrize("preset", sorted(ref.PRESET_ELEMENT))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sat", [True, False])
def test_fast_kernel_equals_general_kernel(preset, mode, sat, monkeypatch):
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format(preset)
    for shape, k in (((6, 96), 32), ((5, 77), 32), ((4, 32), 32), ((3, 40), 40)):
        x2 = hard_data(shape, seed=7, element_max=b.element.max)
        assert block_core.ocp_f32_applies(b, x2.dtype)
        _assert_fast_equals_general(b, x2, k, mode, sat, 11)


@pytest.mark.parametrize("spec", ["float8_e4m3fn/32/ue8m0/amax", "e2m1/32/ue8m0/amax",
                                  "e5m2/16/ue8m0/amax"])
@pytest.mark.parametrize("mode", MODES)
def test_fast_kernel_amax_rule_rounded_up_equals_general_kernel(spec, mode, monkeypatch):
    """``2**ceil(log2(amax / max))`` E8M0 scales: exact powers of two at the boundary (amax =
    max * 2**e keeps e), zero blocks (scale 1), NaN/inf blocks, ragged rows."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format(spec)
    k = b.block_size
    for shape in ((6, 3 * k), (5, 2 * k + 5), (2, k)):
        x2 = hard_data(shape, seed=5, element_max=b.element.max)
        x2[0, :k] = 0.0
        x2[1, :k] = np.float32(b.element.max) * np.float32(2.0 ** -3)    # amax on a boundary
        x2[1, k:2 * k] = np.nextafter(x2[1, 0], np.float32(np.inf))     # just above it
        assert block_core.ocp_f32_applies(b, x2.dtype)
        codes, scales, _ = block_core.run_ocp_f32(b, x2, k, mode, True, 11, None, True, False)
        _, _, out = block_core.run_ocp_f32(b, x2, k, mode, True, 11, None, False, True)
        gc, gs, go = _general(b, x2, k, mode, True, 11, True)
        assert np.array_equal(codes, gc) and np.array_equal(scales, gs), shape
        assert np.array_equal(out.view(np.uint32), go.view(np.uint32)), shape
        assert scales[0, 0] == 127 and scales[1, 0] == 127 - 3
        assert shape[1] < 2 * k or scales[1, 1] == 127 - 2


# rtp takes the core's path, which the element kernels' specialisations test too: behind -m slow
# (two compilations of half a minute each in the default suite).
@pytest.mark.parametrize("mode", ["rne", "sr", pytest.param("rtp", marks=pytest.mark.slow)])
def test_fast_kernel_specialised_equals_generic(mode, monkeypatch):
    b = get_format("mxfp4")
    x2 = hard_data((8, 128), seed=8)
    res = {}
    for policy in ("never", "always"):
        monkeypatch.setenv("FPFORMAT_SPECIALIZE", policy)
        res[policy] = (b.encode(x2, mode, seed=3), b.quantize(x2, mode, seed=3))
    (e0, q0), (e1, q1) = res["never"], res["always"]
    assert np.array_equal(e0.codes, e1.codes) and np.array_equal(e0.scales, e1.scales)
    assert np.array_equal(q0.view(np.uint32), q1.view(np.uint32))


@pytest.mark.parametrize("policy", ["never", "always"])
@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_fast_kernel_pairs_of_blocks(policy, mode, monkeypatch):
    """Full blocks go through the kernel two at a time: an odd count leaves one alone, and a
    NaN or an infinity in either block of a pair sends both through the one-block path."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", policy)
    b = get_format("mxfp4")
    for shape in ((1, 7 * 32), (3, 96), (5, 32)):
        x2 = hard_data(shape, seed=9, element_max=b.element.max)
        x2.reshape(-1)[-1] = np.nan                          # the last (odd or paired) block
        for t in (1, 4):                                     # second of a pair, first of one
            if (t + 1) * 32 <= x2.size:
                x2.reshape(-1)[t * 32 + 5] = -np.inf
        codes, scales, _ = block_core.run_ocp_f32(b, x2, 32, mode, True, 4, None, True, False)
        _, _, out = block_core.run_ocp_f32(b, x2, 32, mode, True, 4, None, False, True)
        gc, gs, go = _general(b, x2, 32, mode, True, 4, True)
        assert np.array_equal(codes, gc) and np.array_equal(scales, gs), shape
        assert np.array_equal(out.view(np.uint32), go.view(np.uint32)), shape
        assert (scales.reshape(-1)[[1, -1]] == 255).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["rne", "sr"])
@pytest.mark.parametrize("shape", [(40, 1024), (300, 200)])
def test_fast_kernel_segments_of_blocks(shape, mode, threads, monkeypatch):
    """Values rounded by arithmetic go through the kernel by segments of a row's blocks,
    several segments to a work item: rows that 32 divides as one long row (40 x 1024: 1280
    blocks, 20 segments, 3 work items), others row by row (300 x 200: seven blocks a row, the
    last of 8 elements).  NaN, infinite, zero, tiny and overflowing blocks on the segments'
    and work items' edges, on one thread (the serial compilation) and on two."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format("mxfp4")
    seg, per = block_core.ROW_SEGMENT_BLOCKS, block_core.SEGMENTS_PER_RUN
    x2 = hard_data(shape, seed=21, element_max=b.element.max)
    flat = x2.reshape(-1)
    overflowing = np.linspace(-3e38, 3e38, 32, dtype=np.float32)
    for t, v in ((seg - 1, np.nan), (seg, -np.inf), (seg * per - 1, 0.0),
                 (seg * per, 1e-41), (seg * per + 1, overflowing)):
        if shape[1] % 32 == 0:                        # block t of the long row
            flat[t * 32:(t + 1) * 32] = v
        else:                                         # the first block of row t
            x2[t % shape[0], :32] = v
    saved = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _, scales, out = block_core.run_ocp_f32(b, x2, 32, mode, True, 13, None, False, True)
    finally:
        numba.set_num_threads(saved)
    _, general_scales, general_out = _general(b, x2, 32, mode, True, 13, True)
    assert np.array_equal(scales, general_scales)
    assert np.array_equal(out.view(np.uint32), general_out.view(np.uint32))


@settings(max_examples=60, deadline=None)
@given(element=st.sampled_from(["e2m1", "e3m2", "e2m3", "e4m3", "e5m2", "e1m2", "e3m3", "e4m0"]),
       k=st.sampled_from([8, 16, 32]), rows=st.integers(1, 3), blocks=st.integers(1, 5),
       top=st.integers(-150, 126), seed=st.integers(0, 2 ** 31), mode=st.sampled_from(MODES),
       sat=st.booleans(), scale=st.sampled_from(["e8m0", "ue8m0/amax"]))
def test_fast_kernel_any_element_any_scale(element, k, rows, blocks, top, seed, mode, sat, scale):
    """The scale folded into the core's source layout, for element formats other than the
    presets and block maxima from float32's subnormals to its largest binade: around
    ``2**-120`` blocks switch between the layout path and the multiplying path.  Scales by
    the OCP rule and by the amax rule rounded up into E8M0 (Transformer Engine's MXFP8)."""
    b = get_format(f"{element}/{k}/{scale}")
    rng = np.random.default_rng(seed)
    block_exp = top - rng.integers(0, 40, (rows, blocks, 1))
    spread = rng.integers(-30, 1, (rows, blocks, k))
    x = rng.standard_normal((rows, blocks, k)) * np.exp2(block_exp + spread)
    x = np.clip(x, -3e38, 3e38).astype(np.float32).reshape(rows, blocks * k)
    assert block_core.ocp_f32_applies(b, x.dtype)
    _assert_fast_equals_general(b, x, k, mode, sat, seed)


@pytest.mark.parametrize("element", ["e2m1", "e2m3", "e3m2", "float8_e4m3fn", "e5m2"])
@pytest.mark.parametrize("scale", ["e8m0", "ue8m0/amax"])
@pytest.mark.parametrize("sat", [True, False])
@pytest.mark.parametrize("down_columns", [False, True])
def test_fast_kernel_additions_ties_and_overflow(element, scale, sat, down_columns):
    """Values rounded to nearest even by float32 additions: every element value, every midpoint
    between neighbours (the ties), a float32 step either side of each, and values past the
    largest (overflow), both signs, in blocks scaled by 2**-120 to 2**100, along rows and down
    columns, equal the general kernel's bit for bit."""
    b = get_format(f"{element}/32/{scale}")
    F, C, _, _ = block_core.kernel_tuples(b, "rne", sat, None)
    assert block_core._by_arithmetic(F, C, False, False)          # the path under test runs
    pos = b.element.values()
    pos = pos[pos >= 0]
    mids = (pos[:-1] + pos[1:]) / 2
    top = pos[-1] + (pos[-1] - pos[-2]) * np.array([0.5, 1.0, 1.5])
    top = top[top < 2.0 ** (np.floor(np.log2(pos[-1])) + 1)]      # the OCP scale stays put
    base = np.concatenate([pos, mids, top]).astype(np.float32)
    base = np.concatenate([base, np.nextafter(base, np.float32(0)),
                           np.nextafter(base, np.float32(np.inf))])
    base = np.concatenate([base, -base])
    n = -(-base.size // 62) * 62                                  # an even count of blocks
    cells = np.resize(base, n).reshape(-1, 31)
    # column 0 holds the block's largest magnitude: the element max, so the scale is 2**e
    blocks = np.concatenate([np.full((cells.shape[0], 1), pos[-1], np.float32), cells], axis=1)
    for e in (-120, -40, 0, 17, 100):
        x = np.ascontiguousarray(blocks * np.float32(2.0 ** e)).reshape(-1, 64)
        x = np.ascontiguousarray(x.T) if down_columns else x
        assert block_core.ocp_f32_applies(b, x.dtype)
        _assert_fast_equals_general(b, x, 32, "rne", sat, 0, down_columns=down_columns)


@pytest.mark.parametrize("element", ["e2m1", "e3m2", "float8_e4m3fn", "e5m2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sat", [True, False])
@pytest.mark.parametrize("tile_rows", [1, 4])
def test_general_kernel_additions_ties_and_overflow(element, dtype, sat, tile_rows, monkeypatch):
    """The general kernel's nearest-even values by float64 additions (amax scales, not powers of
    two in general): blocks scaled so that ``x / s`` is every element value, midpoint (tie),
    a float64 step either side and values past the max, both signs, equal the element format's
    own rounding of ``x / s`` times ``s`` bit for bit, along rows and in 4-row tiles."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format(f"{element}/32")
    el = b.element
    plan = block_kernels.kernel_plan(b, "rne", sat, None)
    assert block_kernels.rounds_by_addition(el.params, plan.CE)   # the path under test runs
    pos = el.values()
    pos = pos[pos >= 0]
    mids = (pos[:-1] + pos[1:]) / 2
    past = pos[-1] + (pos[-1] - pos[-2]) * np.array([0.5, 1.0])    # amax: the scale moves
    y = np.concatenate([pos, mids])
    y = np.concatenate([y, np.nextafter(y, 0), np.nextafter(y, np.inf)])
    y = np.concatenate([y, -y])
    cells = np.resize(y, -(-y.size // 31) * 31).reshape(-1, 31)
    blocks = np.concatenate([np.full((cells.shape[0], 1), pos[-1]), cells], axis=1)
    blocks[-1, -2:] = past                           # blocks whose amax passes the max
    blocks = np.resize(blocks, (-(-blocks.shape[0] // tile_rows) * tile_rows, 32))
    for e in (-30, 0, 11):
        x = (blocks * 2.0 ** e).astype(dtype)
        _, scales, out = run_blocks(b, x.reshape(-1, 32), 32, None, "rne", sat, 0, None, True,
                                    tile_rows)
        s = np.repeat(np.repeat(scales.astype(np.float64).reshape(-1, 1), tile_rows, axis=0),
                      32, axis=1)
        y_exact = x.astype(np.float64) / s
        want = (el.quantize(y_exact, saturate=sat) * s).astype(dtype)
        assert np.array_equal(out.reshape(x.shape).view(f"u{x.itemsize}"),
                              want.view(f"u{x.itemsize}")), (element, e)


def _grid_points(el, past_max=(0.5, 1.0, 1.5), dtype=np.float64) -> np.ndarray:
    """Magnitudes around ``el``'s grid as ``dtype``: every value, the points a quarter, a half
    and three quarters of the way to the next, values past the largest, a ``dtype`` step either
    side of each, and both signs."""
    pos = el.values()
    pos = pos[pos >= 0]
    gaps = np.diff(pos)
    inner = np.concatenate([pos[:-1] + f * gaps for f in (0.25, 0.5, 0.75)])
    y = np.concatenate([pos, inner, pos[-1] + (pos[-1] - pos[-2]) * np.array(past_max)])
    y = y.astype(dtype)
    y = np.concatenate([y, np.nextafter(y, dtype(0)), np.nextafter(y, dtype(np.inf))])
    return np.concatenate([y, -y])


SR_BITS = [None, 1, 3, 23, 24, 53, 63]


@pytest.mark.parametrize("element", ["e2m1", "e2m3", "e3m2", "float8_e4m3fn", "e5m2", "e4m0"])
@pytest.mark.parametrize("sr_bits", SR_BITS)
@pytest.mark.parametrize("down_columns", [False, True])
def test_fast_kernel_stochastic_by_scaling_equals_the_core(element, sr_bits, down_columns):
    """Values rounded stochastically by float32 scaling to the quantum (the fast kernel's
    quantize) equal the core's (its encode, decoded), bit for bit, for every random-bit
    resolution: elements at, between (a quarter, half and three quarters of the way) and a
    float32 step around every element value, past the largest and among the tiny, in blocks
    scaled by 2**-120 to 2**100, along rows and down columns, with three seeds."""
    b = get_format(f"{element}/32/e8m0")
    F, C, _, _ = block_core.kernel_tuples(b, "sr", True, sr_bits)
    assert block_core._by_arithmetic(F, C, False, False)          # the path under test runs
    el = b.element
    tiny = np.array([2.0 ** -30, -2.0 ** -60, 0.0, -0.0], np.float32)
    base = np.concatenate([_grid_points(el, dtype=np.float32), tiny])
    base = base[np.abs(base) < 2.0 ** (np.floor(np.log2(el.max)) + 1)]  # the scale stays put
    cells = np.resize(base, -(-base.size // 62) * 62).reshape(-1, 31)
    blocks = np.concatenate([np.full((cells.shape[0], 1), el.max, np.float32), cells], axis=1)
    for e in (-120, -40, 0, 17, 100):
        x = np.ascontiguousarray(blocks * np.float32(2.0 ** e)).reshape(-1, 64)
        x = np.ascontiguousarray(x.T) if down_columns else x
        for seed in (0, 1, 2 ** 40 + 3):
            _, _, got = block_core.run_ocp_f32(b, x, 32, "sr", True, seed, sr_bits, False, True,
                                               down_columns=down_columns)
            codes, scales, _ = block_core.run_ocp_f32(b, x, 32, "sr", True, seed, sr_bits, True,
                                                      False, down_columns=down_columns)
            X = np.exp2(scales.astype(np.float64) - 127)
            X = np.repeat(X, 32, axis=0)[:x.shape[0]] if down_columns else \
                np.repeat(X, 32, axis=1)[:, :x.shape[1]]
            want = (el.decode(codes) * X).astype(np.float32)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (e, seed)


@pytest.mark.parametrize("element", ["e2m1", "e3m2", "float8_e4m3fn", "e5m2", "e4m0"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sr_bits", SR_BITS)
@pytest.mark.parametrize("tile_rows", [1, 4])
def test_general_kernel_stochastic_by_scaling_equals_the_core(element, dtype, sr_bits, tile_rows,
                                                              monkeypatch):
    """The general kernel's stochastically rounded values by float64 scaling to the quantum
    (amax scales, not powers of two): blocks scaled so that ``x / s`` lies at, between and a
    float64 step around every element value and past the largest equal the element format's
    own stochastic rounding of ``x / s`` (the core, the same random bits: the flat index) times
    ``s``, bit for bit, along rows and in 4-row tiles."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format(f"{element}/32")
    el = b.element
    plan = block_kernels.kernel_plan(b, "sr", True, sr_bits)
    assert block_kernels.rounds_stochastically(el.params, plan.CE)  # the path under test runs
    y = _grid_points(el, past_max=(0.5, 1.0))
    cells = np.resize(y, -(-y.size // 31) * 31).reshape(-1, 31)
    blocks = np.concatenate([np.full((cells.shape[0], 1), el.max), cells], axis=1)
    blocks = np.resize(blocks, (-(-blocks.shape[0] // tile_rows) * tile_rows, 32))
    for e in (-30, 0, 11):
        x = (blocks * 2.0 ** e).astype(dtype)
        for seed in (5, 2 ** 63 + 1):
            _, scales, out = run_blocks(b, x, 32, None, "sr", True, seed, sr_bits, True,
                                        tile_rows)
            s = np.repeat(np.repeat(scales.astype(np.float64).reshape(-1, 1), tile_rows,
                                    axis=0), 32, axis=1)
            y_exact = x.astype(np.float64) / s
            want = (el.quantize(y_exact, rounding="sr", seed=seed, sr_bits=sr_bits) * s
                    ).astype(dtype)
            ub = f"u{x.itemsize}"
            assert np.array_equal(out.view(ub), want.view(ub)), (element, e, seed)


@pytest.mark.parametrize("name", ["mxfp4", "mxfp6_e3m2", "mxfp8_e4m3", "nvfp4",
                                  "float4_e2m1fn/16x16/ue4m3fn/nvfp4", "e4m3/1x128", "e4m0/32",
                                  "e5m2/channel"])
@pytest.mark.parametrize("sr_bits", [None, 8])
@pytest.mark.parametrize("axis", [-1, 0])
def test_stochastic_quantize_is_decode_encode(name, sr_bits, axis):
    """quantize with stochastic rounding (arithmetic on the values where the kernels can) equals
    decode(encode) (the core's codes) bit for bit on hard data: wide ranges, subnormals, zero,
    NaN and infinite blocks, blocks that saturate; blocks along rows and down columns."""
    b = get_format(name)
    if axis == 0 and b.tile is None:
        b = dataclasses.replace(b, axis=0)
    x = hard_data((48, 80), seed=len(name), k=16)
    if b.scale_rule == "nvfp4":                   # a NaN anywhere poisons NVFP4's tensor scale
        x = np.where(np.isfinite(x), x, 1.5).astype(np.float32)
    for seed in (3, 4):
        got = b.quantize(x, rounding="sr", seed=seed, sr_bits=sr_bits)
        want = b.decode(b.encode(x, rounding="sr", seed=seed, sr_bits=sr_bits)).astype(np.float32)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(got)
        assert np.array_equal(got.view(np.uint32)[ok], want.view(np.uint32)[ok]), seed


def test_fast_kernel_tiny_quotients():
    """Float32 subnormals in blocks with a large amax: x / X underflows float32, yet directed
    rounding and stochastic rounding see the exact quotient's class (the general kernel divides
    in float64)."""
    b = get_format("mxfp4")
    x = np.zeros((4, 32), dtype=np.float32)
    x[:, 0] = [1e30, 3.0, 1e-30, 2.0 ** -100]
    x[:, 1:] = np.resize(np.array([1e-45, -1e-45, 1e-40, -3e-39], np.float32), (4, 31))
    for mode in MODES:
        c, s, _ = block_core.run_ocp_f32(b, x, 32, mode, True, 5, None, True, False)
        gc, gs, _ = _general(b, x, 32, mode, True, 5, False)
        assert np.array_equal(c, gc) and np.array_equal(s, gs), mode
    up = b.encode(x, "rtp").codes
    assert up[0, 1] == 1 and up[0, 2] == 8                  # +tiny -> min subnormal; -tiny -> -0


# ------------------------------------------------------------------ the fast kernel down columns
@pytest.mark.parametrize("preset", sorted(ref.PRESET_ELEMENT))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sat", [True, False])
def test_fast_column_kernel_equals_general_kernel(preset, mode, sat, monkeypatch):
    """Blocks of ``k`` rows down each column (the transposed operands of a backward GEMM):
    hard_data's rows become columns (zero, NaN, inf, saturating, subnormal blocks), with ragged
    last blocks and a row count below ``k``."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = get_format(preset)
    for shape, k in (((6, 96), 32), ((5, 77), 32), ((4, 32), 32), ((3, 40), 40),
                     ((9, 20), 32)):
        x2 = np.ascontiguousarray(hard_data(shape, seed=7, element_max=b.element.max).T)
        assert block_core.ocp_f32_applies(b, x2.dtype)
        _assert_fast_equals_general(b, x2, k, mode, sat, 11, down_columns=True)


@settings(max_examples=60, deadline=None)
@given(element=st.sampled_from(["e2m1", "e3m2", "e2m3", "e4m3", "e5m2", "e1m2", "e3m3", "e4m0"]),
       k=st.sampled_from([8, 16, 32]), cols=st.integers(1, 40), blocks=st.integers(1, 4),
       ragged=st.integers(0, 7), top=st.integers(-150, 126), seed=st.integers(0, 2 ** 31),
       mode=st.sampled_from(MODES), sat=st.booleans(),
       scale=st.sampled_from(["e8m0", "ue8m0/amax"]))
def test_fast_column_kernel_any_element_any_scale(element, k, cols, blocks, ragged, top, seed,
                                                  mode, sat, scale):
    """Down the columns every element takes the multiplying path (a scale per lane): column
    maxima from float32's subnormals to its largest binade, elements spread 30 binades below
    them (quotients that underflow float32), both E8M0 rules."""
    b = get_format(f"{element}/{k}/{scale}")
    rng = np.random.default_rng(seed)
    rows = blocks * k + ragged
    column_exp = top - rng.integers(0, 40, (1, cols))
    x = rng.standard_normal((rows, cols)) * np.exp2(column_exp + rng.integers(-30, 1, (rows, cols)))
    x = np.clip(x, -3e38, 3e38).astype(np.float32)
    assert block_core.ocp_f32_applies(b, x.dtype)
    _assert_fast_equals_general(b, x, k, mode, sat, seed, down_columns=True)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "e4m3/32/ue8m0/amax", "mxfp4"])
def test_blocks_along_axis0_run_the_column_kernel(name, monkeypatch):
    """A BlockFormat with ``axis=0`` on float32 2-D data takes the fast column kernel and gives
    what the plain numpy path computes."""
    monkeypatch.setenv("FPFORMAT_SPECIALIZE", "never")
    b = dataclasses.replace(get_format(name), axis=0)
    x = np.ascontiguousarray(hard_data((7, 70), seed=3, element_max=b.element.max).T)
    down_columns = []
    run = block_core.run_ocp_f32

    def spy(*args):
        down_columns.append(args[10])
        return run(*args)
    monkeypatch.setattr(block_core, "run_ocp_f32", spy)
    for mode in ("rne", "sr"):
        enc = b.encode(x, mode, seed=2)
        plain = b._encode_numpy(x, "float32", mode, True, 2, None)
        assert np.array_equal(enc.codes, plain.codes) and np.array_equal(enc.scales, plain.scales)
        q, want = b.quantize(x, mode, seed=2), b.decode(plain, np.float32)
        assert np.array_equal(np.isnan(q), np.isnan(want))
        assert np.array_equal(q[~np.isnan(q)].view(np.uint32), want[~np.isnan(q)].view(np.uint32))
    assert down_columns == [True] * 4


def test_column_kernel_specialised_equals_generic(monkeypatch):
    """The specialised column kernel equals the generic one, for the combination Transformer
    Engine's MXFP8 recipe trains with (E4M3, amax rule rounded up into E8M0, round to nearest,
    quantize: compiled for the training tests too, so numba's cache serves both)."""
    b = dataclasses.replace(get_format("e4m3/32/ue8m0/amax"), axis=0)
    x = np.ascontiguousarray(hard_data((7, 70), seed=4, element_max=b.element.max).T)
    res = {}
    for policy in ("never", "always"):
        monkeypatch.setenv("FPFORMAT_SPECIALIZE", policy)
        res[policy] = b.quantize(x, "rne")
    assert np.array_equal(res["never"].view(np.uint32), res["always"].view(np.uint32))


# ------------------------------------------------------------------ properties
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 70), seed=st.integers(0, 2 ** 31),
       name=st.sampled_from(["mxfp4", "mxfp8_e4m3", "mxfp6_e2m3", "mxint8", "nvfp4",
                             "e2m1/16/ue4m3fn", "e4m3/channel", "e3m2/8"]),
       dtype=st.sampled_from(["float32", "float64", "bfloat16", "float16"]),
       mode=st.sampled_from(["rne", "sr", "rtz"]))
def test_elements_on_grid_times_scale_and_quantize_is_decode_encode(rows, cols, seed, name, dtype,
                                                                     mode):
    b = get_format(name)
    rng = np.random.default_rng(seed)
    # float64 data within float32's range: float32 scales (e4m3/channel) overflow beyond it
    lo, hi = EXP_RANGE[dtype] if dtype != "float64" else (-200, 110)
    row_exp = rng.integers(lo + min(30, (hi - lo) // 3), hi - min(10, (hi - lo) // 8), (rows, 1))
    x = _cast(rng.standard_normal((rows, cols))
              * np.exp2(row_exp + rng.integers(-10, 4, (rows, cols))),
              dtype)
    enc = b.encode(x, mode, seed=seed)
    q = b.decode(enc)
    s = b._broadcast(b._scale_values(enc.scales, enc.tensor_scale), x.shape)
    grid = set(b.element.values().tolist())
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(s > 0, q / s, 0.0)
    assert all(float(v) in grid for v in ratio.ravel())
    got = np.asarray(b.quantize(x, mode, seed=seed))
    want = _cast(q, dtype)
    ub = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    assert np.array_equal(got.view(ub), want.view(ub))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_quantize_out(dtype, name):
    b = get_format(name)
    x = hard_data((4, 64), dtype, seed=9)
    out = np.empty_like(x)
    res = b.quantize(x, out=out)
    assert res is out
    want = b.quantize(x)
    assert np.array_equal(out.view(np.uint8), want.view(np.uint8))
    with pytest.raises(ValueError, match="out"):
        b.quantize(x, out=np.empty((4, 63), dtype=dtype))


@pytest.mark.parametrize("preset", sorted(ref.PRESET_ELEMENT))
def test_fast_kernel_scale_clamps_at_both_ends(preset):
    """Blocks whose E8M0 exponent reaches or passes the clamps [-127, 127]: maxima at the top of
    float32 (2**127 and above: MXINT8's emax_elem 0 puts X at 2**127) and at its bottom (the
    subnormals, where floor(log2 amax) - emax_elem falls below -127)."""
    b = get_format(preset)
    f32 = np.finfo(np.float32)
    tops = [2.0 ** 127, 1.5 * 2.0 ** 127, float(f32.max), 2.0 ** 126]
    bottoms = [2.0 ** -149, 2.0 ** -140, 2.0 ** -127, 2.0 ** -126, 2.0 ** -120]
    rng = np.random.default_rng(11)
    rows = []
    for amax in tops + bottoms:
        row = rng.uniform(-1, 1, 32) * amax
        row[rng.integers(32)] = -amax if rng.integers(2) else amax
        rows.append(row)
    x = np.array(rows).astype(np.float32)
    assert block_core.ocp_f32_applies(b, x.dtype)                   # the fast path is what runs
    _check(b.encode(x), ref.ref_mx(x, ref.PRESET_ELEMENT[preset]), b, x)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40_000), seed=st.integers(0, 2 ** 31), dtype=st.sampled_from(
    ["float32", "float64"]), special=st.sampled_from([None, 0.0, np.nan, np.inf, -np.inf,
                                                     "subnormal", "zeros"]))
def test_tensor_scale_kernel_equals_reference(n, seed, dtype, special):
    """NVFP4's per-tensor scale from the chunked integer amax kernel equals the plain numpy
    rule (fpformat.scales.tensor_scale) bit for bit: NaN for NaN/inf anywhere (here in any
    chunk), 1 for all zeros, subnormal magnitudes."""
    from fpformat.block_kernels import tensor_scale as kernel_scale
    from fpformat.scales import tensor_scale as reference_scale
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20)).astype(dtype)
    if special == "zeros":
        x[:] = 0
    elif special == "subnormal":
        x = (x * np.finfo(dtype).smallest_subnormal * 3).astype(dtype)
    elif special is not None:
        x[rng.integers(0, n)] = special
    got, want = kernel_scale(x), reference_scale(x)
    assert np.float64(got).tobytes() == np.float64(want).tobytes() or (got != got and want != want)


# ------------------------------------------------- NVFP4 round-to-nearest by comparison
NVFP4_LAYOUTS = {"rows": ("nvfp4", 16, 1), "columns": ("nvfp4", 1, 16),
                 "tiles": ("float4_e2m1fn/16x16/ue4m3fn/nvfp4", 16, 16)}
E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _nvfp4_ties(shape, seed, tensor_amax=2688.0) -> np.ndarray:
    """Float32 data whose blocks hold ties ``m * s`` (every E2M1 midpoint ``m``, both signs),
    their float32 neighbours, zeros of both signs, subnormals and a block max in each 16
    consecutive elements.  One element is ``tensor_amax`` (above every block max, at most
    800): the tensor scale ``ts = float32(tensor_amax / 2688)``.  For ``2688 * 2**j`` that is
    ``2**j``, so ``s`` is an E4M3 value times ``2**j`` and every ``m * s`` an exact float32
    tie; otherwise ``m * s`` is rounded to float32 and its neighbours lie close on both
    sides."""
    rng = np.random.default_rng(seed)
    ts = float(np.float32(tensor_amax / 2688.0))
    x = np.zeros(shape, dtype=np.float64)
    flat = x.reshape(-1)
    for lo in range(0, flat.size, 16):
        n = min(16, flat.size - lo)
        amax = float(rng.choice([6.0, 5.5, 7.0, 13.0, 0.375, 2.0 ** -6, 100.0])) \
            * 2.0 ** float(rng.integers(-3, 4))
        s = float(ml_dtypes.float8_e4m3fn(amax / (6.0 * ts))) * ts     # the block's scale
        pick = rng.choice(E2M1_MIDPOINTS, n) * s
        pick *= rng.choice([-1.0, 1.0], n)
        nudge = rng.integers(-1, 2, n)                        # the tie or a float32 neighbour
        v = pick.astype(np.float32)
        v = np.where(nudge > 0, np.nextafter(v, np.float32(np.inf)), v)
        v = np.where(nudge < 0, np.nextafter(v, np.float32(-np.inf)), v)
        v[rng.integers(n)] = -amax if rng.integers(2) else amax
        flat[lo:lo + n] = v
    flat[rng.integers(flat.size)] = 0.0
    flat[rng.integers(flat.size)] = -0.0
    flat[rng.integers(flat.size)] = 3 * 2.0 ** -149
    flat[0] = tensor_amax
    return x.astype(np.float32)


def _assert_compare_equals_divide(b, x2, k, rows, policy, sat=True):
    """The compare path's values and codes equal the dividing path's, bit for bit (the
    dividing path always generic, its reference)."""
    with mock.patch.dict(os.environ, {"FPFORMAT_SPECIALIZE": policy}):
        ts = block_kernels.tensor_scale(x2)
        got = [run_blocks(b, x2, k, ts, "rne", sat, 0, None, w, rows) for w in (False, True)]
    with mock.patch.dict(os.environ, {"FPFORMAT_SPECIALIZE": "never"}):
        want = [run_blocks(b, x2, k, ts, "rne", sat, 0, None, w, rows, compare=False)
                for w in (False, True)]
    assert np.array_equal(got[0][0], want[0][0]), "codes"
    assert np.array_equal(got[0][1], want[0][1]), "scales"
    assert np.array_equal(got[1][2].view(np.uint32), want[1][2].view(np.uint32)), "values"


@pytest.mark.parametrize("layout", sorted(NVFP4_LAYOUTS))
@pytest.mark.parametrize("policy", ["never", "always"])
@pytest.mark.parametrize("shape", [(32, 64), (35, 50), (16, 16), (1, 7)])
def test_nvfp4_compare_path_equals_dividing_path(layout, policy, shape):
    name, k, rows = NVFP4_LAYOUTS[layout]
    b = get_format(name)
    assert block_kernels.nearest_table(b, np.float32, "rne")[0] == 1.0
    for seed in range(3):
        _assert_compare_equals_divide(b, _nvfp4_ties(shape, seed), k, rows, policy)
    x2 = hard_data(shape, seed=3, element_max=6.0, k=16)     # NaN/inf: the tensor is NaN
    _assert_compare_equals_divide(b, x2, k, rows, policy)
    # Without saturation on the generic compilation only: the table is the same either way,
    # and the specialised kernels of a non-saturating call (which training never makes) cost
    # the default suite about a minute of compilation.
    _assert_compare_equals_divide(b, _nvfp4_ties(shape, 5), k, rows, "never", sat=False)
    x2 = _nvfp4_ties(shape, 4)
    x2[:, : min(16, shape[1])] *= np.float32(2.0 ** -30)     # block scales round to 0
    _assert_compare_equals_divide(b, x2, k, rows, policy)


def test_nvfp4_ties_round_to_even():
    """Exact ties land on the even neighbour (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 ->
    2, 3.5 -> 4, 5 -> 4), signs kept; the tie data really holds them."""
    b = get_format("nvfp4")
    x = np.zeros((1, 16), dtype=np.float32)
    x[0, 0] = 6.0 * 448                                      # tensor scale 1, block scale 448
    x[0, 1:8] = np.array(E2M1_MIDPOINTS) * 448
    x[0, 8:15] = -np.array(E2M1_MIDPOINTS) * 448
    q = b.quantize(x)[0] / np.float32(448)
    want = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0])
    assert b.encode(x).tensor_scale == 1.0
    assert np.array_equal(q[1:8], want) and np.array_equal(q[8:15], -want)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), seed=st.integers(0, 2 ** 31),
       layout=st.sampled_from(sorted(NVFP4_LAYOUTS)),
       tensor_amax=st.sampled_from([2688.0, 2688.0 * 2, 2688.0 * 4, 3000.0, 1.0e4]),
       power=st.sampled_from([0, 0, -118, -135, 112]))
def test_nvfp4_compare_path_any_data(rows, cols, seed, layout, tensor_amax, power):
    """Ties and their neighbours under tensor scales that make ``m * s`` a float32 (2688 *
    2**j) and ones that do not (then ``m * s`` rounded to float32 and its neighbours sit at
    distances from the midpoint that the guard must not blur); the data scaled by
    ``2**power`` moves the scales and ties down among float32's subnormals (some elements
    become subnormal or 0 themselves) and up to its top binades."""
    name, k, tile_rows = NVFP4_LAYOUTS[layout]
    x2 = _nvfp4_ties((rows, cols), seed, tensor_amax) * np.float32(2.0 ** power)
    _assert_compare_equals_divide(get_format(name), x2, k, tile_rows, "never")


@pytest.mark.parametrize("name, dtype, rounding, applies", [
    ("nvfp4", np.float32, "rne", True),
    ("float4_e2m1fn/16x16/ue4m3fn/nvfp4", np.float32, "rne", True),
    ("nvfp4", np.float64, "rne", False),                     # 53-bit data: ties too close
    ("nvfp4", np.float32, "sr", False),
    ("nvfp4", np.float32, "rna", False),
    ("mxfp4", np.float32, "rne", False),                     # E8M0 scales: block_core's job
    ("e3m2/16/ue4m3fn/nvfp4", np.float32, "rne", False),     # more than 8 magnitudes
    ("e2m1/16/float8_e5m2/nvfp4", np.float32, "rne", True),  # a 2-bit scale mantissa: fewer
])
def test_nearest_table_applies(name, dtype, rounding, applies):
    table = block_kernels.nearest_table(get_format(name), dtype, rounding)
    assert (table[0] == 1.0) == applies
    assert len(table) == len(block_kernels.NO_TABLE)


@numba.njit
def _scales_both_ways(s, FS, CS, sub_unit):
    """(code, value bits) of each ``s`` by :func:`block_kernels.nearest_scale` and by the core's
    general path, side by side."""
    out = np.empty((s.size, 4), dtype=np.int64)
    for i in range(s.size):
        code, value = block_kernels.nearest_scale(s[i], FS, sub_unit)
        want = core.encode_bits(np.float64(s[i]).view(np.int64), core.SRC_FLOAT64, FS, CS,
                                np.uint64(0))
        out[i, 0], out[i, 1] = code, np.float64(value).view(np.int64)
        out[i, 2] = want
        out[i, 3] = np.float64(core.decode_code(want, FS, sub_unit)).view(np.int64)
    return out


@pytest.mark.parametrize("name", ["ue4m3fn", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                                  "e4m3", "e2m3", "float6_e3m2fn", "e3m4", "float16",
                                  "bfloat16"])
def test_nearest_scale_equals_core(name):
    """The block scales' shortcut (nearest even by a float64 addition, the code read off the
    value's bits, saturating) gives the core's code and value for every scale value, midpoint,
    their float64 neighbours, values past the largest, and random magnitudes across float64's
    range."""
    sf = get_format(name)
    FS, CS = sf.params, call_tuple(sf, "rne", True, None)
    assert block_kernels.scales_by_addition(FS, CS)
    v = sf.values()
    v = v[v >= 0]
    mids = (v[1:] + v[:-1]) / 2
    rng = np.random.default_rng(0)
    s = np.concatenate([v, mids, v[-1] * np.array([1.0625, 1.5, 2.0, 1e30])])
    s = np.concatenate([s, np.nextafter(s, 0), np.nextafter(s, np.inf),
                        rng.uniform(0, v[-1] * 1.5, 20000),
                        np.exp(rng.uniform(-700, 700, 20000)), [0.0, 5e-324, 1e308]])
    got = _scales_both_ways(np.abs(s), FS, CS, 2.0 ** (sf.emin - sf.man_bits))
    assert np.array_equal(got[:, :2], got[:, 2:])


@pytest.mark.parametrize("name, rounding, saturate, applies", [
    ("ue4m3fn", "rne", True, True),
    ("ue4m3fn", "rtp", True, False),                # amax scales rounded up: the core
    ("float8_e4m3fn", "rne", False, False),         # overflow to NaN, not saturating
    ("float8_e8m0fnu", "rne", True, False),         # no zero, no subnormals
    ("e2m0", "rne", True, False),                   # no mantissa bit: "even" is the code's
    ("p3109_k8p1", "rne", True, False),             # parity of the code, not the quantum's
])
def test_scales_by_addition_applies(name, rounding, saturate, applies):
    sf = get_format(name)
    CS = call_tuple(sf, rounding, saturate, None)
    assert block_kernels.scales_by_addition(sf.params, CS) == applies


@numba.njit
def _absmax_runs(xb, n, out):
    """Every run of ``n`` in ``xb`` through :func:`block_kernels.absmax_16` / ``absmax_32``
    (runs from every offset, so unaligned loads are covered too)."""
    for i in range(out.size):
        if n == 16:
            out[i] = np.uint64(block_kernels.absmax_16(xb, np.uint64(i)))
        else:
            out[i] = np.uint64(block_kernels.absmax_32(xb, np.uint64(i)))


@pytest.mark.parametrize("dtype, bits", [(np.float32, np.uint32), (np.float64, np.uint64)])
@pytest.mark.parametrize("n", [16, 32])
def test_absmax_runs_equal_loop(dtype, bits, n):
    """The block maxima taken as one vector reduction equal the largest ``bits & ~sign`` of the
    run, read off the bits in numpy: NaNs (either sign, any payload), infinities, -0,
    subnormals and the largest finite values among random magnitudes."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(4000) * np.exp2(rng.uniform(-30, 30, 4000))).astype(dtype)
    info = np.finfo(dtype)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, info.max, -info.max,
                         info.smallest_subnormal, -info.smallest_subnormal], dtype=dtype)
    x[rng.choice(x.size, 60, replace=False)] = np.resize(specials, 60)
    xb = x.view(bits).copy()
    xb[::97] |= bits(1) << bits(np.iinfo(bits).bits - 1)         # sign bits set
    xb[5] = np.array(0x7FC01234, np.uint32).astype(bits) if bits is np.uint32 else \
        np.uint64(0xFFF0000000000001)                            # NaNs with payloads
    got = np.empty(xb.size - n + 1, dtype=np.uint64)
    _absmax_runs(xb, n, got)
    mags = xb & bits(np.iinfo(bits).max >> 1)
    want = np.lib.stride_tricks.sliding_window_view(mags, n).max(axis=1).astype(np.uint64)
    assert np.array_equal(got, want)
