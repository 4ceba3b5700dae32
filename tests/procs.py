"""Test helpers for child processes, sweeps, the CLI and the results database: a CUDA child run
under the simulator or NVVM, processes read from /proc (Linux), ``fpx`` run in-process, and a
results database as older versions wrote it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``fpx ARGV`` in this process: ``(exit code, stdout, stderr)`` (``capsys``: pytest's)."""
    from explorer.cli import main
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


#: CUDA children started ahead of the tests that read them (:func:`start_cuda_child`), by
#: ``(script, which, simulator)``.
_started: dict[tuple[str, str, bool], subprocess.Popen] = {}


def start_cuda_child(script: str, which: str, simulator: bool) -> None:
    """Start :func:`cuda_child`'s process now, in the background (conftest.py does so once the
    tests are collected: the simulator children take minutes of one core, which the tests
    before them leave free on a two-core machine); :func:`cuda_child` collects it."""
    key = (script, which, simulator)
    if key not in _started:
        _started[key] = _spawn(script, which, simulator)


def stop_started_children() -> None:
    """Kill the children started ahead that no test collected (a ``-k`` run)."""
    while _started:
        _, proc = _started.popitem()
        proc.kill()
        proc.communicate()


def _spawn(script: str, which: str, simulator: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / script), which],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)


def cuda_child(script: str, which: str, simulator: bool) -> dict[str, str]:
    """Run ``tests/<script> <which>`` in a fresh interpreter (numba.cuda must be configured
    before its first import: ``NUMBA_ENABLE_CUDASIM=1`` when ``simulator``), or collect the run
    :func:`start_cuda_child` began, and return the JSON object ``{case: "ok" | error}`` it
    prints on its last line."""
    proc = _started.pop((script, which, simulator), None) or _spawn(script, which, simulator)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"tests/{script} {which} did not finish within 600 s") from None
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def nvvm_without_a_gpu() -> None:
    """Let numba.cuda compile PTX for compute capability 9.0 with NVVM where there is no GPU or
    driver (the CUDA children's ``ptx`` cases): numba-cuda asks the driver for the current
    device's compute capability and NVRTC for the supported architectures; both look-ups are
    answered with sm_90 (the compilation itself is numba's and NVVM's own)."""
    import types

    import numba.cuda.cuda_paths as paths
    import numba.cuda.cudadrv.nvrtc as nvrtc
    import numba.cuda.dispatcher as dispatcher
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    nvrtc.get_arch_option = lambda major, minor: f"compute_{major}{minor}"
    paths._get_nvrtc_path = lambda: None


def failures(results: dict[str, str], prefix: str) -> dict[str, str]:
    """The cases of a :func:`cuda_child` result starting with ``prefix`` that did not pass."""
    return {k: v for k, v in results.items() if k.startswith(prefix) and v != "ok"}

#: The results schema before runs had claims (no owner/heartbeat columns).
LEGACY_SCHEMA = """
    CREATE TABLE runs (key TEXT PRIMARY KEY, status TEXT NOT NULL, created REAL,
        finished REAL, config_json TEXT, n_params INTEGER, tokens INTEGER, exp_bits INTEGER,
        man_bits INTEGER, block TEXT, fmt TEXT, targets TEXT, val_loss REAL, curve_json TEXT,
        wall_s REAL, tokens_per_s REAL, env_json TEXT);
    CREATE TABLE ptq (run_key TEXT, ckpt_tokens INTEGER, fmt TEXT, bits INTEGER,
        method TEXT, val_loss_before REAL, val_loss_after REAL, n_params INTEGER,
        PRIMARY KEY (run_key, ckpt_tokens, fmt, method));
"""


def legacy_db(path: Path, rows_sql: str = "") -> None:
    """Create ``path`` with :data:`LEGACY_SCHEMA` (rollback journal) and run ``rows_sql``."""
    con = sqlite3.connect(path)
    con.executescript(LEGACY_SCHEMA + rows_sql)
    con.commit()
    con.close()


def _stat_fields(stat: Path) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, then the parent)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> set[int]:
    """Processes whose parent chain reaches ``pid``."""
    parent: dict[int, int] = {}
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(st.parent.name)] = int(_stat_fields(st)[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def alive(pids: set[int]) -> set[int]:
    """The ``pids`` that exist and are not zombies."""
    live = set()
    for p in pids:
        try:
            if _stat_fields(Path("/proc") / str(p) / "stat")[0] != "Z":
                live.add(p)
        except (OSError, IndexError):
            pass
    return live
