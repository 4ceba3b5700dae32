"""The GPU path (fpformat.cuda) without a GPU: its kernels run in numba's CUDA simulator and
compile with NVVM for sm_90, each in a child process (tests/cuda_child.py), because
NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported.

Every simulated result, through the public API, is compared bit for bit with the CPU kernels
(NaN signs included; tests/cuda_child.py lists the cases).  Tests that need a real GPU are in
tests/test_cuda_gpu.py (``-m gpu``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import cuda_child, failures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "cuda_child.py")

pytest.importorskip("numba.cuda")


def _child(which: str, simulator: bool) -> dict[str, str]:
    return cuda_child("cuda_child.py", which, simulator)


@pytest.fixture(scope="module")
def sim() -> dict[str, str]:
    return _child("sim", simulator=True)


def _count(results: dict[str, str], prefix: str) -> int:
    return sum(k.startswith(prefix) for k in results)


def test_element_codes_and_values_match_cpu_for_every_mode(sim):
    # 9 formats (E4M3FN, E5M2, E2M1, E3M2, E8M0, no subnormals, unsigned UE4M3, two fnuz) x
    # 7 rounding modes (SR with the same seed) x saturate on/off; float32 and float64 inputs,
    # float16 and bfloat16 inputs for rne, rtp and sr; raw bits, NaN signs included
    assert _count(sim, "elem:") == 9 * 7 * 2
    assert failures(sim, "elem:") == {}


def test_ieee_presets_encode_64_bit_codes_like_the_cpu(sim):
    # float64/float32/float16/bfloat16 as element formats on float64, float32 and float16 data:
    # negative float64 codes are negative int64s in the kernels, stored with the same bits
    assert sim["ieee-presets:64-bit-codes"] == "ok", sim["ieee-presets:64-bit-codes"]


def test_stochastic_rounding_uses_the_global_flat_index(sim):
    assert sim["sr:bits-index-prefix-seed"] == "ok"


def test_decode_matches_cpu_for_every_code(sim):
    assert _count(sim, "decode:") == 9 + 1
    assert failures(sim, "decode:") == {}


def test_inputs_are_widened_by_integer_code(sim):
    # float16 -> float32 bits for all 65536 patterns, float32 -> float64 with NaN signs
    assert sim["bits:widening"] == "ok", sim["bits:widening"]


def test_wide_layout_empty_scalar_and_errors(sim):
    for name in ("float32-into-float64-layout", "empty-and-0d", "bad-input"):
        assert sim[name] == "ok", sim[name]


def test_public_api_routes_simulated_device_arrays_to_the_gpu_kernels(sim):
    # the whole child goes through FloatFormat/BlockFormat methods; this case checks the kinds
    assert sim["dispatch:public-api"] == "ok", sim["dispatch:public-api"]


def test_out_parameter_separate_in_place_and_refusals(sim):
    assert sim["out:element-and-block"] == "ok", sim["out:element-and-block"]


def test_block_formats_match_cpu_for_every_preset_layout_and_dtype(sim):
    # 7 presets + 7 layouts (channel, UE4M3 amax, ragged, tensor, 2-D tiles, axis 0, channel
    # along axis 0) x (float32, float64, float16, bfloat16 with RNE; float32 SR; float16 RTZ;
    # float32 non-saturating): codes, scales, tensor scale, quantize, GPU decode of the GPU
    # encoding; plus the float16 NVFP4 example, NaN signs, long rows (grid-wide path),
    # a scale format without NaN and out-of-range codes in decode
    assert _count(sim, "block:") == 14 * 7 + 5
    assert failures(sim, "block:") == {}
    assert sim["block:nvfp4:float16-single-rounding"] == "ok"


def test_one_compilation_per_format_mode_dtype_and_kind(sim):
    assert sim["compilations:data-and-shapes"] == "ok", sim["compilations:data-and-shapes"]


def test_kernels_compile_for_a_real_gpu():
    """NVVM compiles every kernel kind for sm_90 (catches code that only the simulator runs),
    the matrix-unit core's device code included."""
    results = _child("ptx", simulator=False)
    if "unavailable" in results:
        pytest.skip(f"NVVM not available: {results['unavailable'][:200]}")
    assert len(results) == 34 and {"unit:h100:float8_e4m3fn", "unit:mi300x:float16"} <= set(results)
    assert {k: v for k, v in results.items() if v != "ok"} == {}


def test_importing_fpformat_does_not_import_numba_cuda():
    code = ("import sys, numpy as np, fpformat\n"
            "fpformat.get_format('e4m3').quantize(np.ones(8, np.float32))\n"
            "fpformat.get_format('mxfp4').quantize(np.ones((2, 32), np.float32))\n"
            "print(any(m.startswith('numba.cuda') for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, width=64), st.integers(0, 2**29 - 1))
def test_float64_results_round_once_to_bfloat16(v, low):
    """Block values (element x scale, exact in float64) reach bfloat16 by one rounding on the
    CPU, as on the GPU (the core's bfloat16 encoder): never via a rounded float32."""
    import ml_dtypes

    from fpformat.arrays import restore_dtype
    # v itself, and a value whose low bits sit just beyond a bfloat16 tie (double rounding's case)
    tie = float(np.float64(1.0 + 2.0 ** -8 + low * 2.0 ** -52))
    x = np.array([v, -v, tie, -tie], dtype=np.float64)
    with np.errstate(over="ignore"):
        want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    got = np.asarray(restore_dtype(x.copy(), "bfloat16")).view(np.uint16)
    assert np.array_equal(got, want)


def test_kernel_bit_helpers_match_numpy_conversions():
    """The integer widening the kernels use instead of float conversions (plain Python here:
    the helpers are register_jitable)."""
    from fpformat import cuda_kernels as ck
    h = np.arange(0, 1 << 16, 7, dtype=np.uint16)
    want = h.view(np.float16).astype(np.float32).view(np.uint32).astype(np.int64)
    assert [int(ck.f16_to_f32_bits(v)) for v in h] == want.tolist()
    b = np.array([0x7FC00000, 0xFFC00001, 0x00000001, 0x80800000, 0x7F800000], dtype=np.uint32)
    got = np.array([ck.f32_to_f64_bits(v) for v in b], dtype=np.int64).view(np.uint64)
    assert [int(g) >> 63 for g in got] == [int(v) >> 31 for v in b]          # NaN signs kept
    assert got[2:].view(np.float64).tolist() == b[2:].view(np.float32).astype(np.float64).tolist()
