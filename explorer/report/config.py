"""The settings of one report (a frozen dataclass, validated on construction)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from explorer.accumulation import parse_accumulator
from explorer.blocks import CHANNEL_LOG2B, block_log2, parse_block
from explorer.fit import check_bootstrap
from explorer.metrics import MAX_SAMPLES
from fpformat import FloatFormat, get_format
from fpformat.units import get_unit

#: The bit widths the detailed sections cover by default (the 4-8 bit band hardware targets).
DEFAULT_BITS: tuple[int, ...] = (4, 5, 6, 7, 8)
#: Bootstrap resamples behind the fitted constants' intervals (as `fpx fit`'s default).
FIT_BOOTSTRAP = 200


@dataclass(frozen=True)
class ReportConfig:
    """What a report covers.

    Args:
        runs: results database (SQLite, ``explorer.train.store`` schema) or None for law-only.
        law: ``"paper"`` (Sun et al. Table 2 constants) or the path of a ``fpx fit`` JSON file.
        propose: format spec strings (``get_format`` grammar, e.g. ``"e3m4b5"``) that each get
            their own section.
        bits: total widths P = E + M + 1 of the detailed recommendation table (2..24).
        params: model size N (non-embedding parameters) for the critical data size and the
            predicted losses.
        tokens: training tokens D for the predicted losses; None = 20·N (Chinchilla ratio).
        budget: compute budget C (k·P·N·D units, k = 6/16) for the compute-optimal precision.
        block: scaling block of the predicted losses: an int block size >= 2, ``"channel"`` or
            ``"tensor"`` (both log2 B = 13.1567, the paper's channel-wise value); parsed by
            :func:`explorer.blocks.parse_block`.  Block 1 has no quantization penalty, so the
            report's compute-optimal precision would not exist.
        sqnr_samples: elements per distribution for the measured SQNR (keep it modest: the
            default report must finish in a minute on two cores).
        fit_bootstrap: bootstrap resamples of the fit-diagnostics section's intervals (0..
            ``explorer.fit.MAX_BOOTSTRAP``; 0 = no intervals, so no constant is judged by its
            interval, only by the fit's bounds).
        seed: seed of the random test data.
        accumulators: accumulator specs (``explorer.accumulation.parse_accumulator``, e.g.
            ``"e8m13/rtz"``, ``"e8m13/rtz/chunk128"``) for the accumulation-error section; empty:
            no such section.
        matrix_units: matrix units (preset names like ``"h100"`` or specs like
            ``"fma16/x2/rtz"``, :func:`fpformat.units.get_unit`) for the matrix-unit section
            (:mod:`explorer.units_study`); empty: no such section.
        matrix_unit_format: the units' input format (default float16; outputs float32).
        command_line: the command line shown in the reproducibility section.
    """

    runs: str | Path | None = None
    law: str = "paper"
    propose: tuple[str, ...] = ()
    bits: tuple[int, ...] = DEFAULT_BITS
    params: float = 1e9
    tokens: float | None = None
    budget: float = 1e23
    block: int | str = "channel"
    sqnr_samples: int = 1 << 14
    fit_bootstrap: int = FIT_BOOTSTRAP
    seed: int = 0
    accumulators: tuple[str, ...] = ()
    matrix_units: tuple[str, ...] = ()
    matrix_unit_format: str = "float16"
    command_line: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "propose", tuple(self.propose))
        object.__setattr__(self, "accumulators", tuple(self.accumulators))
        if self.accumulators:
            for spec in self.accumulators:
                parse_accumulator(spec)                  # ValueError naming the bad part
        object.__setattr__(self, "matrix_units", tuple(self.matrix_units))
        if self.matrix_units:
            self._check_matrix_units()
        object.__setattr__(self, "bits", tuple(sorted(set(int(b) for b in self.bits))))
        if not self.bits:
            raise ValueError("bits must name at least one width")
        for b in self.bits:
            if not 2 <= b <= 24:
                raise ValueError(f"bits must be in 2..24 (P = E + M + 1), got {b}")
        for pname in ("params", "budget"):
            v = getattr(self, pname)
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or v <= 0):
                raise ValueError(f"{pname} must be a positive finite number, got {v!r}")
        if self.tokens is not None and (not math.isfinite(self.tokens) or self.tokens <= 0):
            raise ValueError(f"tokens must be a positive finite number, got {self.tokens!r}")
        object.__setattr__(self, "block", parse_block(self.block, allow_none=False))
        if block_log2(self.block) == 0:
            raise ValueError("block: block size 1 has no quantization penalty, so the report's "
                             "compute-optimal precision does not exist; give 2 or more, "
                             "'channel' or 'tensor'")
        if not 256 <= self.sqnr_samples <= MAX_SAMPLES:
            raise ValueError(f"sqnr_samples must be in 256..{MAX_SAMPLES}, got "
                             f"{self.sqnr_samples}")
        try:
            check_bootstrap(self.fit_bootstrap)
        except ValueError as exc:
            raise ValueError(f"fit_{exc}") from None
        if not isinstance(self.law, str) or not self.law:
            raise ValueError("law must be 'paper' or the path of a fit JSON file")

    def _check_matrix_units(self) -> None:
        """``ValueError`` naming the unit or format that the matrix-unit section cannot use."""
        try:
            fi = get_format(self.matrix_unit_format)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"matrix_unit_format {self.matrix_unit_format!r}: {e}") from None
        if not isinstance(fi, FloatFormat):
            raise ValueError(f"matrix_unit_format must be an element format, got "
                             f"{self.matrix_unit_format!r}")
        if len(set(self.matrix_units)) != len(self.matrix_units):
            raise ValueError(f"matrix_units: each unit once, got {' '.join(self.matrix_units)}")
        for name in self.matrix_units:
            try:
                get_unit(name, fi, "float32").tuples(fi, get_format("float32"))
            except (TypeError, ValueError) as e:
                raise ValueError(f"matrix unit {name!r}: {e}") from None

    @property
    def tokens_or_default(self) -> float:
        """D used for predicted losses: ``tokens`` or 20·N."""
        return float(self.tokens) if self.tokens is not None else 20.0 * float(self.params)

    @property
    def log2_block(self) -> float:
        """log2 B of :attr:`block` for the law (channel and tensor: 13.1567)."""
        return block_log2(self.block)

    @property
    def block_label(self) -> str:
        """How the report names the block: ``"B = 32"`` or ``"channel-wise (log2 B = ...)"``
        (tensor-wise scaling shares channel-wise's log2 B)."""
        if isinstance(self.block, str):
            return f"channel-wise (log2 B = {CHANNEL_LOG2B})"
        return f"B = {self.block}"
