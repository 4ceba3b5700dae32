"""Matrix units on the GPU path (fpformat.cuda_gemm) without a GPU: fpformat.gemm.mma and
fpformat.gemm.matmul on numba's simulated device arrays against the CPU, bit for bit, and the
kernels compiled with NVVM for sm_90; each in a child process (tests/cuda_gemm_child.py),
because NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported."""

from __future__ import annotations

import os
import sys

import pytest
from procs import cuda_child, failures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "cuda_gemm_child.py")

pytest.importorskip("numba.cuda")


def _child(which: str, simulator: bool) -> dict[str, str]:
    return cuda_child("cuda_gemm_child.py", which, simulator)


@pytest.fixture(scope="module")
def sim() -> dict[str, str]:
    return _child("sim", simulator=True)


def test_every_unit_gives_the_cpu_bits(sim):
    # 19 units: H100 (fp16, bf16, tf32, FP8 e4m3/e5m2; float32 and float16 outputs), A100, V100,
    # B200, Ada, MI300X (late and odd/even, FNUZ FP8) and proposed units (sticky, narrow
    # window with a wrapping adder, no carry bit with flushed subnormals, 10 result bits);
    # batched, ragged K, NaN/inf/max operands, a c array
    sys.path.insert(0, os.path.dirname(CHILD))
    from cuda_gemm_child import UNITS
    assert sum(k.startswith("unit:") for k in sim) == len(UNITS) == 19
    assert failures(sim, "unit:") == {}


def test_drawn_units_give_the_cpu_bits(sim):
    # hypothesis: 12 proposed units over every MatrixUnit field the GPU runs, every input format,
    # K from 1 to 70, with and without NaN/inf operands
    assert sim["hypothesis:units"] == "ok", sim["hypothesis:units"]


def test_quantized_inputs_broadcasting_nan_signs_and_empty_shapes(sim):
    for name in ("quantize-inputs", "broadcasting", "nan-signs-and-k0", "empty"):
        assert sim[name] == "ok", sim[name]


def test_public_mma_routes_device_arrays_and_raises_like_the_cpu(sim):
    assert sim["dispatch"] == "ok", sim["dispatch"]
    assert sim["errors"] == "ok", sim["errors"]


def test_matmul_accumulators_give_the_cpu_bits(sim):
    # fpformat.gemm.matmul on device arrays: 8 accumulators (sequential, pairwise, fused,
    # chunked promotion with SR, saturating, ...) x K in (0, 1, 29) with NaN/inf operands, values
    # and codes; 15 accumulators drawn by hypothesis over every Accumulator field; the CPU's
    # errors (inexact products, exponent range) word for word, shapes
    for name in ("matmul:accumulators", "matmul:hypothesis", "matmul:errors"):
        assert sim[name] == "ok", sim[name]


def test_gemm_kernels_compile_for_a_real_gpu():
    """NVVM compiles the unit kernel (aligned, late, odd/even; float32 and float16 results),
    the operand kernels, the value check and the accumulator-model (matmul) kernels for sm_90."""
    results = _child("ptx", simulator=False)
    if "unavailable" in results:
        pytest.skip(f"NVVM not available: {results['unavailable'][:200]}")
    # units, operand kernels per input format, matmul (2) and its significand reduction (2), check
    assert len(results) == 4 + 3 * 2 + 2 + 2 + 1
    assert {k: v for k, v in results.items() if v != "ok"} == {}
