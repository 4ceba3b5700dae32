"""Recipe runs in the analyzer and the report: never a baseline, never a point of the format law,
compared in their own "Recipes" section.

The results database is synthetic: format runs with losses from the paper's law (as in
test_report_runs.py), unquantized runs, and recipe runs (``fmt = 'recipe'``, NULL E/M, a name
and a content hash) with known losses; no training.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer import results
from explorer.blocks import CHANNEL_LOG2B
from explorer.fit import fit_capybara, load_runs_arrays
from explorer.laws import CapybaraLaw
from explorer.report import ReportConfig, build_report
from explorer.report import effects as ef
from explorer.report import recipes as rx
from explorer.report.document import Table
from explorer.report.runs import Run, fit_arrays, load_runs
from explorer.train.export import analyse, export_csv
from explorer.train.store import SCHEMA

N0, D0 = 40_000_000, 10_000_000_000
BASE = {0: 3.00, 1: 3.02}                       # unquantized loss per seed at (N0, D0)
#: (name, hash) -> loss over the seed's baseline, at (N0, D0)
RECIPES = {("te-nvfp4", "92430a1a2359a5e1"): 0.040, ("fp8-delayed", "14c27f03546db492"): 0.010}
ALL_SIX = "fwd_x,fwd_w,dgrad_dy,dgrad_w,wgrad_dy,wgrad_x"


def _insert(con, key, *, n, d, fmt, e=None, m=None, block=None, loss, seed=0, targets="",
            recipe=None, digest=None, curve=None):
    con.execute("INSERT INTO runs (key, status, n_params, tokens, exp_bits, man_bits, block, fmt, "
                "targets, val_loss, curve_json, config_json, recipe, recipe_hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, "finished", n, d, e, m, block, fmt, targets, loss,
                 json.dumps(curve or [[d / 2, loss + 0.3], [d, loss]]),
                 json.dumps({"train": {"seed": seed}}), recipe, digest))


def _make_db(path, *, recipes=RECIPES, extra_d=False):
    """Law-generated format runs (4 N x 3 D x 6 formats), unquantized runs at (N0, D0) for two
    seeds and at every (N, D) for seed 0, and ``recipes`` runs at (N0, D0) for both seeds (and at
    a second D with ``extra_d``)."""
    law = CapybaraLaw.paper()
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    i = 0
    for n in (4e7, 1e8, 2.5e8, 6e8):
        for d in (1e10, 3e10, 1e11):
            for e, m, block in ((2, 1, "32"), (3, 2, "channel"), (4, 3, "128"), (1, 2, "channel"),
                                (2, 3, "64"), (5, 2, "channel")):
                b = 2 ** CHANNEL_LOG2B if block == "channel" else int(block)
                _insert(con, f"q{i:03d}", n=int(n), d=int(d), fmt=f"e{e}m{m}", e=e, m=m,
                        block=block, loss=float(law.loss(n, d, e, m, b)), targets="fwd_w")
                i += 1
            if (int(n), int(d)) != (N0, D0):
                _insert(con, f"b{i:03d}", n=int(n), d=int(d), fmt="none",
                        loss=float(law.base_loss(n, d)))
                i += 1
    for seed, loss in BASE.items():
        _insert(con, f"base{seed}", n=N0, d=D0, fmt="none", loss=loss, seed=seed)
    for (name, digest), eff in recipes.items():
        for seed, loss in BASE.items():
            _insert(con, f"{name}-{digest}-{seed}", n=N0, d=D0, fmt="recipe", loss=loss + eff,
                    seed=seed, targets=ALL_SIX, recipe=name, digest=digest)
            if extra_d:
                _insert(con, f"{name}-{digest}-{seed}-2", n=N0, d=2 * D0, fmt="recipe",
                        loss=loss + eff - 0.1, seed=seed, targets=ALL_SIX, recipe=name,
                        digest=digest)
    con.commit()
    con.close()


def test_recipe_rows_are_neither_baseline_nor_format_runs():
    rec = {"exp_bits": None, "man_bits": None, "fmt": "recipe", "targets": ALL_SIX,
           "recipe": "te-nvfp4"}
    assert results.is_recipe_run(rec) and not results.is_baseline_run(rec)
    # marked by fmt alone (a row whose name was lost), or by name alone: still a recipe run
    assert results.is_recipe_run(dict(rec, recipe=None))
    assert results.is_recipe_run(dict(rec, fmt="none", targets=""))
    base = {"exp_bits": None, "man_bits": None, "fmt": "none", "targets": ""}
    assert results.is_baseline_run(base) and not results.is_recipe_run(base)
    assert results.is_baseline_run(dict(base, targets=None))       # legacy rows: no targets
    assert not results.is_baseline_run(dict(base, targets="fwd_x"))  # per-input formats only
    assert not results.is_baseline_run(dict(base, exp_bits=2, man_bits=1, fmt="e2m1"))


def test_recipe_runs_change_no_fit_and_no_baseline(tmp_path):
    """A database with recipe runs gives the fit inputs, the fitted law, the paired gaps and the
    export's baseline statistics of the same database without them."""
    plain, mixed = tmp_path / "plain.db", tmp_path / "mixed.db"
    _make_db(plain, recipes={})
    _make_db(mixed)
    for baseline in (False, True):
        a, b = (load_runs_arrays(p, include_baseline=baseline) for p in (plain, mixed))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    arrays = load_runs_arrays(mixed, include_baseline=True)
    assert len(arrays["loss"]) == 72 + 11 + 2                     # formats, baselines; no recipe
    fitted = [fit_capybara(**load_runs_arrays(p, include_baseline=True), starts=2)
              for p in (plain, mixed)]
    assert fitted[0] == fitted[1]
    # the report's view: the same fit arrays, the same gaps and loss-against-D series
    rp, rm = load_runs(plain), load_runs(mixed)
    assert len(rm) == len(rp) + 4 and sum(r.baseline for r in rm) == sum(r.baseline for r in rp)
    fa, fb = fit_arrays(rp), fit_arrays(rm)
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    law = CapybaraLaw.paper()
    # repr: intervals from one pair hold NaN, which == never matches
    assert repr(ef.gap_effects(rp, law)) == repr(ef.gap_effects(rm, law))
    assert repr(ef.d_series(rp, law)) == repr(ef.d_series(rm, law))
    assert len(ef.gap_effects(rm, law)) == 72                      # every format run, paired
    recipe_runs = [r for r in rm if r.recipe is not None]
    assert all(not r.baseline and not r.quantized and r.targets == ALL_SIX for r in recipe_runs)
    assert {r.label for r in recipe_runs} == {"recipe:te-nvfp4", "recipe:fp8-delayed"}
    # the export's summary: recipe runs counted, never a baseline nor a format
    sa, sm = analyse(plain), analyse(mixed)
    assert sm["runs"] == sa["runs"] + 4
    for k in ("by_format", "by_bits", "by_tokens", "em_pairs", "block_pairs", "d_monotone"):
        assert sa[k] == sm[k], k
    # a CSV export of the database fits like the database
    csv_runs, _ = export_csv(mixed, tmp_path / "csv")
    c = load_runs_arrays(csv_runs, include_baseline=True)
    assert len(c["loss"]) == len(arrays["loss"])


