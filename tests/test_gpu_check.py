"""benchmarks/gpu_check.py in CI mode: its correctness items (element and block presets under
every rounding mode against the CPU, the matrix units, compilations per call, 0-d and empty
inputs) run under numba's CUDA simulator, and every item must pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")

pytest.importorskip("numba.cuda")


#: Element and block formats with and without NaN/inf, float16-sized and not: the default suite
#: runs the script's CI mode on these (tests/test_cuda.py holds every preset to the CPU under
#: the simulator); ``-m slow`` runs it on every preset.
FEW_FORMATS = "float8_e4m3fn,float16,mxfp4,nvfp4"


def _ci_mode_passes(*extra: str) -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, SCRIPT, "--ci", *extra], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    items = {line["item"] for line in lines}
    assert {"versions", "exact", "exact-mma", "compilations", "edge", "summary"} <= items, \
        proc.stderr[-3000:]
    # the exactness item: element and block formats, float32 and float16 data
    exact = [line for line in lines if line["item"] == "exact"]
    assert {(line["kind"], line["dtype"]) for line in exact} == {
        ("element", "float32"), ("element", "float16"), ("block", "float32"),
        ("block", "float16")}
    assert all(line["combinations"] > 0 for line in exact)
    failed = [line for line in lines if not line["ok"]]
    assert failed == [], json.dumps(failed, indent=1)[:4000]
    assert proc.returncode == 0


def test_gpu_check_ci_mode_passes_under_the_simulator():
    _ci_mode_passes("--formats", FEW_FORMATS)


@pytest.mark.slow
def test_gpu_check_ci_mode_passes_under_the_simulator_for_every_preset():
    _ci_mode_passes()


def test_gpu_check_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, SCRIPT, "--ci", "--n", "3"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "--n must be" in proc.stderr
