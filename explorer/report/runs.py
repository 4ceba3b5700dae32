"""Reading finished training runs from the results database (plain sqlite3, no torch).

The schema is the shared contract of ``explorer.train.store``: table ``runs`` with one row per
training run (N = non-embedding GEMM parameters, D = training tokens, E/M = element format bits,
NULL for the unquantized baseline, ``block`` = '32' | 'channel' | 'tensor' | NULL).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: log2 B the paper uses for channel-wise scaling (Sun et al.); 'tensor' is treated alike.
CHANNEL_LOG2B = 13.1567


@dataclass(frozen=True)
class Run:
    """One finished run: sizes, format and measured validation loss (nats/token)."""

    key: str
    n_params: int
    tokens: int
    exp_bits: int | None
    man_bits: int | None
    block: str | None
    fmt: str
    val_loss: float
    curve: tuple[tuple[float, float], ...]

    @property
    def quantized(self) -> bool:
        return self.exp_bits is not None and self.man_bits is not None

    @property
    def log2_block(self) -> float:
        """log2 of the block size for the law: ints as given, channel/tensor = 13.1567."""
        if self.block in (None, "", "channel", "tensor"):
            return CHANNEL_LOG2B
        return math.log2(int(self.block))

    @property
    def label(self) -> str:
        return f"{self.fmt}" + (f"/{self.block}" if self.block else "")


def load_runs(path: str | Path) -> list[Run]:
    """Finished runs with a validation loss, ordered by (N, D, format).

    Raises FileNotFoundError for a missing file and ValueError when it is not a results
    database (no ``runs`` table).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--runs: no such results database: {p}")
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        try:
            rows = con.execute(
                "SELECT key, n_params, tokens, exp_bits, man_bits, block, fmt, val_loss, curve_json "
                "FROM runs WHERE status = 'finished' AND val_loss IS NOT NULL").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"--runs: {p} is not a results database ({exc})") from None
    finally:
        con.close()
    runs = []
    for key, n, d, e, m, block, fmt, loss, curve_json in rows:
        try:
            curve = tuple((float(t), float(v)) for t, v in json.loads(curve_json or "[]"))
        except (ValueError, TypeError):
            curve = ()
        runs.append(Run(str(key), int(n), int(d), None if e is None else int(e),
                        None if m is None else int(m), None if block is None else str(block),
                        str(fmt or "none"), float(loss), curve))
    runs.sort(key=lambda r: (r.n_params, r.tokens, r.fmt, r.block or ""))
    return runs


def fit_arrays(runs: list[Run]) -> dict[str, np.ndarray]:
    """Arrays N, D, E, M, B (log2 block size is converted back to B = 2**log2B), loss for the
    quantized runs, in the keyword form ``fit_capybara`` takes."""
    q = [r for r in runs if r.quantized]
    return {
        "N": np.array([r.n_params for r in q], dtype=float),
        "D": np.array([r.tokens for r in q], dtype=float),
        "E": np.array([r.exp_bits for r in q], dtype=float),
        "M": np.array([r.man_bits for r in q], dtype=float),
        "B": np.array([2.0 ** r.log2_block for r in q], dtype=float),
        "loss": np.array([r.val_loss for r in q], dtype=float),
    }
