"""A sweep killed with ``kill -9``: its workers die with it, write nothing afterwards, and the
runs they held are re-claimable at once (issue 14)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from procs import alive

from explorer.train import store

ROOT = Path(__file__).resolve().parents[1]

# Two long runs of a tiny model: each worker is still training when the sweep is killed.
SPEC = """
name = "kill"
[grid]
model = [[1, 32]]
tokens = [4194304]
format = ["none", "e4m3"]
block = ["none"]
targets = ["fwd_x"]
[train]
seq_len = 32
batch_size = 8
eval_tokens = 2048
eval_points = 2
ckpt_fracs = [1.0]
[corpus]
max_bytes = 262144
[run]
threads = 1
"""

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.fixture()
def env(tmp_path_factory, monkeypatch):
    cache = str(tmp_path_factory.getbasetemp() / "fpxcache")
    monkeypatch.setenv("FPX_CACHE", cache)
    return dict(os.environ, FPX_CACHE=cache, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1",
                OMP_NUM_THREADS="1")


def _children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    out = set()
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(st.parent.name))
    return out


def _running_rows(db: Path) -> list[tuple]:
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT key, config_json FROM runs WHERE status = 'running'"
                               ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _db_state(db: Path) -> str:
    h = hashlib.sha256()
    for p in (db, Path(f"{db}-wal")):
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def test_kill_9_of_the_sweep_kills_its_workers_and_they_write_nothing(tmp_path, env):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "sweep", str(spec), "--db",
                             str(db), "--workers", "2", "--no-progress"],
                            cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not _running_rows(db) and proc.poll() is None:
            time.sleep(0.2)
        rows = _running_rows(db)
        workers = _children(proc.pid)
        assert rows and proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert workers, "no worker process found"
        os.kill(proc.pid, signal.SIGKILL)          # the sweep alone: a crash, an OOM kill
        proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and alive(workers):
            time.sleep(0.1)
        survivors = alive(workers)
        assert not survivors, f"worker(s) {sorted(survivors)} outlived the killed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in alive(_children(proc.pid)) | alive(locals().get("workers", set())):
            os.kill(p, signal.SIGKILL)
    state = _db_state(db)
    time.sleep(1.5)
    assert _db_state(db) == state, "the database was written after the sweep was killed"
    # The killed workers' claims are dead: a resumed sweep re-claims their runs at once.
    for key, _ in rows:
        assert store.mark_running(db, key, {}, n_params=1, tokens=1, exp_bits=None,
                                  man_bits=None, block=None, fmt="none", targets="") is True
        store.release(db, key)


def test_orphaned_worker_without_prctl_ends_itself(tmp_path, env):
    """The portable fallback alone (no PR_SET_PDEATHSIG): a watchdog thread ends the worker
    once its parent is gone, and its SIGTERM no longer just asks for a graceful stop."""
    pidfile = tmp_path / "child.pid"
    child = textwrap.dedent(f"""
        import os, time
        from explorer.train import sweep
        sweep._die_with_parent({{ppid}}, use_prctl=False)
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
    """)
    middle = textwrap.dedent(f"""
        import os, subprocess, sys, time
        code = {child!r}.replace("{{ppid}}", str(os.getpid()))
        subprocess.Popen([sys.executable, "-c", code])
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", middle], cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (pidfile.exists() and pidfile.read_text()):
            time.sleep(0.1)
        pid = int(pidfile.read_text())
        assert alive({pid})
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 3
        while time.time() < deadline and alive({pid}):
            time.sleep(0.05)
        assert not alive({pid}), "the orphaned child is still running"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # the child shares the middle's group
        except ProcessLookupError:
            pass


def test_a_run_held_by_a_live_process_is_not_trained_again(tmp_path, env, capsys):
    """The store's claim decides: a sweep resumed while another live process (here: one on
    another host with a fresh heartbeat) holds a run skips it and says so (exit 1)."""
    from explorer.cli import main
    from explorer.train.sweep import parse_spec, pending_runs, run_sweep
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.replace('["none", "e4m3"]', '["none"]').replace("4194304", "4096"))
    db = tmp_path / "runs.db"
    [(_, key, _)], _ = pending_runs(parse_spec(spec), db)
    holder, beat = "otherhost:4242:1", time.time()
    assert store.mark_running(db, key, {}, owner=holder, n_params=1, tokens=1, exp_bits=None,
                              man_bits=None, block=None, fmt="none", targets="")
    assert (str(db), key) not in store.held_claims()  # this process heartbeats its own only
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET heartbeat = ? WHERE key = ?", (beat, key))
    con.close()
    rep = run_sweep(spec, db, progress=False)
    assert rep.ran == 0 and not rep.failed and len(rep.busy) == 1 and key in rep.busy[0]
    row = store.get_run(db, key)
    assert row["status"] == "running" and row["owner"] == holder and row["heartbeat"] == beat
    assert not (Path(f"{db}.ckpt") / key).exists()     # not a step trained beside the holder
    assert main(["sweep", str(spec), "--db", str(db), "--no-progress", "--json"]) == 1
    out, err = capsys.readouterr()
    assert '"busy": 1' in out and "another live process is training" in err