def _run(key, n, d, seed, loss, *, e=None, m=None, fmt="none", targets=None, recipe=None):
    return Run(key, n, d, e, m, None if e is None else "32", fmt, loss, (), seed, targets,
               recipe, None if recipe is None else "0123456789abcdef")


_CELLS = st.tuples(st.sampled_from((100, 200)), st.sampled_from((1000, 2000)),
                   st.integers(0, 2))


@settings(max_examples=60, deadline=None)
@given(base=st.lists(st.tuples(_CELLS, st.floats(2.0, 4.0)), max_size=8),
       quant=st.lists(st.tuples(_CELLS, st.floats(2.0, 4.0)), max_size=8),
       recs=st.lists(st.tuples(_CELLS, st.floats(2.0, 4.0), st.sampled_from(("a", "b"))),
                     max_size=8))
def test_any_recipe_runs_leave_gaps_and_fit_unchanged(base, quant, recs):
    """Whatever recipe runs are added (at cells with or without a baseline, in any order), the
    paired gaps, the loss-against-D series and the fit inputs stay those of the other runs."""
    runs = [_run(f"b{i}", n, d, s, v) for i, ((n, d, s), v) in enumerate(base)]
    runs += [_run(f"q{i}", n, d, s, v, e=2, m=1, fmt="e2m1", targets="fwd_w")
             for i, ((n, d, s), v) in enumerate(quant)]
    extra = [_run(f"r{i}", n, d, s, v, fmt="recipe", targets=ALL_SIX, recipe=name)
             for i, ((n, d, s), v, name) in enumerate(recs)]
    law = CapybaraLaw.paper()
    for mixed in (runs + extra, extra + runs):
        assert repr(ef.gap_effects(mixed, law)) == repr(ef.gap_effects(runs, law))
        assert repr(ef.d_series(mixed, law, 2)) == repr(ef.d_series(runs, law, 2))
        a, b = fit_arrays(mixed), fit_arrays(runs)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    cells = rx.cells(runs + extra)
    assert sum(len(c.values) for c in cells) == len(extra)
    for c in cells:                          # each gap pairs a recipe run with its own baseline
        assert len(c.diffs) <= len(c.values)


