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


def cuda_child(script: str, which: str, simulator: bool) -> dict[str, str]:
    """Run ``tests/<script> <which>`` in a fresh interpreter (numba.cuda must be configured
    before its first import: ``NUMBA_ENABLE_CUDASIM=1`` when ``simulator``) and return the JSON
    object ``{case: "ok" | error}`` it prints on its last line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / script), which],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
