"""fpformat.prepared.Quantizer: fmt.quantize with its options fixed, bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpformat import BlockFormat, block_core, block_kernels, core, get_format
from fpformat.dispatch import seed_key
from fpformat.prepared import Quantizer

#: Element formats, block formats through the general kernel (NVFP4, float32 scales by row, by
#: channel, over the tensor, in tiles) and through the float32 MX kernel (MXFP4, MXFP8,
#: MXINT8, E8M0 scales by the amax rule rounded up).
FORMATS = ["e4m3", "float8_e5m2", "float4_e2m1fn", "nvfp4", "e4m3/128", "e4m3/channel",
           "e4m3/tensor", "e4m3/16x16", "float4_e2m1fn/16x16/ue4m3fn/nvfp4", "mxfp4",
           "mxfp8_e4m3", "mxint8", "e2m1/32/ue8m0/amax"]
MODES = ["rne", "sr", "rtz", "rna"]


def _formats(name: str) -> list:
    """The format, and for a block format along the rows its twin down the columns."""
    f = get_format(name)
    if isinstance(f, BlockFormat) and f.tile is None and f.block_size != "tensor":
        return [f, replace(f, axis=0)]
    return [f]


def _data(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Magnitudes over 24 binades, zeros, and both signs."""
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape) * np.exp2(g.integers(-12, 12, shape))
    x[g.random(shape) < 0.1] = 0.0
    return x.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(FORMATS), mode=st.sampled_from(MODES), sat=st.booleans(),
       rows=st.integers(1, 70), cols=st.integers(1, 70), seed=st.integers(0, 2**32),
       columns=st.booleans())
def test_prepared_equals_quantize(name, mode, sat, rows, cols, seed, columns):
    """Every format, mode, saturation and 2-D shape (ragged blocks and tiles, rows shorter
    than a block, blocks down the columns): the quantizer's bits are ``fmt.quantize``'s."""
    fmt = _formats(name)[-1 if columns else 0]
    q = Quantizer(fmt, mode, sat)
    x = _data(seed, (rows, cols))
    want = fmt.quantize(x, mode, sat, seed=seed)
    for _ in range(2):                                  # the prepared shape, then again
        got = q(x, seed=seed)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name", ["nvfp4", "mxfp4", "e4m3"])
def test_prepared_training_shapes_and_specials(name):
    """Shapes of a training step (2048 x 64, 2048 x 176) with NaN and infinities in some
    blocks, both axes, nearest and stochastic rounding: equal to ``fmt.quantize``."""
    for fmt in _formats(name):
        for mode in ("rne", "sr"):
            q = Quantizer(fmt, mode, True)
            for shape in ((2048, 64), (2048, 176)):
                x = _data(shape[1], shape)
                x[5, 3], x[700, 40], x[1999, 17] = np.nan, np.inf, -np.inf
                want = fmt.quantize(x, mode, True, seed=4)
                np.testing.assert_array_equal(q(x, seed=4).view(np.uint32),
                                              want.view(np.uint32))


def test_prepared_passes_other_inputs_to_quantize():
    """Other dtypes, layouts, ranks and types go through ``fmt.quantize`` unchanged: float64
    and float16 arrays, a transposed view, 1-D and 3-D arrays, an empty array, a torch
    tensor."""
    fmt = get_format("nvfp4")
    q = Quantizer(fmt, "rne", True)
    base = _data(1, (32, 48))
    for x in (base.astype(np.float64), base.astype(np.float16), base.T, base.reshape(-1),
              base.reshape(4, 8, 48), np.zeros((0, 16), np.float32), torch.from_numpy(base)):
        got, want = q(x), fmt.quantize(x, "rne", True)
        assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_prepared_integer_formats_and_stream_seeds():
    """An integer format goes through ``fmt.quantize``; a seed None draws a fresh stream (two
    calls differ), a given seed repeats it; a seed that is not an int is a TypeError."""
    x = _data(2, (16, 64))
    np.testing.assert_array_equal(Quantizer("int8", "rne", True)(x),
                                  get_format("int8").quantize(x, "rne", True))
    q = Quantizer("nvfp4", "sr", True)
    assert not np.array_equal(q(x), q(x))
    np.testing.assert_array_equal(q(x, seed=3), q(x, seed=3))
    with pytest.raises(TypeError, match="seed"):
        q(x, seed=1.5)


