"""The results database: SQLite in WAL mode, one row per training run keyed by a config hash.

Schema (see docs/training.md)::

    runs(key TEXT PRIMARY KEY, status TEXT ('running'|'finished'|'failed'), created REAL,
         finished REAL, config_json TEXT, n_params INTEGER, tokens INTEGER, exp_bits INTEGER,
         man_bits INTEGER, block TEXT, fmt TEXT, targets TEXT, val_loss REAL, curve_json TEXT,
         wall_s REAL, tokens_per_s REAL, env_json TEXT, owner TEXT, heartbeat REAL,
         recipe TEXT, recipe_hash TEXT)
    ptq(run_key TEXT, ckpt_tokens INTEGER, fmt TEXT, bits INTEGER, method TEXT,
        val_loss_before REAL, val_loss_after REAL, n_params INTEGER,
        PRIMARY KEY(run_key, ckpt_tokens, fmt, method))

Times are Unix seconds; losses are mean cross-entropy in nats per token; ``tokens`` is the
number of training tokens actually seen.  A run trained with a training recipe
(:mod:`explorer.train.recipes`) has ``fmt = 'recipe'``, NULL ``exp_bits``/``man_bits``/``block``
(it has no single format), ``targets`` = the GEMM inputs it quantizes, and ``recipe`` /
``recipe_hash`` = the recipe's name and content hash; both are NULL for every other run.

Every write is one short ``BEGIN IMMEDIATE`` transaction with a long busy timeout, so several
worker processes can write to one file without losing rows; WAL keeps every committed row
through a killed process.  Every read goes through :mod:`explorer.results` (the one reader of
these tables, which the analyzer and the report use read-only); this module, like that one,
imports no torch.

**Claims.**  A process trains a run only while it holds the run's claim: :func:`mark_running`
atomically sets ``status = 'running'``, ``owner`` (``host:pid:start-time`` of the claiming
process, :func:`owner_id`) and ``heartbeat``, and refuses with :class:`RunClaimed` while another
*live* owner holds it.  An owner is live when it runs on this host and its process exists (the
start time guards against a reused pid), or, on another host (a Ray cluster), when its heartbeat
is younger than :data:`STALE_S`; a daemon thread of the owning process refreshes the heartbeat
every :data:`HEARTBEAT_S`.  So a resumed sweep re-claims exactly the runs whose owner died, and a
stray process still training a run keeps it.  :func:`mark_finished` and :func:`mark_failed`
write only for the owner, so a process that lost its claim cannot overwrite the new owner's row.
Rows written before claims existed (no ``owner``) are claimable.

**Older databases.**  Columns added since the first schema (:data:`ADDED_COLUMNS`: the claim,
then the recipe) are added to an older database (``ALTER TABLE``, NULL in its existing rows) the
first time it is opened for writing; reading never changes a file, and readers take a missing
column as NULL.

**Errors.**  A file that is not SQLite, a SQLite database of another schema (it is never
modified), a read-only file or an unusable folder raise ``ValueError`` / ``PermissionError`` /
``OSError`` with a one-line message naming the file, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import results

RUNS_SQL = """CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, created REAL, finished REAL, config_json TEXT,
    n_params INTEGER, tokens INTEGER, exp_bits INTEGER, man_bits INTEGER, block TEXT, fmt TEXT,
    targets TEXT, val_loss REAL, curve_json TEXT, wall_s REAL, tokens_per_s REAL, env_json TEXT,
    owner TEXT, heartbeat REAL, recipe TEXT, recipe_hash TEXT)"""
PTQ_SQL = """CREATE TABLE IF NOT EXISTS ptq (
    run_key TEXT, ckpt_tokens INTEGER, fmt TEXT, bits INTEGER, method TEXT,
    val_loss_before REAL, val_loss_after REAL, n_params INTEGER,
    PRIMARY KEY (run_key, ckpt_tokens, fmt, method))"""
SCHEMA = RUNS_SQL + ";\n" + PTQ_SQL + ";\n"

RUN_COLUMNS = ("key", "status", "created", "finished", "config_json", "n_params", "tokens",
               "exp_bits", "man_bits", "block", "fmt", "targets", "val_loss", "curve_json",
               "wall_s", "tokens_per_s", "env_json")
#: Columns of the claim on a run, added (``ALTER TABLE``) to databases created before claims.
CLAIM_COLUMNS = (("owner", "TEXT"), ("heartbeat", "REAL"))
#: The training recipe of a run (name, content hash), added to databases created before recipes.
RECIPE_COLUMNS = tuple((c, "TEXT") for c in results.RECIPE_COLUMNS)
#: Every column added to ``runs`` after its first schema, in the order they were added.
ADDED_COLUMNS = CLAIM_COLUMNS + RECIPE_COLUMNS
PTQ_COLUMNS = ("run_key", "ckpt_tokens", "fmt", "bits", "method", "val_loss_before",
               "val_loss_after", "n_params")

#: Seconds between heartbeats of a claimed run.
HEARTBEAT_S = 10.0
#: A claim held by a process on *another* host lapses when its heartbeat is this old (on this
#: host the owner's process itself is checked, which needs no waiting).
STALE_S = 120.0

_HOST = socket.gethostname()


class RunClaimed(BlockingIOError):
    """The run is being trained by another live process (or this process lost its claim to
    one).  An ``OSError`` ("resource temporarily unavailable"): the CLI reports it in one line;
    running the same command once the other process is done trains or skips the run."""


def run_key(config: dict) -> str:
    """The run's identity: SHA-256 (first 24 hex digits) of its canonical JSON configuration."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# --- owners -------------------------------------------------------------------------------

