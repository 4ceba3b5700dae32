"""Reading the results database: every query of its ``runs`` and ``ptq`` tables (sqlite3 only).

The schema and every write belong to :mod:`explorer.train.store`, which reads through this module
too; this module imports neither it nor torch, so the analyzer and the report read runs without
torch.  Table ``runs`` has one row per training run (``n_params`` N = non-embedding GEMM
parameters, ``tokens`` D, ``exp_bits``/``man_bits`` E/M, ``block`` = ``'32'`` | ``'channel'`` |
``'tensor'`` | NULL, ``val_loss`` in nats per token, ``recipe``/``recipe_hash`` the training
recipe's name and content hash or NULL); table ``ptq`` one row per post-training quantization of
a checkpoint.

NULL E/M means two different things: the unquantized baseline, and a run trained with a recipe
(``fmt = 'recipe'``: several formats, no single E/M).  :func:`is_recipe_run` and
:func:`is_baseline_run` tell them apart; every reader that needs a baseline, or feeds the
format law, asks them rather than testing E/M for NULL.  Databases from before recipes have no
``recipe`` columns: their rows read as having none.

Two ways in:

* :func:`read_only` opens a file read-only (``mode=ro``) for the analyzer and the report;
* the row functions (:func:`run_rows`, :func:`measured_runs`, ...) take an open connection, so the
  store passes its own (write-ahead log, busy timeout, schema created on first use).

Rows come back as dicts keyed by column name, whatever the connection's ``row_factory``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .blocks import block_log2


@contextmanager
def read_only(path: str | Path, *, name: str = "") -> Iterator[sqlite3.Connection]:
    """A read-only connection to the results database at ``path``, closed on exit.

    ``FileNotFoundError`` when the file does not exist; ``ValueError`` when SQLite cannot read it
    or it lacks the tables (raised by the queries inside the ``with`` block).  ``name`` (e.g.
    ``"--runs"``) prefixes both messages.
    """
    prefix = f"{name}: " if name else ""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{prefix}no such results database: {p}")
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{prefix}{p} is not a results database ({exc})") from None
    try:
        yield con
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{prefix}{p} is not a results database ({exc})") from None
    finally:
        con.close()


def _rows(con: sqlite3.Connection, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


#: The recipe columns of ``runs`` (text); a database from before recipes lacks them, and its rows
#: read them as None.
RECIPE_COLUMNS = ("recipe", "recipe_hash")


def _run_dicts(con: sqlite3.Connection, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """Rows of a ``SELECT * FROM runs`` query, with :data:`RECIPE_COLUMNS` present (None) in
    rows of a database from before them."""
    rows = _rows(con, sql, params)
    for r in rows:
        for c in RECIPE_COLUMNS:
            r.setdefault(c, None)
    return rows


def table_columns(con: sqlite3.Connection) -> dict[str, set[str]]:
    """``{table: {column, ...}}`` of every table of the database (SQLite's internal ones left
    out); ``{}`` for a database with no tables yet.  ``sqlite3.DatabaseError`` for a file that is
    not SQLite."""
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%'")]
    return {t: {r[1] for r in con.execute('PRAGMA table_info("{}")'.format(t.replace('"', '""')))}
            for t in tables}


def run_rows(con: sqlite3.Connection, status: str | None = "finished") -> list[dict[str, Any]]:
    """Rows of ``runs`` with this ``status`` (None: every row), oldest first."""
    where = " WHERE status = ?" if status else ""
    return _run_dicts(con, f"SELECT * FROM runs{where} ORDER BY created, rowid",
                      (status,) if status else ())


def run_row(con: sqlite3.Connection, key: str) -> dict[str, Any] | None:
    """The row of run ``key``, or None."""
    rows = _run_dicts(con, "SELECT * FROM runs WHERE key = ?", (key,))
    return rows[0] if rows else None


def finished_keys(con: sqlite3.Connection) -> set[str]:
    """Keys of every finished run."""
    return {r["key"] for r in _rows(con, "SELECT key FROM runs WHERE status = 'finished'")}


def measured_runs(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Finished runs that have a validation loss (what a fit can use), in the order they were
    inserted."""
    return _run_dicts(con, "SELECT * FROM runs WHERE status = 'finished' "
                           "AND val_loss IS NOT NULL ORDER BY rowid")


def ptq_rows(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every row of ``ptq``, by run key and checkpoint tokens."""
    return _rows(con, "SELECT * FROM ptq ORDER BY run_key, ckpt_tokens")


def measured_ptq(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Rows of ``ptq`` with both losses (before and after quantization), in insertion order."""
    return _rows(con, "SELECT * FROM ptq WHERE val_loss_before IS NOT NULL "
                      "AND val_loss_after IS NOT NULL ORDER BY rowid")


def ptq_done(con: sqlite3.Connection, run_key: str) -> set[tuple[int, str, str]]:
    """``(ckpt_tokens, fmt, method)`` already recorded for ``run_key``."""
    rows = _rows(con, "SELECT ckpt_tokens, fmt, method FROM ptq WHERE run_key = ?", (run_key,))
    return {(r["ckpt_tokens"], r["fmt"], r["method"]) for r in rows}


#: ``runs.fmt`` of a run trained with a training recipe (:mod:`explorer.train.recipes`).
RECIPE_FMT = "recipe"


def is_recipe_run(row: Mapping[str, Any]) -> bool:
    """Whether the ``runs`` row (a dict, or a CSV row with those column names) was trained with
    a training recipe: it names one, or its ``fmt`` is :data:`RECIPE_FMT`.  Such a run has no
    single E/M: it is never the unquantized baseline and never a point of the format law."""
    return bool((row.get("recipe") or "").strip()) or row.get("fmt") == RECIPE_FMT


def is_baseline_run(row: Mapping[str, Any]) -> bool:
    """Whether the ``runs`` row is an unquantized baseline: no E/M, no recipe
    (:func:`is_recipe_run`), no quantized GEMM input (``targets`` empty or NULL; a run with
    per-input formats only has NULL E/M too, but quantized inputs), and GEMMs computed by torch
    (its stored config names no emulated accumulator, matrix unit or transform: such a run
    has ``fmt = 'none'`` and no targets too)."""
    return (row.get("exp_bits") is None and row.get("man_bits") is None
            and not is_recipe_run(row) and not (row.get("targets") or "").strip()
            and not emulates_gemms(row.get("config_json")))


def emulates_gemms(config_json: object) -> bool:
    """Whether a stored run config runs its GEMMs through an emulated accumulator, a matrix
    unit or a Hadamard transform (unreadable or absent config: False)."""
    try:
        quant = json.loads(config_json).get("quant") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return isinstance(quant, dict) and any(quant.get(k) for k in
                                           ("accumulator", "matrix_unit", "transforms"))


def decode_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``config_json``, ``curve_json`` and ``env_json`` decoded into ``config``
    (None when empty), ``curve`` (``[]``) and ``env`` (``{}``); the raw columns stay."""
    row["config"] = json.loads(row["config_json"]) if row["config_json"] else None
    row["curve"] = json.loads(row["curve_json"]) if row["curve_json"] else []
    row["env"] = json.loads(row["env_json"]) if row["env_json"] else {}
    return row


def run_log2_block(block: str | None) -> float:
    """log2 B of a ``runs.block`` value: an integer as text, ``'channel'`` or ``'tensor'``; NULL
    or empty (a quantized run recorded without a block size) counts as per-tensor scaling."""
    return block_log2(block or "tensor")
