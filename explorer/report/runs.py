"""Finished training runs as the report shows them, read from the results database.

Rows come through :mod:`explorer.results` (plain sqlite3, no torch); the columns are those of the
``runs`` table of ``explorer.train.store`` (N = non-embedding GEMM parameters, D = training
tokens, E/M = element format bits, ``block`` = '32' | 'channel' | 'tensor' | NULL, ``recipe`` /
``recipe_hash`` = the training recipe).  E/M are NULL both for the unquantized baseline and for
a run with a recipe (several formats); :attr:`Run.baseline` and :attr:`Run.quantized` tell them
apart (:func:`explorer.results.is_baseline_run`), so a recipe run is never a baseline and never
a point of the format law.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer import results


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
    seed: int | None = None          # the run's seed (init, data order); None: not recorded
    targets: str | None = None       # comma-separated GEMM inputs quantized; None: baseline
    recipe: str | None = None        # the training recipe's name; None: no recipe
    recipe_hash: str | None = None   # its content hash (16 hex digits); None: no recipe
    #: GEMMs through an emulated accumulator, matrix unit or Hadamard transform (such a run is
    #: no baseline even with nothing quantized)
    emulated: bool = False

    @property
    def quantized(self) -> bool:
        """Quantized with one element format (E/M known): a point of the format law.  False for
        the baseline and for a recipe run."""
        return self.exp_bits is not None and self.man_bits is not None

    @property
    def baseline(self) -> bool:
        """The unquantized baseline (:func:`explorer.results.is_baseline_run`)."""
        return not self.emulated and results.is_baseline_run(
            {"exp_bits": self.exp_bits, "man_bits": self.man_bits, "fmt": self.fmt,
             "recipe": self.recipe, "targets": self.targets})

    @property
    def log2_block(self) -> float:
        """log2 of the block size for the law: ints as given, channel/tensor = 13.1567, no
        block recorded = per-tensor (:func:`explorer.results.run_log2_block`)."""
        return results.run_log2_block(self.block)

    @property
    def label(self) -> str:
        """``e2m1/32``, ``none``, or for a recipe run ``recipe:NAME``."""
        if self.recipe is not None:
            return f"{results.RECIPE_FMT}:{self.recipe}"
        return f"{self.fmt}" + (f"/{self.block}" if self.block else "")


def _curve(curve_json: str | None) -> tuple[tuple[float, float], ...]:
    """The (tokens, validation loss) points of a run; none when the column is unreadable, so
    one damaged row costs its curve, not the report."""
    try:
        return tuple((float(t), float(v)) for t, v in json.loads(curve_json or "[]"))
    except (ValueError, TypeError):
        return ()


def _seed(config_json: str | None) -> int | None:
    """The training seed recorded in a run's config; None when the column is unreadable or has
    none (runs with one seed each then pair as if they shared it)."""
    try:
        seed = json.loads(config_json or "{}").get("train", {}).get("seed")
    except (ValueError, TypeError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _recipe(row: dict) -> tuple[str | None, str | None]:
    """(recipe, recipe_hash) of a row: None for none (and for a database from before recipes,
    which has no such columns); a row marked ``fmt = 'recipe'`` without a name reads as recipe
    ``"?"``, so it still is no baseline."""
    name, digest = row.get("recipe"), row.get("recipe_hash")
    if results.is_recipe_run(row):
        return str(name or "?"), None if digest is None else str(digest)
    return None, None


def load_runs(path: str | Path) -> list[Run]:
    """Finished runs with a validation loss, ordered by (N, D, format).

    Raises FileNotFoundError for a missing file and ValueError when it is not a results
    database (no ``runs`` table).
    """
    with results.read_only(path, name="--runs") as con:
        rows = results.measured_runs(con)
    runs = [Run(str(r["key"]), int(r["n_params"]), int(r["tokens"]),
                None if r["exp_bits"] is None else int(r["exp_bits"]),
                None if r["man_bits"] is None else int(r["man_bits"]),
                None if r["block"] is None else str(r["block"]), str(r["fmt"] or "none"),
                float(r["val_loss"]), _curve(r["curve_json"]), _seed(r["config_json"]),
                None if results.is_baseline_run(r) else (r["targets"] or None),
                *_recipe(r), results.emulates_gemms(r["config_json"]))
            for r in rows]
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
