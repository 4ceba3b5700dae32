"""The GPU path on a real CUDA GPU (``pytest -m gpu``): results identical to the CPU kernels, raw
bits and NaN signs included, for numba device arrays, torch CUDA tensors and CuPy arrays, returned
in the input's kind; one compilation per format, mode and dtype; CUDA-graph capture.

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
BLOCKS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4",
          "e4m3/channel", "e4m3/tensor", "e4m3/128x128", "e4m3/32@axis0")


def _data(n: int = 1 << 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.uniform(-30, 20, n))).astype(np.float32)
    x[:9] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38, -3e38]
    return x


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype.kind in "ui" else a.view({2: np.uint16, 4: np.uint32,
                                                   8: np.uint64}[a.dtype.itemsize])


def _bits_equal(a, b) -> bool:
    """Same dtype, shape and raw bits (NaN signs and payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(_bits(a), _bits(b)))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("mode", MODES)
def test_numba_device_arrays_match_cpu(name, mode):
    # every mode on float32 data; saturation and the float16/float64 inputs with rne and sr
    # (each combination compiles its own kernels: about a second each on first use)
    f = get_format(name)
    x = _data().reshape(1024, -1)
    more = mode in ("rne", "sr")
    for xi in (x, x.astype(np.float16), x.astype(np.float64)) if more else (x,):
        d = cuda.to_device(xi)
        for sat in (False, True) if more else (False,):
            codes = f.encode(d, rounding=mode, saturate=sat, seed=5)
            assert cuda.is_cuda_array(codes)
            assert _bits_equal(codes.copy_to_host(),
                               f.encode(xi, rounding=mode, saturate=sat, seed=5))
            if f.fits(xi.dtype):
                q = f.quantize(d, rounding=mode, saturate=sat, seed=5)
                assert _bits_equal(q.copy_to_host(),
                                   f.quantize(xi, rounding=mode, saturate=sat, seed=5))
    c = f.encode(x)
    assert _bits_equal(f.decode(cuda.to_device(c)).copy_to_host(), f.decode(c))


def _block_data(name: str) -> np.ndarray:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((512, 256)) * np.exp2(rng.uniform(-20, 20, (512, 1))))
    x[3] = 0.0
    if name != "nvfp4" and "tensor" not in name:
        x[5, 7], x[6, 100] = np.nan, -np.inf
    return x


@pytest.mark.parametrize("name", BLOCKS)
def test_block_formats_match_cpu_in_every_dtype(name):
    torch = pytest.importorskip("torch")
    b = get_format(name)
    x64 = _block_data(name)
    for dtype, mode in ((torch.float32, "rne"), (torch.float16, "rne"), (torch.bfloat16, "sr"),
                        (torch.float64, "rne")):
        xt = torch.from_numpy(x64).to(dtype)
        xc = xt.cuda()
        got = b.encode(xc, rounding=mode, seed=3)
        want = b.encode(xt, rounding=mode, seed=3)
        assert torch.equal(got.codes.cpu(), torch.from_numpy(np.asarray(want.codes)))
        assert _bits_equal(got.scales.cpu().numpy(), want.scales)
        assert got.tensor_scale == want.tensor_scale or (
            np.isnan(got.tensor_scale) and np.isnan(want.tensor_scale))
        q = b.quantize(xc, rounding=mode, seed=3)
        wq = b.quantize(xt, rounding=mode, seed=3)
        assert q.dtype == dtype and torch.equal(q.cpu().view(_int(torch, dtype)),
                                                wq.view(_int(torch, dtype)))
        assert _bits_equal(b.decode(got).cpu().numpy(), b.decode(want))


def _int(torch, dtype):
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[torch.empty((), dtype=dtype)
                                                            .element_size()]


def test_torch_cuda_tensors_round_trip_in_kind():
    torch = pytest.importorskip("torch")
    from fpformat.torch import quantize
    f = get_format("float8_e4m3fn")
    x = torch.from_numpy(_data(1 << 16)[64:]).cuda()              # finite: 2046 x 32
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xt = x.to(dtype).requires_grad_(True)
        y = quantize(xt, f, rounding="sr", seed=7)
        assert y.dtype == dtype and y.device == xt.device
        want = quantize(xt.detach().cpu(), f, rounding="sr", seed=7)
        assert torch.equal(y.detach().cpu().view(_int(torch, dtype)), want.view(_int(torch, dtype)))
        y.sum().backward()
        assert torch.all(xt.grad == 1)
    codes = f.encode(x)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.uint8 and codes.is_cuda
    assert np.array_equal(codes.cpu().numpy(), f.encode(x.cpu().numpy()))
    b = get_format("mxfp4")
    y = quantize(x.reshape(-1, 32), b)
    assert y.is_cuda and torch.equal(y.cpu(), quantize(x.reshape(-1, 32).cpu(), b))


def test_out_and_in_place_with_torch():
    torch = pytest.importorskip("torch")
    b = get_format("nvfp4")
    x = torch.randn(256, 64, device="cuda", dtype=torch.bfloat16)
    want = b.quantize(x.cpu())
    out = torch.empty_like(x)
    assert b.quantize(x, out=out) is out and torch.equal(out.cpu().view(torch.int16),
                                                         want.view(torch.int16))
    assert b.quantize(x, out=x) is x and torch.equal(x.cpu().view(torch.int16),
                                                     want.view(torch.int16))


