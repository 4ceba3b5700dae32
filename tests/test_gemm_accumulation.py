"""explorer.accumulation: the report's accumulation-error study."""

from __future__ import annotations

import json

import pytest

from explorer.accumulation import (
    accumulation_figure,
    accumulation_png,
    accumulation_study,
    markdown_table,
    parse_accumulator,
)
from fpformat import FloatFormat
from fpformat.gemm import Accumulator


def test_parse_accumulator_grammar():
    a = parse_accumulator("e8m13/rtz/chunk128")
    assert a == Accumulator(FloatFormat(8, 13), "rtz", chunk=128)
    b = parse_accumulator("float32/pairwise/fused4")
    assert b.order == "pairwise" and b.fused_width == 4 and b.acc_format.man_bits == 23
    for bad, part in [("e8m13/fast", "fast"), ("", "non-empty"), ("e8m13/chunk0", "chunk"),
                      ("float64", "mantissa")]:
        with pytest.raises(ValueError, match=part):
            parse_accumulator(bad)


def test_study_orders_accumulators_as_theory_says():
    s = accumulation_study(["e8m23", "e8m9/rtz", "e8m9/rtz/chunk32", "e8m7"], ks=(32, 512),
                           trials=8, seed=1)
    assert len(s.points) == 8 and all(p.samples == 64 for p in s.points)
    med = s.series("median_normalized")
    # A truncating accumulator's error grows with K; chunked promotion stops the growth.
    assert med["e8m9/rtz"][1] > 3 * med["e8m9/rtz"][0]
    assert med["e8m9/rtz/chunk32"][1] < med["e8m9/rtz"][1] / 3
    # float32 accumulation of e4m3 products is nearly exact; bfloat16's is not.
    assert med["e8m23"].max() < 1e-6 < med["e8m7"].min()
    assert s.unit_roundoff == (2.0 ** -24, 2.0 ** -10, 2.0 ** -10, 2.0 ** -8)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["ks"] == [32, 512] and len(d["points"]) == 8
    table = markdown_table(s)
    assert table.count("\n") == 2 + 8 and "`e8m9/rtz/chunk32` | 512" in table
    again = accumulation_study(["e8m9/rtz"], ks=(32,), trials=8, seed=1)
    assert again.points[0] == s.points[2 * 1]


def test_figure_and_png():
    s = accumulation_study([Accumulator("e8m10"), "e8m23"], ks=(16, 64), trials=4)
    fig = accumulation_figure(s, "p95_relative")
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    png = accumulation_png(s)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == accumulation_png(s)
    with pytest.raises(ValueError, match="measure"):
        s.series("k")


def test_study_validation():
    with pytest.raises(ValueError, match="ks"):
        accumulation_study(["e8m10"], ks=(0,))
    with pytest.raises(ValueError, match="trials"):
        accumulation_study(["e8m10"], trials=1)
    with pytest.raises(ValueError, match="accumulators"):
        accumulation_study([])
