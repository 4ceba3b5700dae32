"""Sweeps: spec parsing, the grid, resuming after a kill with nothing lost or repeated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.train import store
from explorer.train.sweep import parse_spec, run_sweep

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
name = "test"
[grid]
model = [[1, 32]]
tokens = [8192, 12288, 16384]
format = ["none", "e4m3"]
block = ["none"]
targets = ["fwd_x"]
[train]
seq_len = 32
batch_size = 8
eval_tokens = 2048
eval_points = 2
ckpt_fracs = [0.5, 1.0]
[corpus]
max_bytes = 262144
[ptq]
formats = ["e2m1"]
blocks = ["none"]
[run]
threads = 1
"""


@pytest.fixture()
def env(tmp_path_factory, monkeypatch):
    cache = str(tmp_path_factory.getbasetemp() / "fpxcache")
    monkeypatch.setenv("FPX_CACHE", cache)
    e = dict(os.environ, FPX_CACHE=cache, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return e


def test_spec_grid_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    s = parse_spec(p)
    assert len(s.runs) == 6                                   # 3 tokens x (none, e4m3)
    assert sum(not c.quant.active for c in s.runs) == 3
    assert [c.tokens for c in s.runs] == sorted(c.tokens for c in s.runs)
    assert s.wants_ptq(s.runs[0]) != s.wants_ptq(s.runs[1])   # PTQ of unquantized runs only
    p.write_text(SPEC.replace("tokens = ", "tokenz = "))
    with pytest.raises(ValueError, match="tokenz"):
        parse_spec(p)
    with pytest.raises(FileNotFoundError):
        parse_spec(tmp_path / "missing.toml")


def test_ray_backend_missing_is_a_clear_error(tmp_path, env):
    pytest.importorskip("torch")
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    with pytest.raises(ValueError, match="ray"):
        run_sweep(p, tmp_path / "r.db", backend="ray", progress=False)


def _finished(db: Path) -> dict[str, float]:
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(db, timeout=30)
        return dict(con.execute("SELECT key, finished FROM runs WHERE status='finished'"))
    except sqlite3.OperationalError:
        return {}


def test_killed_sweep_resumes_with_nothing_lost_or_repeated(tmp_path, env):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "sweep", str(spec), "--db", str(db),
                             "--workers", "2", "--no-progress"], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(_finished(db)) < 2 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)                       # the sweep and its workers
    proc.wait()
    before = _finished(db)
    assert 2 <= len(before) < 6, proc.stderr.read().decode()[-2000:]
    rep = run_sweep(spec, db, workers=1, progress=False)
    after = _finished(db)
    assert len(after) == 6 and rep.total == 6
    assert rep.already_done + rep.ran == 6 and rep.ran >= 6 - len(before)
    for k, t in before.items():                               # finished runs were not redone
        assert after[k] == t
    assert len(store.load_runs(db, status=None)) == 6
    ptq = store.load_ptq(db)
    unq = {r["key"] for r in store.load_runs(db) if r["fmt"] == "none"}
    assert {(r["run_key"]) for r in ptq} == unq and len(ptq) == 3 * 2   # 2 checkpoints each
    again = run_sweep(spec, db, workers=1, progress=False)    # a third call does nothing
    assert again.ran == 0 and again.already_done == 6 and _finished(db) == after


@pytest.mark.slow          # starting Ray takes minutes on a busy 2-core machine
def test_ray_backend_on_a_local_instance(tmp_path, env):
    """`--backend ray` against a local Ray instance (ray is an optional extra: skipped without)."""
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'fpx-explorer[ray]')")
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    db = tmp_path / "ray.db"
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"env_vars": {k: env[k] for k in ("FPX_CACHE", "PYTHONPATH",
                                                           "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}})
    try:
        run_sweep(p, db, workers=2, backend="ray", progress=False)
        first = _finished(db)
        assert len(first) == 6
        run_sweep(p, db, workers=2, backend="ray", progress=False)      # nothing to do
        assert _finished(db) == first
    finally:
        ray.shutdown()
