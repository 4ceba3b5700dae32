"""The results store: keys, status transitions, and concurrent writers from several processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest
from procs import legacy_db

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


# --- claims: one trainer per run ----------------------------------------------------------------

def _claimant(db: str, go, done, out) -> None:
    go.wait(30)
    try:
        out.put(("claimed", store.mark_running(db, "k", {"a": 1}, **_cols())))
    except store.RunClaimed as exc:
        out.put(("busy", str(exc)))
    done.wait(60)                      # stay alive: the claim holds while its owner lives


def test_concurrent_claimants_get_exactly_one_claim(tmp_path):
    db = str(tmp_path / "claim.db")
    store.connect(db).close()
    ctx = mp.get_context("spawn")
    go, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimant, args=(db, go, done, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        go.set()                       # all four claim at (nearly) the same moment
        got = [out.get(timeout=60) for _ in procs]
    finally:
        done.set()
        for p in procs:
            p.join(60)
    assert sorted(kind for kind, _ in got) == ["busy"] * 3 + ["claimed"], got
    assert all("being trained by another process" in msg for kind, msg in got if kind == "busy")
    # Every claimant has exited: the claim of a dead owner is taken over at once.
    assert store.mark_running(db, "k", {"a": 1}, **_cols()) is True
    assert store.get_run(db, "k")["owner"] == store.owner_id()


def _dead_pid() -> int:
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claim_rules(tmp_path):
    import socket
    import time
    db = tmp_path / "r.db"
    me = store.owner_id()
    assert store.mark_running(db, "k", {}, **_cols()) is True
    assert store.mark_running(db, "k", {}, **_cols()) is True            # re-claim by the owner
    live_elsewhere = "otherhost:1:1"
    dead_here = f"{socket.gethostname()}:{_dead_pid()}:1"
    # another live owner (another host, fresh heartbeat) holds it: refused, row unchanged
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET owner = ?, heartbeat = ? WHERE key = 'k'",
                    (live_elsewhere, time.time()))
    with pytest.raises(store.RunClaimed, match="k is being trained by another process"):
        store.mark_running(db, "k", {}, **_cols())
    assert store.get_run(db, "k")["owner"] == live_elsewhere
    # ... and this process, which lost the claim, cannot record a result over it
    with pytest.raises(store.RunClaimed, match="result is not recorded"):
        store.mark_finished(db, "k", val_loss=1.0, curve=[], tokens=1, wall_s=1.0,
                            tokens_per_s=1.0, env={})
    store.mark_failed(db, "k", "boom")                                    # nor a failure
    assert store.get_run(db, "k")["status"] == "running"
    # a stale heartbeat on another host, or a dead process on this one, is taken over
    for owner, beat in ((live_elsewhere, time.time() - store.STALE_S - 1), (dead_here, None)):
        with sqlite3.connect(db) as con:
            con.execute("UPDATE runs SET owner = ?, heartbeat = ? WHERE key = 'k'", (owner, beat))
        assert store.mark_running(db, "k", {}, **_cols()) is True
        assert store.get_run(db, "k")["owner"] == me
    # release: still 'running' (resumable), owned by nobody, claimable by anyone at once
    store.release(db, "k")
    row = store.get_run(db, "k")
    assert row["status"] == "running" and row["owner"] is None
    assert (str(db), "k") not in store.held_claims()
    assert store.mark_running(db, "k", {}, owner=live_elsewhere, **_cols()) is True
    assert store.owner_alive(me, None) and not store.owner_alive(dead_here, time.time())
    assert not store.owner_alive(None, time.time()) and not store.owner_alive("junk", None)


def test_heartbeat_is_refreshed_while_the_claim_is_held(tmp_path):
    import subprocess
    import sys
    db = tmp_path / "hb.db"
    code = f"""
import time
from explorer.train import store
store.HEARTBEAT_S = 0.1
store.mark_running({str(db)!r}, "k", {{}}, n_params=1, tokens=1, exp_bits=None, man_bits=None,
                   block=None, fmt="none", targets="")
first = store.get_run({str(db)!r}, "k")["heartbeat"]
time.sleep(1.0)
print(store.get_run({str(db)!r}, "k")["heartbeat"] - first)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0.3