def test_one_compilation_per_format_mode_and_dtype():
    torch = pytest.importorskip("torch")
    from fpformat import cuda as fc
    for name in ("nvfp4", "e4m3/channel", "e4m3/tensor", "mxfp4", "float8_e4m3fn"):
        f = get_format(name)
        f.quantize(torch.randn(64, 64, device="cuda"), rounding="sr", seed=0)     # warm-up
        before = fc.compilations()
        for i, shape in enumerate(((128, 64), (3, 96), (1000, 32), (7, 1024))):
            f.quantize(torch.randn(shape, device="cuda") * 10.0 ** i, rounding="sr", seed=i)
        assert fc.compilations() == before, name


def test_torch_quantize_is_captured_in_a_cuda_graph():
    torch = pytest.importorskip("torch")
    from fpformat.torch import quantize
    x = torch.randn(1024, 256, device="cuda", dtype=torch.bfloat16)
    for name in ("float8_e4m3fn", "mxfp4", "nvfp4", "e4m3/channel", "e4m3/tensor"):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            quantize(x, name, rounding="sr", seed=1)                # warm-up: compiles
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = quantize(x, name, rounding="sr", seed=1)
        x.copy_(torch.randn_like(x))
        g.replay()
        torch.cuda.synchronize()
        want = quantize(x.cpu(), name, rounding="sr", seed=1)
        assert torch.equal(y.cpu().view(torch.int16), want.view(torch.int16)), name


def test_torch_side_stream():
    torch = pytest.importorskip("torch")
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


def test_unit_mm_runs_cuda_tensors_on_the_gpu_with_the_cpu_bits():
    """fpformat.gemm_torch.unit_mm on CUDA tensors: computed by fpformat.cuda_gemm (a CUDA
    result, no host copy), the CPU's bits for float32/float16/bfloat16 tensors; a unit whose
    summation runs on the CPU only (MI100's exact sum) goes through the host."""
    torch = pytest.importorskip("torch")
    from fpformat import cuda_gemm
    from fpformat.gemm_torch import unit_mm
    g = torch.Generator().manual_seed(3)
    a = torch.randn(48, 70, generator=g) * 4
    b = torch.randn(70, 40, generator=g)
    a[0, 0], b[1, 1] = float("inf"), 1e6                   # clamped by quantize_inputs
    for unit, fin in (("h100", "float8_e4m3fn"), ("mi300x", "float16"), ("a100", "bfloat16"),
                      ("mi100", "float16")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            ac, bc = a.to(dtype), b.to(dtype)
            want = unit_mm(ac, bc, unit, fin)
            calls = []
            real = cuda_gemm.mma
            cuda_gemm.mma = lambda *args, **kw: calls.append(1) or real(*args, **kw)
            try:
                got = unit_mm(ac.cuda(), bc.cuda(), unit, fin)
            finally:
                cuda_gemm.mma = real
            assert got.is_cuda and got.dtype == dtype, (unit, dtype)
            assert len(calls) == (0 if unit == "mi100" else 1), (unit, dtype)
            assert torch.equal(got.cpu().view(_int(torch, dtype)),
                               want.view(_int(torch, dtype))), (unit, dtype)


def test_emulated_mm_and_matmul_run_cuda_tensors_on_the_gpu_with_the_cpu_bits():
    """fpformat.gemm.matmul (the accumulator model) on CUDA tensors: a CUDA result with the
    CPU's values and codes; fpformat.gemm_torch.emulated_mm through it, in the tensor's dtype."""
    torch = pytest.importorskip("torch")
    from fpformat.gemm import Accumulator, matmul
    from fpformat.gemm_torch import emulated_mm
    g = torch.Generator().manual_seed(4)
    a = (torch.randn(33, 300, generator=g) * 8).half().float()
    b = (torch.randn(300, 17, generator=g)).bfloat16().float()
    a[0, 0] = float("inf")
    for acc in (Accumulator("e8m13", "rtz"), Accumulator("e8m13", "sr", chunk=128),
                Accumulator("e5m10", "rna", order="pairwise", fused_width=4),
                Accumulator("e6m7", "rtp", fused_width=16, chunk=64, promote_format="e8m13")):
        wv, wc = matmul(a.double().numpy(), b.double().numpy(), accumulator=acc, seed=2,
                        return_codes=True)
        gv, gc = matmul(a.cuda(), b.cuda(), accumulator=acc, seed=2, return_codes=True)
        assert gv.is_cuda and gv.dtype == torch.float64, acc.label()
        assert np.array_equal(gv.cpu().numpy().view(np.uint64), wv.view(np.uint64)), acc.label()
        assert np.array_equal(gc.cpu().numpy(), wc), acc.label()
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            want = emulated_mm(a.to(dtype), b.t().contiguous().to(dtype).t(), acc, seed=2)
            got = emulated_mm(a.to(dtype).cuda(), b.to(dtype).cuda(), acc, seed=2)
            assert got.is_cuda and got.dtype == dtype
            assert torch.equal(got.cpu().view(_int(torch, dtype)),
                               want.view(_int(torch, dtype))), (acc.label(), dtype)
