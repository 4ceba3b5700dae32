"""CPU torch tensors and numpy arrays with the same bits give the same bits back.

Every element and block preset (and the block layouts beyond the presets) through
``FloatFormat``/``BlockFormat`` ``encode`` and ``quantize`` and ``fpformat.torch.quantize``, on
float16, bfloat16, float32 and float64 data, raw bits compared (NaN signs and payloads
included).  The numpy path is the reference: its results are rounded once from the exact value
(``tests/test_block_reference.py`` and friends hold it to exact rationals), and here a tensor
must reproduce it -- torch's own conversions would round float64 to float16 twice and give
bfloat16 NaNs a fixed sign.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpformat import get_format
from fpformat.presets import BLOCK_PRESETS, ELEMENT_PRESETS
from fpformat.torch import quantize as torch_quantize

# the data holds signalling NaNs and out-of-range values on purpose: numpy's casts warn
pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|overflow) encountered:RuntimeWarning")

KINDS = ("float16", "bfloat16", "float32", "float64")
NP_DTYPE = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
            "float64": np.float64}
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
TORCH_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}
#: Block layouts beyond the presets: per-channel float32 scales (Sun et al.), UE4M3 amax scales,
#: a ragged last block, one scale per tensor, 2-D tiles, blocks along the first axis.
BLOCK_SPECS = tuple(BLOCK_PRESETS) + ("e4m3/channel", "e2m1/16/ue4m3fn", "e3m2/24/e8m0",
                                      "e4m3/tensor", "e4m3/4x16", "e4m3/8@axis0")


def _bits(a) -> np.ndarray:
    """Raw bits of a numpy array or CPU tensor as unsigned integers (integers as they are)."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():                    # torch has no unsigned views
            a = a.view(TORCH_INT[a.element_size()])
            return a.numpy().view(UINT[a.element_size()])
        return a.numpy()
    a = np.asarray(a)
    return a if a.dtype.kind in "ui" else a.view(UINT[a.dtype.itemsize])


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A CPU tensor with ``x``'s dtype and bits."""
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.require(x, requirements="C").view(np.int16)).view(
            torch.bfloat16)
    return torch.from_numpy(np.require(x, requirements="C"))


def _same(got, want, what: str) -> None:
    g, w = _bits(got), _bits(want)
    assert g.shape == w.shape, f"{what}: shape {g.shape} vs {w.shape}"
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    assert bad.size == 0, (f"{what}: {bad.size} elements differ, at {bad[:4]}: torch "
                           f"{[hex(int(v)) for v in g.reshape(-1)[bad[:4]]]} vs numpy "
                           f"{[hex(int(v)) for v in w.reshape(-1)[bad[:4]]]}")


def _data(kind: str, rows: int = 8, cols: int = 48, seed: int = 0) -> np.ndarray:
    """``(rows, cols)`` data of ``kind``: a row of random bit patterns (every special: NaNs of
    both signs with payloads, infinities, subnormals, huge and tiny numbers), a zero row, rows
    of normal data at scales from 2**-20 to 2**20 with an outlier, NaNs of both signs in one
    row and an infinity in another."""
    rng = np.random.default_rng(seed)
    size = np.dtype(NP_DTYPE[kind]).itemsize
    raw = rng.integers(0, 1 << (8 * size), cols, dtype=np.uint64, endpoint=False)
    raw = raw.astype(UINT[size]).view(NP_DTYPE[kind])
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-20, 21, (rows, 1)))
    x[2] = 0.0
    x[3, 5] *= 2.0 ** 12
    x[4, :3] = [np.nan, -np.nan, 1.0]
    x[5, 7] = -np.inf
    with np.errstate(over="ignore"):
        out = x.astype(NP_DTYPE[kind])
    out[0] = raw
    return out


def _outcome(call):
    """``call()``'s result, or the type of the ValueError/TypeError it raised."""
    try:
        return call()
    except (ValueError, TypeError) as exc:
        return type(exc)


def _check(call_numpy, call_torch, what: str):
    want, got = _outcome(call_numpy), _outcome(call_torch)
    if isinstance(want, type):
        assert got is want, f"{what}: numpy raised {want.__name__}, torch gave {got!r}"[:300]
        return None
    assert not isinstance(got, type), f"{what}: torch raised {got.__name__}"
    return want, got