def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or '' elsewhere:
    with the pid it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def owner_id() -> str:
    """This process as a claim owner: ``host:pid:start-time``."""
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_start_time(pid)}"


def _pid_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                                # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return True                         # no /proc (macOS): the pid exists
    if fields[0] in (b"Z", b"X"):           # a zombie trains nothing
        return False
    return not start or fields[19].decode() == start


def owner_alive(owner: str | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Whether a claim by ``owner`` (from :func:`owner_id`) still holds: on this host, while its
    process exists (zombies and reused pids do not count); on another host, while ``heartbeat``
    is younger than :data:`STALE_S`.  No owner (rows from before claims, released runs): no."""
    if not owner:
        return False
    try:
        host, pid_s, start = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False                        # not written by this module: nobody to wait for
    if host != _HOST:
        now = time.time() if now is None else now
        return heartbeat is not None and now - float(heartbeat) < STALE_S
    return _pid_alive(pid, start)


# --- the write guard ------------------------------------------------------------------------

_WRITE_GUARD: Callable[[], None] | None = None


def set_write_guard(guard: Callable[[], None] | None) -> None:
    """Install ``guard()`` (or None), called in every write transaction of this process after
    the write lock is taken and just before ``COMMIT``, and before every heartbeat.  To stop the
    write it raises (the transaction is rolled back) or ends the process (SQLite discards an
    uncommitted transaction).  Sweep workers install one that ends the worker once the sweep
    that started it is gone, so an orphaned worker never writes."""
    global _WRITE_GUARD
    if guard is not None and not callable(guard):
        raise TypeError(f"guard must be callable or None, got {type(guard).__name__}")
    _WRITE_GUARD = guard


# --- opening, validating, errors --------------------------------------------------------------

def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc)
    return "locked" in msg or "busy" in msg


def _db_error(path: Path, exc: sqlite3.Error) -> Exception:
    """``exc`` as the one-line user error it is, naming the file (one argument, so the CLI prints
    the message and not an errno)."""
    msg = str(exc)
    if "not a database" in msg or "malformed" in msg:
        return ValueError(f"{path} is not a usable results database ({msg})")
    if "readonly" in msg or "read-only" in msg:
        return PermissionError(f"results database {path} is read-only ({msg})")
    if "unable to open" in msg:
        return OSError(f"cannot open results database {path} ({msg}): is its folder writable?")
    if "disk" in msg or "full" in msg:      # "database or disk is full", "disk I/O error"
        return OSError(f"results database {path}: {msg}")
    if _is_busy(exc):
        return TimeoutError(f"results database {path} stayed locked by another process ({msg})")
    return ValueError(f"{path} is not a usable results database ({msg})")


def _writable(path: Path) -> bool:
    """Writable by this process and not marked read-only: as root ``os.access`` says yes to any
    file, but a file with no write bit is one its owner asked not to have changed."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP
                                                                     | stat.S_IWOTH))


