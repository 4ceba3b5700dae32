"""Matrix units on a real CUDA GPU (``pytest -m gpu``): :func:`fpformat.gemm.mma` on torch CUDA
tensors and numba device arrays gives the CPU's bits (NaN signs included), in the input's kind,
on torch's current stream.  Skipped without a GPU; tests/test_cuda_gemm.py runs the same kernels
in the simulator everywhere."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("real-GPU tests do not run in the simulator", allow_module_level=True)
cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)

from fpformat import get_format  # noqa: E402
from fpformat.gemm import mma  # noqa: E402

UNITS = (("h100", "float16", "float32"), ("h100", "float16", "float16"),
         ("h100", "bfloat16", "float32"), ("h100", "float8_e4m3fn", "float32"),
         ("a100", "tf32", "float32"), ("b200", "float8_e5m2", "float32"),
         ("mi300x", "float16", "float32"), ("mi300x", "float8_e4m3fnuz", "float32"),
         ("fma8/x3/rne/sticky", "float16", "float32"), ("fma16/x-4/rtz/c1", "float16", "float32"))


def _operands(fin: str, fout: str, batch=(3,), m=33, k=100, n=17, seed=0):
    fi, fo = get_format(fin), get_format(fout)
    rng = np.random.default_rng(seed)
    a = fi.quantize(rng.standard_normal(batch + (m, k)) * np.exp2(rng.integers(-6, 7, (m, 1))),
                    saturate=True)
    b = fi.quantize(rng.standard_normal(batch + (k, n)), saturate=True)
    c = fo.quantize(rng.standard_normal(batch + (m, n)), saturate=True)
    a.reshape(-1)[5] = np.nan if fi.nan_codes else 0.0
    b.reshape(-1)[7] = np.inf if fi.inf else fi.max
    return a, b, c


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


@pytest.mark.parametrize("unit,fin,fout", UNITS)
def test_numba_device_arrays_match_cpu(unit, fin, fout):
    a, b, c = _operands(fin, fout)
    want = mma(a, b, c, unit, fin, fout)
    got = mma(cuda.to_device(a), cuda.to_device(b.astype(np.float32)), cuda.to_device(c),
              unit, fin, fout).copy_to_host()
    assert got.dtype == want.dtype and np.array_equal(_bits(got), _bits(want))


def test_torch_tensors_in_kind_on_a_side_stream():
    torch = pytest.importorskip("torch")
    a, b, _ = _operands("float16", "float32", batch=(2,))
    want = mma(a, b, 0.0, "h100", quantize_inputs=True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        ta = torch.from_numpy(a).to("cuda", torch.float16)
        tb = torch.from_numpy(b).to("cuda", torch.float16)
        got = mma(ta, tb, 0.0, "h100", quantize_inputs=True)
    stream.synchronize()
    assert isinstance(got, torch.Tensor) and got.is_cuda and got.dtype == torch.float32
    assert np.array_equal(_bits(got.cpu().numpy()), _bits(want))


def test_bad_values_raise_like_the_cpu():
    with pytest.raises(ValueError, match="a holds values"):
        mma(cuda.to_device(np.full((2, 8), 0.3)), cuda.to_device(np.ones((8, 2))), 0.0, "h100",
            "float8_e4m3fn")