@pytest.mark.parametrize("kind", KINDS)
def test_element_presets_give_the_numpy_bits(kind):
    x = _data(kind)
    t = _tensor(x)
    for name in ELEMENT_PRESETS:
        fmt = get_format(name)
        for mode, sat in (("rne", False), ("rne", True), ("sr", True), ("rtz", False)):
            what = f"{name} {kind} {mode} sat={sat}"
            pair = _check(lambda: fmt.encode(x, rounding=mode, saturate=sat, seed=3),
                          lambda: fmt.encode(t, rounding=mode, saturate=sat, seed=3),
                          f"encode {what}")
            if pair:
                _same(pair[1], pair[0], f"encode {what}")
            pair = _check(lambda: fmt.quantize(x, rounding=mode, saturate=sat, seed=3),
                          lambda: fmt.quantize(t, rounding=mode, saturate=sat, seed=3),
                          f"quantize {what}")
            if pair:
                want, got = pair
                assert isinstance(got, torch.Tensor) and got.dtype == t.dtype, what
                _same(got, want, f"quantize {what}")
                _same(torch_quantize(t, fmt, rounding=mode, saturate=sat, seed=3), want,
                      f"fpformat.torch.quantize {what}")


@pytest.mark.parametrize("kind", KINDS)
def test_block_formats_give_the_numpy_bits(kind):
    x = _data(kind, seed=1)
    t = _tensor(x)
    for spec in BLOCK_SPECS:
        fmt = get_format(spec)
        for mode in ("rne", "sr"):
            what = f"{spec} {kind} {mode}"
            pair = _check(lambda: fmt.encode(x, rounding=mode, seed=5),
                          lambda: fmt.encode(t, rounding=mode, seed=5), f"encode {what}")
            if pair:
                want, got = pair
                _same(got.codes, want.codes, f"codes {what}")
                _same(got.scales, want.scales, f"scales {what}")
                assert _bits(np.float64(got.tensor_scale or 0.0)) == \
                    _bits(np.float64(want.tensor_scale or 0.0)), f"tensor scale {what}"
            want = fmt.quantize(x, rounding=mode, seed=5)
            got = fmt.quantize(t, rounding=mode, seed=5)
            assert isinstance(got, torch.Tensor) and got.dtype == t.dtype, what
            _same(got, want, f"quantize {what}")
            _same(torch_quantize(t, fmt, rounding=mode, seed=5), want,
                  f"fpformat.torch.quantize {what}")


def test_float16_block_values_are_rounded_once():
    """The example that torch's float64 -> float16 conversion (via float32) got wrong: the
    element times the float32 channel scale, rounded once to float16."""
    x = np.zeros((1, 32), np.float16)
    x[0, :2] = [1.41e-05, -7.15e-06]
    fmt = get_format("e4m3/channel")
    exact = fmt.decode(fmt.encode(x))[0, 1]             # element x scale, exact in float64
    once = np.float16(exact).view(np.uint16)
    twice = np.float16(np.float32(exact)).view(np.uint16)
    assert once != twice                                  # the case tells the two apart
    got = fmt.quantize(_tensor(x))
    assert int(_bits(got)[0, 1]) == int(once) == int(_bits(fmt.quantize(x))[0, 1])


def test_bfloat16_nan_keeps_its_sign():
    x = np.array([np.nan, -np.nan, 500.0, -500.0], dtype=ml_dtypes.bfloat16)
    got = get_format("float8_e4m3fn").quantize(_tensor(x), saturate=False)
    assert [hex(int(v)) for v in _bits(got)] == ["0x7fc0", "0xffc0", "0x7fc0", "0xffc0"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(("float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float8_e4m3fnuz",
                        "p3109_k8p3", "mxfp8_e4m3", "mxfp4", "nvfp4", "e4m3/channel",
                        "e2m1/16/ue4m3fn")),
       st.sampled_from(("float16", "bfloat16")),
       st.lists(st.integers(0, 0xFFFF), min_size=32, max_size=32),
       st.integers(-24, 24), st.sampled_from(("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr")))
def test_any_16_bit_patterns_give_the_numpy_bits(name, kind, words, shift, mode):
    """Arbitrary float16/bfloat16 bit patterns (one row raw, one row the same patterns with
    their exponents moved, so that blocks hold ordinary numbers too)."""
    raw = np.array(words, dtype=np.uint16).view(NP_DTYPE[kind])
    with np.errstate(over="ignore", invalid="ignore"):
        moved = (raw.astype(np.float64) * 2.0 ** shift).astype(NP_DTYPE[kind])
    x = np.stack([raw, moved])
    fmt = get_format(name)
    pair = _check(lambda: fmt.quantize(x, rounding=mode, saturate=True, seed=7),
                  lambda: fmt.quantize(_tensor(x), rounding=mode, saturate=True, seed=7),
                  f"{name} {kind} {mode}")
    if pair:
        _same(pair[1], pair[0], f"{name} {kind} {mode}")