def test_write_guard_stops_a_write_before_commit(tmp_path):
    db = tmp_path / "g.db"
    store.mark_running(db, "k", {}, **_cols())

    def orphaned():
        raise RuntimeError("parent gone")
    store.set_write_guard(orphaned)
    try:
        with pytest.raises(RuntimeError, match="parent gone"):
            store.mark_finished(db, "k", val_loss=1.0, curve=[], tokens=1, wall_s=1.0,
                                tokens_per_s=1.0, env={})
        with pytest.raises(RuntimeError, match="parent gone"):
            store.mark_running(db, "k2", {}, **_cols())
    finally:
        store.set_write_guard(None)
    assert store.get_run(db, "k")["status"] == "running" and store.get_run(db, "k2") is None


def test_database_without_claim_columns_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.db"
    legacy_db(db, "INSERT INTO runs (key, status, created, val_loss) VALUES ('done', 'finished', "
                  "1, 2.5); INSERT INTO runs (key, status, created) VALUES ('old', 'running', 2);")
    assert store.finished_keys(db) == {"done"}               # reading changes nothing
    assert "owner" not in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(runs)")}
    assert store.mark_running(db, "old", {}, **_cols()) is True    # no owner recorded: claimable
    rows = {r["key"]: r for r in store.load_runs(db, status=None)}
    assert rows["done"]["val_loss"] == 2.5 and rows["old"]["owner"] == store.owner_id()