def test_recipes_section_table_and_figure(tmp_path):
    db = tmp_path / "r.db"
    _make_db(db, extra_d=True)
    runs = load_runs(db)
    assert rx.recipe_ids(runs) == sorted(RECIPES)
    cells = {(c.recipe, c.tokens): c for c in rx.cells(runs)}
    c = cells[("te-nvfp4", D0)]
    assert c.values == (3.04, 3.06) and c.n_params == N0 and c.recipe_hash == "92430a1a2359a5e1"
    assert c.diffs == pytest.approx((0.04, 0.04)) and c.gap.mean == pytest.approx(0.04)
    assert cells[("fp8-delayed", D0)].gap.mean == pytest.approx(0.01)
    assert cells[("te-nvfp4", 2 * D0)].gap is None                 # no unquantized run at 2·D0
    s = rx.section(runs)
    assert s is not None and s.title == "Recipes"
    png = rx.recipes_png(runs, "t")
    assert png.startswith(b"\x89PNG")
    paths = build_report(tmp_path / "rep", ReportConfig(runs=db, bits=(8,), sqnr_samples=1024,
                                                        fit_bootstrap=2), progress=False)
    md = paths.markdown.read_text()
    assert "## Recipes" in md and "`92430a1a2359a5e1`" in md and "`14c27f03546db492`" in md
    assert "| `te-nvfp4` | `92430a1a2359a5e1` | all six | 2 |" in md
    assert "+0.0400 [+0.0400, +0.0400]" in md and "+0.0100 [+0.0100, +0.0100]" in md
    assert "no unquantized run of the same N, D and seed" in md                # the 2·D0 table
    assert "2 with a training recipe" not in md and "8 with a training recipe" in md
    assert "recipes.png" in {p.name for p in paths.figures}


def test_one_recipe_gets_no_section(tmp_path):
    db = tmp_path / "one.db"
    _make_db(db, recipes=dict(list(RECIPES.items())[:1]))
    runs = load_runs(db)
    assert rx.section(runs) is None
    paths = build_report(tmp_path / "rep", ReportConfig(runs=db, bits=(8,), sqnr_samples=1024,
                                                        fit_bootstrap=2), progress=False)
    md = paths.markdown.read_text()
    assert "Recipes" not in md and "recipes.png" not in {p.name for p in paths.figures}


def test_two_hashes_of_one_name_are_two_recipes(tmp_path):
    db = tmp_path / "h.db"
    _make_db(db, recipes={("mine", "aaaaaaaaaaaaaaaa"): 0.02, ("mine", "bbbbbbbbbbbbbbbb"): 0.03})
    runs = load_runs(db)
    assert len(rx.recipe_ids(runs)) == 2
    s = rx.section(runs)
    table = next(b for b in s.blocks if isinstance(b, Table))
    assert {row[0] for row in table.rows} >= {"`mine (aaaaaaaaaaaaaaaa)`",
                                               "`mine (bbbbbbbbbbbbbbbb)`"}


def test_database_from_before_recipes_reads_without_them(tmp_path):
    from procs import legacy_db
    db = tmp_path / "old.db"
    legacy_db(db, "INSERT INTO runs (key, status, n_params, tokens, fmt, targets, val_loss) "
                  "VALUES ('b', 'finished', 10, 100, 'none', '', 3.0); "
                  "INSERT INTO runs (key, status, n_params, tokens, exp_bits, man_bits, fmt, "
                  "targets, val_loss) VALUES ('q', 'finished', 10, 100, 2, 1, 'e2m1', 'fwd_w', "
                  "3.1);")
    runs = {r.key: r for r in load_runs(db)}
    assert runs["b"].baseline and runs["b"].recipe is None and runs["q"].quantized
    assert rx.section(list(runs.values())) is None
    assert len(load_runs_arrays(db, include_baseline=True)["loss"]) == 2


def test_a_run_with_emulated_gemms_and_no_format_is_no_baseline():
    """``--format none --accumulator e8m13/rtz`` records fmt 'none' and no targets, like a
    baseline; its stored config says its GEMMs were emulated, so no reader takes it as one."""
    base = {"exp_bits": None, "man_bits": None, "fmt": "none", "targets": "",
            "config_json": json.dumps({"quant": {"fmt": None}})}
    assert results.is_baseline_run(base)
    for quant in ({"accumulator": "e8m13/rtz"}, {"matrix_unit": "h100"},
                  {"transforms": [["wgrad", 16, "fixed"]]}):
        row = dict(base, config_json=json.dumps({"quant": {"fmt": None, **quant}}))
        assert not results.is_baseline_run(row), quant
    assert results.is_baseline_run(dict(base, config_json="not json"))
