"""The results store: keys, status transitions, and concurrent writers from several processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

from explorer.train import store


def test_run_key_is_canonical():
    a = store.run_key({"x": 1, "y": [1, 2], "z": {"b": 2, "a": 1}})
    b = store.run_key({"z": {"a": 1, "b": 2}, "y": [1, 2], "x": 1})
    assert a == b and len(a) == 24
    assert store.run_key({"x": 2, "y": [1, 2], "z": {"b": 2, "a": 1}}) != a


def _cols(**kw):
    base = dict(n_params=10, tokens=100, exp_bits=2, man_bits=3, block="32", fmt="e2m3",
                targets="fwd_w")
    base.update(kw)
    return base


def test_status_transitions_and_finished_rows_are_kept(tmp_path):
    db = tmp_path / "r.db"
    store.mark_running(db, "k1", {"a": 1}, **_cols())
    assert store.get_run(db, "k1")["status"] == "running"
    store.mark_finished(db, "k1", val_loss=2.5, curve=[[50, 3.0], [100, 2.5]], tokens=100,
                        wall_s=1.0, tokens_per_s=100.0, env={"device": "cpu"})
    store.mark_running(db, "k1", {"a": 1}, **_cols())          # a second worker: no effect
    store.mark_failed(db, "k1", "boom")                        # nor this
    row = store.load_runs(db)[0]
    assert row["status"] == "finished" and row["val_loss"] == 2.5 and row["curve"][-1] == [100, 2.5]
    assert store.finished_keys(db) == {"k1"}
    store.mark_running(db, "k2", {"a": 2}, **_cols())
    store.mark_failed(db, "k2", "ValueError: x")
    assert store.get_run(db, "k2")["status"] == "failed"
    assert [r["key"] for r in store.load_runs(db, status=None)] == ["k1", "k2"]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(db: str, wid: int, n: int) -> None:
    for i in range(n):
        key = f"w{wid}-{i}"
        store.mark_running(db, key, {"w": wid, "i": i}, **_cols())
        store.mark_finished(db, key, val_loss=float(i), curve=[], tokens=100, wall_s=0.0,
                            tokens_per_s=0.0, env={})
        store.record_ptq(db, run_key=key, ckpt_tokens=100, fmt="e2m1", bits=4, method="rtn",
                         val_loss_before=1.0, val_loss_after=1.5, n_params=10)


def test_concurrent_writers_lose_nothing(tmp_path):
    db = str(tmp_path / "c.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = store.load_runs(db)
    assert len(rows) == 120 and ({r["key"] for r in rows}
                                 == {f"w{w}-{i}" for w in range(4) for i in range(30)})
    assert all(r["status"] == "finished" for r in rows)
    assert len(store.load_ptq(db)) == 120
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_store_reader_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, explorer.train.store; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_finished_keys_leave_out_running_and_failed_rows(tmp_path):
    db = tmp_path / "r.db"
    for key in ("done", "busy", "broken"):
        store.mark_running(db, key, {"k": key}, **_cols())
    store.mark_finished(db, "done", val_loss=2.0, curve=[], tokens=100, wall_s=1.0,
                        tokens_per_s=100.0, env={})
    store.mark_failed(db, "broken", "RuntimeError: x")
    assert store.finished_keys(db) == {"done"}
    assert {r["key"]: r["status"] for r in store.load_runs(db, status=None)} == {
        "done": "finished", "busy": "running", "broken": "failed"}
    assert [r["key"] for r in store.load_runs(db)] == ["done"]
