"""The GPU path on a real CUDA GPU (``pytest -m gpu``): results identical to the CPU kernels for
numba device arrays, torch CUDA tensors and CuPy arrays, returned in the input's kind.

Skipped where no GPU is present; the simulator tests (tests/test_cuda.py) run everywhere.
"""

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

MODES = ("rne", "rna", "rtz", "rtp", "rtn", "rto", "sr")
FORMATS = ("float8_e4m3fn", "float8_e5m2", "e2m1", "e3m2", "float8_e8m0fnu", "ue4m3fn",
           "float8_e4m3fnuz")


def _data(n: int = 1 << 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.uniform(-30, 20, n))).astype(np.float32)
    x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38, -3e38]
    return x


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        nan = np.isnan(a) & np.isnan(b)
        w = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        return bool(np.array_equal(np.where(nan, 0, a.view(w)), np.where(nan, 0, b.view(w))))
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("mode", MODES)
def test_numba_device_arrays_match_cpu(name, mode):
    f = get_format(name)
    x = _data().reshape(1024, -1)
    d = cuda.to_device(x)
    for sat in (False, True):
        codes = f.encode(d, rounding=mode, saturate=sat, seed=5)
        assert cuda.is_cuda_array(codes)
        assert _bits_equal(codes.copy_to_host(), f.encode(x, rounding=mode, saturate=sat, seed=5))
        q = f.quantize(d, rounding=mode, saturate=sat, seed=5)
        assert _bits_equal(q.copy_to_host(), f.quantize(x, rounding=mode, saturate=sat, seed=5))
    c = f.encode(x)
    assert _bits_equal(f.decode(cuda.to_device(c)).copy_to_host(), f.decode(c))


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e4m3", "nvfp4", "e4m3/channel"])
@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_block_formats_match_cpu(name, mode):
    from fpformat import cuda as fc
    b = get_format(name)
    x = _data(1 << 16, seed=1).reshape(-1, 64) if name != "nvfp4" else \
        np.random.default_rng(2).standard_normal((512, 64)).astype(np.float32)
    got = fc.encode(b, cuda.to_device(x), mode, True, 3, None)
    want = b.encode(x, rounding=mode, seed=3)
    assert _bits_equal(got.codes.copy_to_host(), want.codes)
    assert _bits_equal(got.scales.copy_to_host(), want.scales)
    q = fc.quantize(b, cuda.to_device(x), mode, True, 3, None)
    assert _bits_equal(q.copy_to_host(), b.quantize(x, rounding=mode, seed=3))


def test_torch_cuda_tensors_round_trip_in_kind():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    from fpformat.torch import quantize
    f = get_format("float8_e4m3fn")
    x = torch.from_numpy(_data(1 << 16)[64:]).cuda()              # finite: 2046 x 32
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xt = x.to(dtype).requires_grad_(True)
        y = quantize(xt, f, rounding="sr", seed=7)
        assert y.dtype == dtype and y.device == xt.device
        want = quantize(xt.detach().cpu(), f, rounding="sr", seed=7)
        assert torch.equal(torch.nan_to_num(y.detach().cpu().float(), nan=7.0),
                           torch.nan_to_num(want.float(), nan=7.0))
        y.sum().backward()
        assert torch.all(xt.grad == 1)
    codes = f.encode(x)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.uint8 and codes.is_cuda
    assert np.array_equal(codes.cpu().numpy(), f.encode(x.cpu().numpy()))
    b = get_format("mxfp4")
    y = quantize(x.reshape(-1, 32), b)
    assert y.is_cuda and torch.equal(y.cpu(), quantize(x.reshape(-1, 32).cpu(), b))


def test_torch_side_stream():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    f = get_format("e3m2")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x = torch.randn(1 << 20, device="cuda") * 3
        y = f.quantize(x)
        z = y * 2                                   # ordered after the kernel on stream s
    s.synchronize()
    assert torch.equal(z.cpu() / 2, torch.from_numpy(f.quantize(x.cpu().numpy())))


def test_cupy_arrays_come_back_as_cupy():
    cupy = pytest.importorskip("cupy")
    f = get_format("float8_e5m2")
    x = _data(1 << 16)
    y = f.quantize(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    assert _bits_equal(cupy.asnumpy(y), f.quantize(x))
