"""explorer.results: the one reader of the results database, read-only and torch-free."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from explorer import results
from explorer.train import store


def _db(tmp_path) -> Path:
    db = tmp_path / "r.db"
    cols = dict(n_params=10, tokens=100, exp_bits=2, man_bits=3, block="32", fmt="e2m3",
                targets="fwd_w")
    for key, loss in (("b", 2.0), ("a", 3.0)):
        store.mark_running(db, key, {"k": key}, **cols)
        store.mark_finished(db, key, val_loss=loss, curve=[[100, loss]], tokens=100, wall_s=1.0,
                            tokens_per_s=1.0, env={"device": "cpu"})
    store.mark_running(db, "busy", {"k": "busy"}, **cols)
    for tokens, after in ((100, 2.5), (50, None)):
        store.record_ptq(db, run_key="b", ckpt_tokens=tokens, fmt="e2m1", bits=4, method="rtn",
                         val_loss_before=2.0, val_loss_after=after or float("nan"),
                         n_params=10)
    return db


def test_rows_through_a_read_only_connection(tmp_path):
    db = _db(tmp_path)
    with results.read_only(db) as con:
        measured = results.measured_runs(con)
        assert [r["key"] for r in measured] == ["b", "a"]             # insertion order
        assert [r["key"] for r in results.run_rows(con, None)] == ["b", "a", "busy"]
        assert results.finished_keys(con) == {"a", "b"}
        assert results.run_row(con, "busy")["status"] == "running"
        assert results.run_row(con, "nope") is None
        assert [r["ckpt_tokens"] for r in results.ptq_rows(con)] == [50, 100]
        assert results.ptq_done(con, "b") == {(100, "e2m1", "rtn"), (50, "e2m1", "rtn")}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            con.execute("DELETE FROM runs")        # read-only: sqlite3 refuses the write
    row = results.decode_json_columns(measured[0])
    assert row["config"] == {"k": "b"} and row["curve"] == [[100, 2.0]]
    assert row["env"] == {"device": "cpu"} and row["curve_json"] == "[[100, 2.0]]"


def test_store_reads_through_the_reader(tmp_path):
    db = _db(tmp_path)
    rows = store.load_runs(db)
    assert [r["key"] for r in rows] == ["b", "a"] and rows[0]["curve"] == [[100, 2.0]]
    assert store.get_run(db, "a")["val_loss"] == 3.0 and store.finished_keys(db) == {"a", "b"}
    assert store.ptq_done(db, "b") == {(100, "e2m1", "rtn"), (50, "e2m1", "rtn")}


def test_read_only_errors_name_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="^--runs: no such results database"):
        with results.read_only(tmp_path / "missing.db", name="--runs"):
            pass
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(ValueError, match="is not a results database"):
        with results.read_only(bad) as con:
            results.measured_runs(con)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="no such table"):
        with results.read_only(empty) as con:
            results.measured_runs(con)


def test_reader_imports_no_torch():
    code = "import sys, explorer.results, explorer.train.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "False"
