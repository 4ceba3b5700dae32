"""`fpx report --runs`: measured sweep and fit diagnostics from a results database.

The database is synthetic: losses from the paper's law with 0.3% noise on a small grid of
(N, D, E, M), written with the shared results-store schema.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from explorer.blocks import CHANNEL_LOG2B
from explorer.laws import CapybaraLaw
from explorer.report import ReportConfig, build_report
from explorer.report.runs import load_runs
from explorer.train.store import SCHEMA


def _make_db(path, noise=0.003, seed=0):
    law = CapybaraLaw.paper()
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    i = 0
    for N in (4e7, 1e8, 2.5e8, 6e8):
        for D in (1e10, 3e10, 1e11):
            for E, M, block in ((2, 1, "32"), (3, 2, "channel"), (4, 3, "128"), (1, 2, "channel"),
                                (2, 3, "64"), (5, 2, "channel")):
                B = 2 ** CHANNEL_LOG2B if block == "channel" else int(block)
                loss = float(law.loss(N, D, E, M, B)) * (1 + noise * rng.standard_normal())
                curve = [[D * f, loss + 0.5 * (1 - f)] for f in (0.25, 0.5, 1.0)]
                con.execute("INSERT INTO runs (key, status, n_params, tokens, exp_bits, man_bits, "
                            "block, fmt, val_loss, curve_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (f"run{i:03d}", "finished", int(N), int(D), E, M, block, f"e{E}m{M}",
                             loss, json.dumps(curve)))
                i += 1
    con.execute("INSERT INTO runs (key, status, n_params, tokens, fmt, val_loss) VALUES "
                "('base', 'finished', 40000000, 10000000000, 'none', 3.0)")
    con.execute("INSERT INTO runs (key, status, n_params, tokens, fmt) VALUES "
                "('busy', 'running', 40000000, 10000000000, 'e2m1')")
    con.commit()
    con.close()
    return i


def test_load_runs(tmp_path):
    db = tmp_path / "runs.db"
    n = _make_db(db)
    runs = load_runs(db)
    assert len(runs) == n + 1                      # the running one is left out
    base = [r for r in runs if r.key == "base"][0]
    assert not base.quantized and base.log2_block == CHANNEL_LOG2B
    r32 = [r for r in runs if r.block == "32"][0]
    assert r32.log2_block == 5 and len(r32.curve) == 3
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(ValueError, match="not a results database"):
        load_runs(bad)
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "missing.db")


def test_report_with_runs(tmp_path):
    db = tmp_path / "runs.db"
    _make_db(db)
    paths = build_report(tmp_path / "rep", ReportConfig(runs=db, bits=(8,), sqnr_samples=1024),
                         progress=False)
    md = paths.markdown.read_text()
    assert "## Measured sweep" in md and "## Fit diagnostics" in md
    names = {p.name for p in paths.figures}
    assert {"sweep_curves.png", "fit_diagnostics.png"} <= names
    # the synthetic data follow the paper's law: the fit's residuals must be near the 0.3% noise
    m = [ln for ln in md.splitlines() if "relative residuals have RMS" in ln][0]
    rms = float(m.split("RMS ")[1].split("%")[0])
    assert rms < 1.0
    assert "Leave-one-model-size-out" in md
    # intervals and identification marks beside the paper's constants, and the layouts verdict
    assert "95% interval" in md and "identified by these runs" in md
    assert "best E/M split" in md