def _schema_problem(cols: dict[str, set[str]]) -> str | None:
    """Why a database with these tables is not a results database (None: it is one, or it has
    no tables yet).  Missing :data:`ADDED_COLUMNS` and a missing ``ptq`` table are added, not
    refused."""
    if not cols:
        return None
    if "runs" not in cols:
        return f"it has tables {sorted(cols)} but no 'runs' table"
    missing = [c for c in RUN_COLUMNS if c not in cols["runs"]]
    if missing:
        return f"its 'runs' table lacks columns {missing}"
    missing = [c for c in PTQ_COLUMNS if c not in cols.get("ptq", PTQ_COLUMNS)]
    if missing:
        return f"its 'ptq' table lacks columns {missing}"
    return None


def _ensure_schema(con: sqlite3.Connection, path: Path) -> None:
    """Validate, then switch to WAL and create what is missing.  A database of another schema
    is refused before anything (not even its journal mode) is changed."""
    problem = _schema_problem(results.table_columns(con))   # garbage: "file is not a database" here
    if problem:
        raise ValueError(f"{path} is not a results database: {problem}")
    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    cols = results.table_columns(con)
    if "ptq" in cols and all(c in cols.get("runs", ()) for c, _ in ADDED_COLUMNS):
        return                                       # the common case: nothing to create
    con.execute("BEGIN IMMEDIATE")                   # re-check under the lock: racing creators
    try:
        cols = results.table_columns(con)
        problem = _schema_problem(cols)
        if problem:
            raise ValueError(f"{path} is not a results database: {problem}")
        con.execute(RUNS_SQL)
        con.execute(PTQ_SQL)
        have = cols.get("runs", {c for c, _ in ADDED_COLUMNS})
        for name, typ in ADDED_COLUMNS:
            if name not in have:
                con.execute(f"ALTER TABLE runs ADD COLUMN {name} {typ}")
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """Open the database for writing (creating it and its folder if needed, unless ``create`` is
    False: then ``FileNotFoundError``) in WAL mode with a 120 s busy timeout, creating missing
    tables and columns (:data:`ADDED_COLUMNS`).

    ``ValueError`` when the file is not SQLite or holds another schema (left unchanged);
    ``PermissionError`` for a read-only file; ``OSError`` when the file or its folder cannot be
    opened or created.  Every message names the file.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise FileNotFoundError(f"results database not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"results database {path} is a directory")
    if path.exists() and not _writable(path):
        raise PermissionError(f"results database {path} is read-only (no write permission)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder {path.parent} of results database {path}: "
                      f"{exc.strerror or exc}") from None
    try:
        con = sqlite3.connect(str(path), timeout=120.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise _db_error(path, exc) from None
    con.row_factory = sqlite3.Row
    try:
        for attempt in range(50):
            try:
                _ensure_schema(con, path)
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))
    except sqlite3.Error as exc:
        con.close()
        raise _db_error(path, exc) from None
    except BaseException:
        con.close()
        raise
    return con


def _transact(path: str | Path, fn: Callable[[sqlite3.Connection], Any], *,
              create: bool = True) -> Any:
    """``fn(con)`` in one ``BEGIN IMMEDIATE`` transaction, retried while the file is locked; the
    write guard runs just before ``COMMIT``.  Returns what ``fn`` returns."""
    con = connect(path, create=create)
    try:
        for attempt in range(100):
            try:
                con.execute("BEGIN IMMEDIATE")
                out = fn(con)
                if _WRITE_GUARD is not None:
                    _WRITE_GUARD()
                con.execute("COMMIT")
                return out
            except sqlite3.OperationalError as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if not _is_busy(exc) or attempt == 99:
                    raise _db_error(Path(path), exc) from None
                time.sleep(0.02 * (attempt + 1))
            except sqlite3.DatabaseError as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if type(exc) is sqlite3.DatabaseError:   # corrupt file; not a bug of ours
                    raise _db_error(Path(path), exc) from None
                raise
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
    finally:
        con.close()


def _write(path: str | Path, sql: str, params: tuple, *, create: bool = True) -> int:
    """One statement in its own transaction; the number of rows it changed."""
    return _transact(path, lambda con: con.execute(sql, params).rowcount, create=create)


def _read(path: str | Path, query: Callable[[sqlite3.Connection], Any], empty: Any) -> Any:
    """``query(con)`` on a read-only connection (nothing is created or changed: safe for
    ``--dry-run``).  A missing file, or one with no tables yet (another process is creating it),
    reads as ``empty``; a file that is not a results database raises ``ValueError``."""
    if not Path(path).exists():
        return empty
    with results.read_only(path) as con:
        cols = results.table_columns(con)
        if not cols:
            return empty
        problem = _schema_problem(cols)
        if problem:
            raise ValueError(f"{path} is not a results database: {problem}")
        return query(con)


# --- heartbeats -------------------------------------------------------------------------------

_claims: dict[tuple[str, str], str] = {}     # (db path, key) -> owner, claims of this process
_claims_lock = threading.Lock()
_beat_thread: threading.Thread | None = None


def _hold(path: str | Path, key: str, owner: str) -> None:
    global _beat_thread
    with _claims_lock:
        _claims[(str(path), key)] = owner
        if _beat_thread is None or not _beat_thread.is_alive():
            _beat_thread = threading.Thread(target=_beat_loop, name="fpx-run-heartbeat",
                                            daemon=True)
            _beat_thread.start()


def _drop(path: str | Path, key: str) -> None:
    with _claims_lock:
        _claims.pop((str(path), key), None)


def _beat_loop() -> None:
    """Refresh the heartbeat of every claim this process holds; forget claims that were lost
    (another owner, or no longer 'running', or the file is gone: a heartbeat never re-creates a
    deleted database).  Other errors (a locked file) wait for the next beat."""
    while True:
        time.sleep(HEARTBEAT_S)
        with _claims_lock:
            held = list(_claims.items())
        for (path, key), owner in held:
            try:
                kept = _write(path, "UPDATE runs SET heartbeat = ? WHERE key = ? AND owner = ? "
                              "AND status = 'running'", (time.time(), key, owner), create=False)
            except FileNotFoundError:
                kept = 0
            except Exception:            # retried at the next beat
                continue
            if not kept:
                _drop(path, key)


def held_claims() -> dict[tuple[str, str], str]:
    """The claims this process holds and heartbeats: ``{(db, key): owner}``."""
    with _claims_lock:
        return dict(_claims)


# --- runs -------------------------------------------------------------------------------------

def get_run(path: str | Path, key: str) -> dict | None:
    """The row for ``key`` as a dict, or None."""
    return _read(path, lambda con: results.run_row(con, key), None)


def finished_keys(path: str | Path) -> set[str]:
    """Keys of every finished run."""
    return _read(path, results.finished_keys, set())


def mark_running(path: str | Path, key: str, config: dict, *, n_params: int, tokens: int,
                 exp_bits: int | None, man_bits: int | None, block: str | None, fmt: str,
                 targets: str, owner: str | None = None, recipe: str | None = None,
                 recipe_hash: str | None = None) -> bool:
    """Claim run ``key`` for ``owner`` (default: this process, :func:`owner_id`) and mark it
    'running', inserting its row if new.  Atomic: of several processes claiming one key at once
    exactly one succeeds.

    ``recipe`` / ``recipe_hash``: the training recipe the run follows (its name and
    :attr:`~explorer.train.recipes.Recipe.content_hash`), both or neither (``ValueError``
    otherwise, and for an empty or non-string value); a run with a recipe must be recorded with
    ``fmt = 'recipe'`` and no ``exp_bits``/``man_bits`` (``ValueError``), so no reader takes it
    for a single-format run or for the unquantized baseline.  Written with the row (and again on
    a re-claim, where given).

    Returns True when claimed (when ``owner`` is this process, it heartbeats the claim until the
    run finishes, fails or is :func:`release` d), False when the run is already finished (its
    row is left untouched).
    Raises :class:`RunClaimed` while another live owner holds it (see :func:`owner_alive`); a
    'failed' row, a 'running' row of a dead owner, or one this owner already holds is claimed.
    """
    _check_recipe(recipe, recipe_hash, fmt, exp_bits, man_bits)
    owner = owner_id() if owner is None else owner
    now = time.time()

    def claim(con: sqlite3.Connection) -> bool:
        row = con.execute("SELECT status, owner, heartbeat FROM runs WHERE key = ?",
                          (key,)).fetchone()
        if row is None:
            con.execute("INSERT INTO runs (key, status, created, config_json, n_params, tokens, "
                        "exp_bits, man_bits, block, fmt, targets, owner, heartbeat, recipe, "
                        "recipe_hash) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, now, json.dumps(config, sort_keys=True), n_params, tokens,
                         exp_bits, man_bits, block, fmt, targets, owner, now, recipe,
                         recipe_hash))
            return True
        status, holder, beat = row[0], row[1], row[2]
        if status == "finished":
            return False
        if status == "running" and holder != owner and owner_alive(holder, beat, now):
            age = f"{now - beat:.0f} s ago" if beat is not None else "never"
            raise RunClaimed(f"run {key} is being trained by another process ({holder}, last "
                             f"heartbeat {age}); run again once it is done")
        con.execute("UPDATE runs SET status = 'running', owner = ?, heartbeat = ?, "
                    "recipe = COALESCE(?, recipe), recipe_hash = COALESCE(?, recipe_hash) "
                    "WHERE key = ?", (owner, now, recipe, recipe_hash, key))
        return True

    claimed = _transact(path, claim)
    if claimed and owner == owner_id():   # never keep another process's claim alive
        _hold(path, key, owner)
    return claimed


def _check_recipe(recipe: str | None, recipe_hash: str | None, fmt: str,
                  exp_bits: int | None, man_bits: int | None) -> None:
    """``ValueError`` unless ``recipe`` and ``recipe_hash`` are both None or both non-empty
    strings, and a run with a recipe is recorded as one (``fmt = 'recipe'``, no E/M)."""
    if (recipe is None) != (recipe_hash is None) or not all(
            v is None or (isinstance(v, str) and v.strip()) for v in (recipe, recipe_hash)):
        raise ValueError(f"recipe and recipe_hash: give both (non-empty strings) or neither, got "
                         f"{recipe!r} and {recipe_hash!r}")
    if recipe is None and fmt == results.RECIPE_FMT:
        raise ValueError(f"recipe and recipe_hash: fmt {fmt!r} is a run with a training recipe; "
                         f"give its name and content hash")
    if recipe is not None and (fmt != results.RECIPE_FMT or exp_bits is not None
                               or man_bits is not None):
        raise ValueError(f"fmt, exp_bits, man_bits: a run with recipe {recipe!r} is recorded "
                         f"with fmt {results.RECIPE_FMT!r} and no exp_bits/man_bits, got fmt "
                         f"{fmt!r}, exp_bits {exp_bits!r}, man_bits {man_bits!r}")


def _owner_guarded(path: str | Path, key: str, owner: str, sql: str, params: tuple, *,
                   strict: bool) -> None:
    """Run an ``UPDATE ... WHERE key = ?`` only while ``owner`` holds the run (or nobody does);
    with ``strict``, :class:`RunClaimed` when another owner took it over."""
    def update(con: sqlite3.Connection) -> None:
        n = con.execute(sql + " AND (owner IS NULL OR owner = ?)", params + (owner,)).rowcount
        if n == 0 and strict:
            row = con.execute("SELECT owner FROM runs WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] not in (None, owner):
                raise RunClaimed(f"run {key} was claimed by {row[0]} while this process "
                                 f"({owner}) trained it; its result is not recorded")
    try:
        _transact(path, update)
    finally:
        _drop(path, key)


def mark_finished(path: str | Path, key: str, *, val_loss: float, curve: list, tokens: int,
                  wall_s: float, tokens_per_s: float, env: dict,
                  owner: str | None = None) -> None:
    """Record the results and set status 'finished' -- only as the run's owner (default: this
    process): :class:`RunClaimed` (nothing written) when another process holds the claim."""
    _owner_guarded(path, key, owner_id() if owner is None else owner,
                   "UPDATE runs SET status = 'finished', finished = ?, val_loss = ?, "
                   "curve_json = ?, tokens = ?, wall_s = ?, tokens_per_s = ?, env_json = ? "
                   "WHERE key = ?",
                   (time.time(), float(val_loss), json.dumps(curve), int(tokens), float(wall_s),
                    float(tokens_per_s), json.dumps(env, sort_keys=True), key), strict=True)


def mark_failed(path: str | Path, key: str, error: str, *, owner: str | None = None) -> None:
    """Set status 'failed', keeping the error message in ``env_json['error']``; a finished row,
    or one another process has claimed, is left untouched (silently: the caller is already
    handling the error that failed the run, and that one should surface)."""
    _owner_guarded(path, key, owner_id() if owner is None else owner,
                   "UPDATE runs SET status = 'failed', env_json = ? WHERE key = ? "
                   "AND status != 'finished'", (json.dumps({"error": error}), key), strict=False)


def release(path: str | Path, key: str, *, owner: str | None = None) -> None:
    """Give up the claim on an unfinished run (it stays 'running', resumable from its
    ``last.pt``, and any process may claim it at once).  No effect unless ``owner`` (default:
    this process) holds it."""
    owner = owner_id() if owner is None else owner
    try:
        if Path(path).exists():
            _write(path, "UPDATE runs SET owner = NULL, heartbeat = NULL WHERE key = ? "
                   "AND owner = ? AND status = 'running'", (key, owner), create=False)
    finally:
        _drop(path, key)


# --- PTQ --------------------------------------------------------------------------------------

def record_ptq(path: str | Path, *, run_key: str, ckpt_tokens: int, fmt: str, bits: int,
               method: str, val_loss_before: float, val_loss_after: float, n_params: int) -> None:
    """Insert or replace one post-training-quantization result."""
    _write(path, f"INSERT OR REPLACE INTO ptq ({', '.join(PTQ_COLUMNS)}) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           (run_key, int(ckpt_tokens), fmt, int(bits), method, float(val_loss_before),
            float(val_loss_after), int(n_params)))


def ptq_done(path: str | Path, run_key: str) -> set[tuple[int, str, str]]:
    """``(ckpt_tokens, fmt, method)`` already recorded for ``run_key``."""
    return _read(path, lambda con: results.ptq_done(con, run_key), set())


def load_runs(path: str | Path, status: str | None = "finished") -> list[dict]:
    """Rows of ``runs`` (only ``status`` ones unless None), JSON columns decoded into
    ``config``, ``curve`` and ``env``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"results database not found: {path}")
    rows = _read(path, lambda con: results.run_rows(con, status), [])
    return [results.decode_json_columns(r) for r in rows]


def load_ptq(path: str | Path) -> list[dict]:
    """All rows of ``ptq`` as dicts."""
    if not Path(path).exists():
        raise FileNotFoundError(f"results database not found: {path}")
    return _read(path, results.ptq_rows, [])