def _columns(db) -> list[str]:
    return [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(runs)")]


def test_database_without_claim_columns_also_gets_the_recipe_columns(tmp_path):
    db = tmp_path / "old.db"
    legacy_db(db, "INSERT INTO runs (key, status, created, fmt, val_loss) VALUES ('done', "
                  "'finished', 1, 'none', 2.5);")
    row = store.get_run(db, "done")                          # read: nothing added to the file
    assert row["recipe"] is None and row["recipe_hash"] is None
    assert "recipe" not in _columns(db)
    store.mark_running(db, "r", {}, **_recipe_cols())
    assert _columns(db)[-4:] == ["owner", "heartbeat", "recipe", "recipe_hash"]
    rows = {r["key"]: r for r in store.load_runs(db, status=None)}
    assert rows["done"]["recipe"] is None and rows["done"]["val_loss"] == 2.5
    assert (rows["r"]["recipe"], rows["r"]["recipe_hash"]) == ("te-nvfp4", "92430a1a2359a5e1")


def test_database_with_claims_but_no_recipes_is_upgraded_in_place(tmp_path):
    """A database written between the claim columns and the recipe columns keeps its rows and
    its claims, and gains the recipe columns on its first write."""
    db = tmp_path / "mid.db"
    legacy_db(db, "ALTER TABLE runs ADD COLUMN owner TEXT; ALTER TABLE runs ADD COLUMN heartbeat "
                  "REAL; INSERT INTO runs (key, status, created, fmt, val_loss, owner) VALUES "
                  "('done', 'finished', 1, 'e2m3', 2.5, 'somehost:1:1');")
    assert store.finished_keys(db) == {"done"} and "recipe" not in _columns(db)
    store.mark_running(db, "new", {}, **_cols())
    assert _columns(db)[-2:] == ["recipe", "recipe_hash"]
    done = store.get_run(db, "done")
    assert done["owner"] == "somehost:1:1" and done["recipe"] is None and done["val_loss"] == 2.5
    assert store.get_run(db, "new")["recipe"] is None


def _recipe_cols(**kw):
    base = dict(n_params=10, tokens=100, exp_bits=None, man_bits=None, block=None, fmt="recipe",
                targets="fwd_x,fwd_w,dgrad_dy,dgrad_w,wgrad_dy,wgrad_x", recipe="te-nvfp4",
                recipe_hash="92430a1a2359a5e1")
    base.update(kw)
    return base


def test_recipe_runs_record_name_and_hash(tmp_path):
    db = tmp_path / "r.db"
    store.mark_running(db, "r", {"quant": {"recipe": "te-nvfp4"}}, **_recipe_cols())
    store.mark_running(db, "f", {}, **_cols())
    store.mark_finished(db, "r", val_loss=3.0, curve=[], tokens=100, wall_s=1.0,
                        tokens_per_s=100.0, env={})
    rows = {r["key"]: r for r in store.load_runs(db, status=None)}
    assert (rows["r"]["recipe"], rows["r"]["recipe_hash"]) == ("te-nvfp4", "92430a1a2359a5e1")
    assert rows["r"]["fmt"] == "recipe" and rows["r"]["exp_bits"] is None
    assert rows["f"]["recipe"] is None and rows["f"]["recipe_hash"] is None
    # a re-claim (resumed run) keeps them; one that does not repeat them leaves them alone
    store.mark_running(db, "f2", {}, **_recipe_cols(recipe="mine", recipe_hash="0123456789abcdef"))
    store.mark_failed(db, "f2", "boom")
    store.mark_running(db, "f2", {}, **_recipe_cols(recipe="mine", recipe_hash="0123456789abcdef"))
    assert store.get_run(db, "f2")["recipe"] == "mine"


@pytest.mark.parametrize("kw, names", [
    (dict(recipe_hash=None), "recipe and recipe_hash"),
    (dict(recipe=None), "recipe and recipe_hash"),
    (dict(recipe=""), "recipe and recipe_hash"),
    (dict(recipe_hash="  "), "recipe and recipe_hash"),
    (dict(recipe=3), "recipe and recipe_hash"),
    (dict(fmt="e2m3"), "fmt, exp_bits, man_bits"),
    (dict(exp_bits=2, man_bits=3), "fmt, exp_bits, man_bits"),
    (dict(recipe=None, recipe_hash=None), "recipe and recipe_hash"),   # fmt 'recipe', no name
])
def test_bad_recipe_columns_are_refused_before_writing(tmp_path, kw, names):
    db = tmp_path / "r.db"
    with pytest.raises(ValueError, match=names):
        store.mark_running(db, "r", {}, **_recipe_cols(**kw))
    assert not db.exists()


# --- files that are not (writable) results databases ------------------------------------------

def _snapshot(path):
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


def _writers(db):
    return [
        lambda: store.connect(db),
        lambda: store.mark_running(db, "k", {}, **_cols()),
        lambda: store.record_ptq(db, run_key="k", ckpt_tokens=1, fmt="e2m1", bits=4,
                                 method="rtn", val_loss_before=1.0, val_loss_after=1.0,
                                 n_params=1),
    ]


def test_garbage_and_foreign_databases_are_refused_unchanged(tmp_path):
    garbage = tmp_path / "g" / "garbage.db"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not sqlite\n" * 100)
    foreign = tmp_path / "f" / "foreign.db"
    foreign.parent.mkdir()
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    con.execute("INSERT INTO customers VALUES (1, 'x')")
    con.commit()
    con.close()
    half = tmp_path / "h" / "half.db"                     # a 'runs' table of another shape
    half.parent.mkdir()
    sqlite3.connect(half).execute("CREATE TABLE runs (key TEXT, loss REAL)").connection.close()
    for db, why in ((garbage, "file is not a database"), (foreign, "no 'runs' table"),
                    (half, "lacks columns")):
        before = _snapshot(db)
        for op in _writers(db) + [lambda: store.get_run(db, "k"),
                                  lambda: store.finished_keys(db),
                                  lambda: store.ptq_done(db, "k"), lambda: store.load_runs(db)]:
            with pytest.raises(ValueError, match=why) as info:
                op()
            msg = str(info.value)
            assert str(db) in msg and "\n" not in msg
        assert _snapshot(db) == before, db                 # not a byte, not a side file
    mode = sqlite3.connect(foreign).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "delete"                                # its journal mode was not switched


def test_read_only_database_and_directory_are_refused(tmp_path):
    db = tmp_path / "ro" / "r.db"
    store.mark_running(db, "k", {}, **_cols())
    store.mark_finished(db, "k", val_loss=1.0, curve=[], tokens=1, wall_s=1.0, tokens_per_s=1.0,
                        env={})
    db.chmod(0o444)
    try:
        before = _snapshot(db)
        for op in _writers(db):
            with pytest.raises(PermissionError, match="read-only") as info:
                op()
            assert str(db) in str(info.value) and info.value.args == (str(info.value),)
        assert _snapshot(db) == before
        assert store.finished_keys(db) == {"k"}            # reading it still works
    finally:
        db.chmod(0o644)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        store.mark_running(tmp_path, "k", {}, **_cols())
