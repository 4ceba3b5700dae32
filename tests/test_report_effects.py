"""Measured effects in the report (explorer.report.effects): paired differences, intervals, loss
against D, and the section the report builds from them.

The results database is synthetic and tiny: losses = a per-seed offset (what pairing must cancel)
+ a known effect per format and block + a falling function of D, written with the results-store
schema; no training.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.blocks import CHANNEL_LOG2B
from explorer.laws import CapybaraLaw
from explorer.report import ReportConfig, build_report
from explorer.report import effects as ef
from explorer.report.runs import load_runs
from explorer.train.store import SCHEMA

N = 25088
SEEDS = (0, 1, 2)
SEED_OFFSET = {0: 0.0, 1: 0.05, 2: -0.03}          # seed noise, shared by a seed's runs
# (fmt, E, M, block): effect over the unquantized loss, nats
FORMATS = {("e1m2", 1, 2, "32"): 0.010, ("e2m1", 2, 1, "32"): 0.025,
           ("e3m0", 3, 0, "32"): 0.070, ("e2m1", 2, 1, "8"): 0.015,
           ("e2m1", 2, 1, "channel"): 0.040}
TOKENS = (262144, 524288, 1048576)


def _base(d: int) -> float:
    return 2.5 + 2e2 / d ** 0.5


def _insert(con, key, *, n, d, fmt, e, m, block, seed, loss, targets="fwd_x,fwd_w"):
    cfg = {"train": {"seed": seed}} if seed is not None else None
    con.execute("INSERT INTO runs (key, status, n_params, tokens, exp_bits, man_bits, block, fmt, "
                "targets, val_loss, curve_json, config_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, "finished", n, d, e, m, block, fmt, targets if e is not None else "",
                 loss, json.dumps([[d / 2, loss + 0.3], [d, loss]]),
                 None if cfg is None else json.dumps(cfg)))


def _make_db(path, *, seeds=SEEDS):
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    i = 0
    for d in TOKENS:
        for s in seeds:
            _insert(con, f"b{i}", n=N, d=d, fmt="none", e=None, m=None, block=None, seed=s,
                    loss=_base(d) + SEED_OFFSET[s])
            i += 1
            for (fmt, e, m, block), eff in FORMATS.items():
                _insert(con, f"q{i}", n=N, d=d, fmt=fmt, e=e, m=m, block=block, seed=s,
                        loss=_base(d) + SEED_OFFSET[s] + eff)
                i += 1
    # a quantized run of a seed without a baseline, and a failed run: neither may pair
    _insert(con, "lonely", n=N, d=TOKENS[0], fmt="e2m1", e=2, m=1, block="32", seed=7, loss=9.0)
    con.execute("INSERT INTO runs (key, status, n_params, tokens, fmt) VALUES "
                "('failed', 'failed', 25088, 262144, 'e1m2')")
    con.commit()
    con.close()


@pytest.fixture()
def runs(tmp_path):
    db = tmp_path / "effects.db"
    _make_db(db)
    return load_runs(db)


LAW = CapybaraLaw.paper()


# ----------------------------------------------------------------------------------- intervals
def test_mean_interval_known_values():
    iv = ef.mean_interval([1.0, 2.0, 3.0])
    # two degrees of freedom have a closed-form t quantile: (2p - 1) / sqrt(2 p (1 - p))
    t = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    half = t / math.sqrt(3)                          # t * sd / sqrt(n), sd = 1
    assert iv.mean == 2.0 and iv.sd == 1.0 and iv.n == 3
    assert iv.lo == pytest.approx(2 - half, rel=1e-12)
    assert iv.hi == pytest.approx(2 + half, rel=1e-12)
    assert not iv.excludes_zero
    assert ef.mean_interval([0.1, 0.12, 0.11]).excludes_zero
    assert ef.mean_interval([-0.1, -0.12, -0.11]).excludes_zero
    one = ef.mean_interval([0.5])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.lo) and math.isnan(one.hi)
    assert not one.excludes_zero                     # no interval: never "shown"


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_mean_interval_rejects(bad):
    with pytest.raises(ValueError, match="values"):
        ef.mean_interval(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12),
       st.floats(-5, 5, allow_nan=False))
def test_mean_interval_properties(values, shift):
    iv = ef.mean_interval(values)
    assert iv.lo <= iv.mean <= iv.hi
    moved = ef.mean_interval([v + shift for v in values])
    assert moved.mean == pytest.approx(iv.mean + shift, abs=1e-9)
    assert moved.hi - moved.lo == pytest.approx(iv.hi - iv.lo, abs=1e-7)
    # the half-width is t * sd / sqrt(n), larger than the plain standard error
    assert (iv.hi - iv.lo) / 2 >= iv.sd / math.sqrt(iv.n) - 1e-12


# ----------------------------------------------------------------------------------- pairing
def test_em_effects_cancel_seed_offsets(runs):
    em = ef.em_effects(runs, LAW)
    labels = {(e.label, e.tokens) for e in em}
    assert labels == {(lab, d) for d in TOKENS for lab in ("e2m1 − e1m2", "e3m0 − e2m1")}
    for e in em:
        want = (FORMATS[("e2m1", 2, 1, "32")] - FORMATS[("e1m2", 1, 2, "32")]
                if e.label == "e2m1 − e1m2" else
                FORMATS[("e3m0", 3, 0, "32")] - FORMATS[("e2m1", 2, 1, "32")])
        assert e.block == "32" and e.n_params == N and e.interval.n == len(SEEDS)
        assert e.diffs == pytest.approx([want] * 3, abs=1e-12)   # seed offsets gone
        assert e.interval.excludes_zero
        E, M = (2, 1) if e.label.startswith("e2m1") else (3, 0)
        pred = (LAW.penalty(N, e.tokens, E, M, 32) - LAW.penalty(N, e.tokens, E - 1, M + 1, 32))
        assert e.predicted == pytest.approx(float(pred), rel=1e-12)


def test_block_effects_against_smallest_block(runs):
    blk = ef.block_effects(runs, LAW)
    assert {e.label for e in blk} == {"e2m1 @32 − @8", "e2m1 @channel − @8"}
    for e in blk:
        big = "32" if "@32" in e.label else "channel"
        want = FORMATS[("e2m1", 2, 1, big)] - FORMATS[("e2m1", 2, 1, "8")]
        assert e.diffs == pytest.approx([want] * 3, abs=1e-12)
        B = 32 if big == "32" else 2.0 ** CHANNEL_LOG2B
        pred = LAW.penalty(N, e.tokens, 2, 1, B) - LAW.penalty(N, e.tokens, 2, 1, 8)
        assert e.predicted == pytest.approx(float(pred), rel=1e-12)
        assert e.predicted > 0                       # the law: larger blocks cost loss


def test_gap_effects_pair_by_seed_only(runs):
    gaps = ef.gap_effects(runs, LAW)
    assert len(gaps) == len(FORMATS) * len(TOKENS)
    for g in gaps:
        assert g.interval.n == len(SEEDS)            # the seed-7 run has no baseline
        want = FORMATS[(g.label, *next((e, m) for (f, e, m, b) in FORMATS
                                       if f == g.label), g.block)]
        assert g.interval.mean == pytest.approx(want, abs=1e-12)
        r = next(r for r in runs if r.fmt == g.label and r.block == g.block and r.seed == 0
                 and r.tokens == g.tokens)
        assert g.predicted == pytest.approx(float(LAW.penalty(N, g.tokens, r.exp_bits,
                                                              r.man_bits, 2.0 ** r.log2_block)))


def test_pooled_and_shown(runs):
    em = ef.em_effects(runs, LAW)
    pool = ef.pooled(em)
    assert {p.label for p in pool} == {"e2m1 − e1m2", "e3m0 − e2m1"}
    for p in pool:
        assert p.n_params is None and p.cells == len(TOKENS)
        assert p.interval.n == len(TOKENS) * len(SEEDS)
        assert p.cell.startswith("pooled, 3 cells")
        per_cell = [e.predicted for e in em if e.label == p.label]
        assert p.predicted == pytest.approx(np.mean(per_cell))
    rows = ef.shown(em)
    assert len(rows) == len(em) + len(pool)
    assert ef.shown(em, max_rows=3) == pool          # too many: the pooled ones only


def test_targets_label():
    assert ef._targets("fwd_x,fwd_w,dgrad_dy,dgrad_w,wgrad_dy,wgrad_x") == "all six"
    assert ef._targets("wgrad_x,fwd_w") == "fwd_w, wgrad_x"
    assert ef._targets(None) == "—"


def test_seed_from_config():
    from explorer.report.runs import _seed
    assert _seed('{"train": {"seed": 3}}') == 3
    for bad in (None, "", "not json", "[1]", '{"train": {"seed": true}}', '{"train": 5}'):
        assert _seed(bad) is None, bad


def test_single_seed_cells_are_pooled(tmp_path):
    db = tmp_path / "one.db"
    _make_db(db, seeds=(0,))
    em = ef.em_effects(load_runs(db), LAW)
    assert all(e.interval.n == 1 for e in em)
    assert all(e.interval.n == 3 for e in ef.shown(em))   # one pooled row per pair


def test_d_series(runs):
    series = ef.d_series(runs, LAW)
    labels = {s.label for s in series}
    assert "none" in labels and "e2m1/32" in labels and len(series) == 1 + len(FORMATS)
    none = next(s for s in series if s.label == "none")
    assert none.tokens == TOKENS and none.predicted_penalty == (0.0, 0.0, 0.0)
    assert [iv.mean for iv in none.loss] == pytest.approx(
        [_base(d) + np.mean(list(SEED_OFFSET.values())) for d in TOKENS])
    assert ef.d_series(runs, LAW, min_points=4) == []
    with pytest.raises(ValueError, match="min_points"):
        ef.d_series(runs, LAW, min_points=1)


# ----------------------------------------------------------------------------------- section
def test_section_and_figures(runs):
    sec = ef.section(runs, LAW)
    assert sec is not None and sec.anchor == "effects"
    figs = {b.name: b.png for b in sec.blocks if hasattr(b, "png")}
    assert {"effects_gap", "effects_em", "effects_block", f"effects_loss_vs_d_{N}"} <= set(figs)
    assert all(p.startswith(b"\x89PNG") for p in figs.values())
    assert ef.section([r for r in runs if r.fmt == "none"][:1], LAW) is None


def test_report_has_effects_section(tmp_path):
    db = tmp_path / "effects.db"
    _make_db(db)
    paths = build_report(tmp_path / "rep", ReportConfig(runs=db, bits=(8,), sqnr_samples=1024),
                         progress=False)
    md = paths.markdown.read_text()
    assert "## Measured effects" in md
    assert "e2m1 − e1m2" in md and "[+0.0150, +0.0150]" in md     # exact synthetic effect
    assert "| fwd_w, fwd_x |" in md                  # the GEMM inputs of the synthetic runs
    names = {p.name for p in paths.figures}
    assert {"effects_em.png", "effects_block.png", "effects_gap.png",
            f"effects_loss_vs_d_{N}.png"} <= names
