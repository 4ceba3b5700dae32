"""The GPU path (fpformat.cuda) without a GPU: its kernels run in numba's CUDA simulator and
compile with NVVM for sm_90, each in a child process (tests/cuda_child.py), because
NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported.

Every simulated result is compared bit for bit with the CPU kernels (tests/cuda_child.py lists
the cases).  Tests that need a real GPU are in tests/test_cuda_gpu.py (``-m gpu``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "cuda_child.py")

pytest.importorskip("numba.cuda")


def _child(which: str, simulator: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, CHILD, which], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sim() -> dict[str, str]:
    return _child("sim", simulator=True)


def _failures(results: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in results.items() if k.startswith(prefix) and v != "ok"}


def _count(results: dict[str, str], prefix: str) -> int:
    return sum(k.startswith(prefix) for k in results)


def test_element_codes_and_values_match_cpu_for_every_mode(sim):
    # 9 formats (E4M3FN, E5M2, E2M1, E3M2, E8M0, no subnormals, unsigned UE4M3, two fnuz) x
    # 7 rounding modes (SR with the same seed) x saturate on/off, float32 and float64 inputs
    assert _count(sim, "elem:") == 9 * 7 * 2
    assert _failures(sim, "elem:") == {}


def test_stochastic_rounding_uses_the_global_flat_index(sim):
    assert sim["sr:bits-index-prefix-seed"] == "ok"


def test_decode_matches_cpu_for_every_code(sim):
    assert _count(sim, "decode:") == 9 + 1
    assert _failures(sim, "decode:") == {}


def test_half_inputs_wide_layout_empty_and_errors(sim):
    for name in ("float16-input", "float32-into-float64-layout", "empty", "bad-input"):
        assert sim[name] == "ok", sim[name]


def test_public_api_routes_cuda_arrays_to_the_gpu_kernels(sim):
    assert sim["dispatch:FloatFormat"] == "ok"


def test_block_formats_match_cpu_codes_scales_and_values(sim):
    # MX (fp4, fp8, fp6, int8), NVFP4, per-channel amax, UE4M3 amax, ragged, per-tensor; RNE,
    # SR, RTZ; float32 and float64; zero blocks, NaN/inf blocks, outliers
    assert _count(sim, "block:") == 9 * 3 + 2
    assert _failures(sim, "block:") == {}


def test_kernels_compile_for_a_real_gpu():
    """NVVM compiles every kernel kind for sm_90 (catches code that only the simulator runs),
    the matrix-unit core's device code included."""
    results = _child("ptx", simulator=False)
    if "unavailable" in results:
        pytest.skip(f"NVVM not available: {results['unavailable'][:200]}")
    assert len(results) == 16 and {"unit:h100:float8_e4m3fn", "unit:mi300x:float16"} <= set(results)
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
