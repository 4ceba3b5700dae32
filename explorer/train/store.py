"""The results database: SQLite in WAL mode, one row per training run keyed by a config hash.

Schema (see docs/training.md)::

    runs(key TEXT PRIMARY KEY, status TEXT ('running'|'finished'|'failed'), created REAL,
         finished REAL, config_json TEXT, n_params INTEGER, tokens INTEGER, exp_bits INTEGER,
         man_bits INTEGER, block TEXT, fmt TEXT, targets TEXT, val_loss REAL, curve_json TEXT,
         wall_s REAL, tokens_per_s REAL, env_json TEXT)
    ptq(run_key TEXT, ckpt_tokens INTEGER, fmt TEXT, bits INTEGER, method TEXT,
        val_loss_before REAL, val_loss_after REAL, n_params INTEGER,
        PRIMARY KEY(run_key, ckpt_tokens, fmt, method))

Times are Unix seconds; losses are mean cross-entropy in nats per token; ``tokens`` is the
number of training tokens actually seen.  Every write is one short ``BEGIN IMMEDIATE``
transaction with a long busy timeout, so several worker processes can write to one file without
losing rows.  Every read goes through :mod:`explorer.results` (the one reader of these tables,
which the analyzer and the report use read-only); this module, like that one, imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import results

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, created REAL, finished REAL, config_json TEXT,
    n_params INTEGER, tokens INTEGER, exp_bits INTEGER, man_bits INTEGER, block TEXT, fmt TEXT,
    targets TEXT, val_loss REAL, curve_json TEXT, wall_s REAL, tokens_per_s REAL, env_json TEXT);
CREATE TABLE IF NOT EXISTS ptq (
    run_key TEXT, ckpt_tokens INTEGER, fmt TEXT, bits INTEGER, method TEXT,
    val_loss_before REAL, val_loss_after REAL, n_params INTEGER,
    PRIMARY KEY (run_key, ckpt_tokens, fmt, method));
"""

RUN_COLUMNS = ("key", "status", "created", "finished", "config_json", "n_params", "tokens",
               "exp_bits", "man_bits", "block", "fmt", "targets", "val_loss", "curve_json",
               "wall_s", "tokens_per_s", "env_json")
PTQ_COLUMNS = ("run_key", "ckpt_tokens", "fmt", "bits", "method", "val_loss_before",
               "val_loss_after", "n_params")


def run_key(config: dict) -> str:
    """The run's identity: SHA-256 (first 24 hex digits) of its canonical JSON configuration."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database in WAL mode with a 120 s busy timeout."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path), timeout=120.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    for attempt in range(50):
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(SCHEMA)
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.05 * (attempt + 1))
    return con


def _write(path: str | Path, sql: str, params: Iterable[Any]) -> None:
    con = connect(path)
    try:
        for attempt in range(100):
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute(sql, tuple(params))
                con.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.02 * (attempt + 1))
    finally:
        con.close()


def _read(path: str | Path, query: Callable[[sqlite3.Connection], Any]) -> Any:
    """``query(con)`` on a connection from :func:`connect` (which creates the schema, so a
    database another worker has only just created reads as empty)."""
    con = connect(path)
    try:
        return query(con)
    finally:
        con.close()


def get_run(path: str | Path, key: str) -> dict | None:
    """The row for ``key`` as a dict, or None."""
    if not Path(path).exists():
        return None
    return _read(path, lambda con: results.run_row(con, key))


def finished_keys(path: str | Path) -> set[str]:
    """Keys of every finished run."""
    if not Path(path).exists():
        return set()
    return _read(path, results.finished_keys)


def mark_running(path: str | Path, key: str, config: dict, *, n_params: int, tokens: int,
                 exp_bits: int | None, man_bits: int | None, block: str | None, fmt: str,
                 targets: str) -> None:
    """Insert the row as 'running' (or flip a 'failed'/'running' row back); a finished row is
    left untouched."""
    _write(path,
           "INSERT INTO runs (key, status, created, config_json, n_params, tokens, exp_bits, "
           "man_bits, block, fmt, targets) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT(key) DO UPDATE SET status = 'running' WHERE runs.status != 'finished'",
           (key, time.time(), json.dumps(config, sort_keys=True), n_params, tokens, exp_bits,
            man_bits, block, fmt, targets))


def mark_finished(path: str | Path, key: str, *, val_loss: float, curve: list, tokens: int,
                  wall_s: float, tokens_per_s: float, env: dict) -> None:
    """Record the results and set status 'finished'."""
    _write(path,
           "UPDATE runs SET status = 'finished', finished = ?, val_loss = ?, curve_json = ?, "
           "tokens = ?, wall_s = ?, tokens_per_s = ?, env_json = ? WHERE key = ?",
           (time.time(), float(val_loss), json.dumps(curve), int(tokens), float(wall_s),
            float(tokens_per_s), json.dumps(env, sort_keys=True), key))


def mark_failed(path: str | Path, key: str, error: str) -> None:
    """Set status 'failed', keeping the error message in ``env_json['error']``."""
    _write(path, "UPDATE runs SET status = 'failed', env_json = ? WHERE key = ? "
           "AND status != 'finished'", (json.dumps({"error": error}), key))


def record_ptq(path: str | Path, *, run_key: str, ckpt_tokens: int, fmt: str, bits: int,
               method: str, val_loss_before: float, val_loss_after: float, n_params: int) -> None:
    """Insert or replace one post-training-quantization result."""
    _write(path, f"INSERT OR REPLACE INTO ptq ({', '.join(PTQ_COLUMNS)}) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           (run_key, int(ckpt_tokens), fmt, int(bits), method, float(val_loss_before),
            float(val_loss_after), int(n_params)))


def ptq_done(path: str | Path, run_key: str) -> set[tuple[int, str, str]]:
    """``(ckpt_tokens, fmt, method)`` already recorded for ``run_key``."""
    if not Path(path).exists():
        return set()
    return _read(path, lambda con: results.ptq_done(con, run_key))


def load_runs(path: str | Path, status: str | None = "finished") -> list[dict]:
    """Rows of ``runs`` (only ``status`` ones unless None), JSON columns decoded into
    ``config``, ``curve`` and ``env``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"results database not found: {path}")
    rows = _read(path, lambda con: results.run_rows(con, status))
    return [results.decode_json_columns(r) for r in rows]


def load_ptq(path: str | Path) -> list[dict]:
    """All rows of ``ptq`` as dicts."""
    if not Path(path).exists():
        raise FileNotFoundError(f"results database not found: {path}")
    return _read(path, results.ptq_rows)
