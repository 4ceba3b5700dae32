"""Hostile inputs to the library API (fpformat): each case raises one clear error and leaves the
caller's arrays as they were, or gives the documented result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpformat import get_format
from fpformat.torch import quantize, quantize_values

X = np.random.default_rng(0).standard_normal(1 << 12).astype(np.float32)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


# (case, format, x, out, error, message fragment); x and out views of one buffer where marked
def _cases():
    buf = X.copy()
    blk = X.reshape(-1, 32).copy()
    return [
        ("overlap, shifted", "e4m3", buf[:-100], buf[100:], ValueError, "overlaps x"),
        ("overlap, out first", "e4m3", buf[100:], buf[:-100], ValueError, "overlaps x"),
        ("overlap, blocks", "mxfp4", blk[:-1], blk[1:], ValueError, "overlaps x"),
        ("overlap, nvfp4", "nvfp4", blk[:-1], blk[1:], ValueError, "overlaps x"),
        ("read-only out", "e4m3", X, _read_only(np.zeros_like(X)), ValueError, "read-only"),
        ("read-only out, blocks", "mxfp4", X.reshape(-1, 32),
         _read_only(np.zeros((X.size // 32, 32), np.float32)), ValueError, "read-only"),
    ]


@pytest.mark.parametrize("case, name, x, out, error, message", _cases(),
                         ids=[c[0] for c in _cases()])
def test_bad_out_is_refused_and_nothing_is_written(case, name, x, out, error, message):
    before_x, before_out = x.copy(), out.copy()
    with pytest.raises(error, match=message):
        get_format(name).quantize(x, out=out)
    assert np.array_equal(x, before_x) and np.array_equal(out, before_out)


@pytest.mark.parametrize("name", ["e4m3", "mxfp4", "nvfp4", "e4m3/channel"])
def test_out_may_be_the_input_itself_or_a_disjoint_view(name):
    f = get_format(name)
    x = X.reshape(-1, 32).copy()
    want = f.quantize(x)
    inplace = x.copy()
    assert f.quantize(inplace, out=inplace) is inplace
    assert np.array_equal(inplace, want)
    buf = np.zeros((2 * x.shape[0], 32), np.float32)
    buf[: x.shape[0]] = x
    f.quantize(buf[: x.shape[0]], out=buf[x.shape[0]:])        # same buffer, no overlap
    assert np.array_equal(buf[x.shape[0]:], want)


@pytest.mark.parametrize("name", ["e4m3", "float8_e5m2", "mxfp4", "nvfp4", "e4m3/channel",
                                  "mxint8"])
@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_big_endian_inputs_work_as_native_ones(name, dtype):
    f = get_format(name)
    x = X.reshape(-1, 32).astype(dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    got, want = f.quantize(x), f.quantize(native)
    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)
    ge, we = f.encode(x), f.encode(native)
    assert np.array_equal(getattr(ge, "codes", ge), getattr(we, "codes", we))


@pytest.mark.parametrize("fn", [quantize_values, quantize])
def test_zero_dimensional_tensors_keep_their_shape(fn):
    t = torch.tensor(1.3)
    y = fn(t, "e4m3")
    assert y.shape == () and float(y) == 1.25
