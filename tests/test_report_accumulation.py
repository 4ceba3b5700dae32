"""The report's accumulator-precision section (issue: dot-product unit emulation)."""

import pytest

from explorer.accumulation import accumulation_study
from explorer.report import ReportConfig
from explorer.report.builder import _Context, _section_accumulation
from explorer.report.document import Figure, Table


def test_accumulation_section_has_figure_and_the_study_numbers():
    cfg = ReportConfig(accumulators=("e8m13/rtz", "e8m13/rtz/chunk128"))
    sec = _section_accumulation(_Context(cfg, None, ""))
    figs = [b for b in sec.blocks if isinstance(b, Figure)]
    tables = [b for b in sec.blocks if isinstance(b, Table)]
    assert len(figs) == 1 and figs[0].png.startswith(b"\x89PNG")
    study = accumulation_study(cfg.accumulators, seed=cfg.seed, progress=False)
    cells = {(r[0], r[1]): r[2] for r in tables[0].rows}
    for p in study.points:
        assert cells[(f"`{p.accumulator}`", str(p.k))] == f"{p.median_normalized:.2e}"
    # truncation piles up with K; promotion every 128 products keeps the error down
    s = study.series()
    assert s["e8m13/rtz"][-1] > 10 * s["e8m13/rtz/chunk128"][-1]


def test_bad_accumulator_spec_is_a_value_error():
    with pytest.raises(ValueError):
        ReportConfig(accumulators=("e8m13/sideways",))