@pytest.mark.parametrize("kw, match", [(dict(rounding="up"), "rounding"),
                                       (dict(rounding="sr", sr_bits=0), "sr_bits")])
def test_prepared_refuses_bad_options_at_once(kw, match):
    with pytest.raises(ValueError, match=match):
        Quantizer("nvfp4", **kw)


def test_tensor_scale_serial_twin_equals_parallel():
    """The one-thread compilation of the tensor-scale pass gives the threaded one's scale,
    NaN and infinity included."""
    x = _data(3, (300, 257)).reshape(-1)
    for poison in (None, np.nan, np.inf):
        y = x.copy()
        if poison is not None:
            y[40000] = poison
        xb = y.view(np.uint32)
        part = np.zeros(-(-xb.size // block_kernels._AMAX_CHUNK), dtype=np.uint32)
        a = block_kernels._tensor_scale_bits(xb, part.copy(), False)
        b = block_kernels._tensor_scale_bits_serial(xb, part.copy(), False)
        assert np.array_equal(np.float64(a), np.float64(b), equal_nan=True)


@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_mx_kernel_serial_twins_equal_threaded(mode):
    """The one-thread compilations of the float32 MX kernel (along the rows and down the
    columns), which runs on one thread take, give the threaded ones' values and scales, NaN and
    infinities included."""
    fmt = get_format("mxfp4")
    F, C, V, R = block_core.kernel_tuples(fmt, mode, True, None)
    x = _data(7, (2048, 176))
    x[5, 3], x[700, 40], x[1999, 17] = np.nan, np.inf, -np.inf
    x1 = x.reshape(-1)
    key = seed_key(9, C[core.C_MODE])
    codes = np.empty(1, dtype=np.uint8)
    for down_columns, twins in (
            (False, (block_core._ocp_generic, block_core._ocp_generic_serial)),
            (True, (block_core._columns_generic, block_core._columns_generic_serial))):
        rows, cols = block_core.scale_shape(x.shape, 32, down_columns)
        got = []
        for kernel in twins:
            out, scales = np.empty_like(x1), np.empty(rows * cols, dtype=np.uint8)
            kernel(x1, x1.view(np.uint32), 176, 32, F, C, V, R, key, codes, scales, out, False,
                   True, False)
            got.append((out.view(np.uint32), scales))
        np.testing.assert_array_equal(got[0][0], got[1][0])
        np.testing.assert_array_equal(got[0][1], got[1][1])


def test_one_thread_twins_have_their_own_cache_entries():
    """Every one-thread twin of a threaded loop is cached apart from it (numba's on-disk cache
    keys a compilation by the function's name, code and signature, not its options: under one
    name a later process would load whichever twin was saved last for both), and computes
    the same function."""
    from explorer.train import hadamard
    from fpformat.dispatch import SERIAL_JIT, njit_as

    pairs = [(hadamard._fwht_down_columns, hadamard._fwht_down_columns_serial),
             (hadamard._fwht_along_rows, hadamard._fwht_along_rows_serial),
             (block_kernels._tensor_scale_bits, block_kernels._tensor_scale_bits_serial),
             (block_core._ocp_generic, block_core._ocp_generic_serial),
             (block_core._columns_generic, block_core._columns_generic_serial)]
    names = [d._cache._cache_file._index_name for pair in pairs for d in pair]
    assert len(set(names)) == len(names)
    twin = njit_as(block_kernels._absmax_run.py_func, "_probe", SERIAL_JIT)
    assert twin.py_func.__qualname__ == "_absmax_run_probe"
    xb = _data(4, (3, 50)).reshape(-1).view(np.uint32)
    assert twin(xb, np.uint64(0), np.uint64(xb.size), np.uint32(0)) == \
        np.max(xb & np.uint32(0x7FFFFFFF))
