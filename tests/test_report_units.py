"""The report's matrix-unit section (`fpx report --matrix-unit ...`) and its study."""

import json

import numpy as np
import pytest

from explorer.report import ReportConfig
from explorer.report.builder import _Context, _section_matrix_units
from explorer.report.document import Bullets, Figure, Table
from explorer.units_study import designer_notes, markdown_table, unit_study

UNITS = ("h100", "b200", "v100", "fma16/x-8/rtz", "fma16/x2/rne")


@pytest.fixture(scope="module")
def study():
    return unit_study(UNITS, ks=(16, 256, 4096), trials=16)


def test_study_orders_units_as_the_model_says(study):
    s = study.series()
    assert set(s) == set(UNITS) and all(len(v) == 3 for v in s.values())
    # h100 and b200 share their float16 model: the same numbers
    assert np.array_equal(s["h100"], s["b200"])
    # a 15-bit window loses far more than h100's 25-bit one, at every K
    assert (s["fma16/x-8/rtz"] > 10 * s["h100"]).all()
    # rounding the result to nearest beats truncating it, and grows more slowly with K
    assert s["fma16/x2/rne"][-1] < s["h100"][-1]
    g = study.growth()
    assert g["h100"] > g["fma16/x2/rne"] + 0.2
    # truncation of the result piles up with K
    assert s["h100"][-1] > 10 * s["h100"][0]
    # every error is above zero and far below 1
    assert all((v > 0).all() and (v < 1e-2).all() for v in s.values())
    json.dumps(study.to_dict())
    assert markdown_table(study).count("\n") == 2 + len(UNITS) * 3


def test_designer_notes_name_every_unit_and_the_shared_model(study):
    notes = designer_notes(study)
    text = "\n".join(notes)
    assert "`h100`, `b200` share one model" in text
    for u in UNITS:
        assert f"`{u}`:" in text
    assert "window" in text and "rtz" in text


def test_matrix_unit_section_has_figure_table_and_notes():
    cfg = ReportConfig(matrix_units=("h100", "fma16/x-8/rtz"))
    sec = _section_matrix_units(_Context(cfg, None, ""))
    figs = [b for b in sec.blocks if isinstance(b, Figure)]
    tables = [b for b in sec.blocks if isinstance(b, Table)]
    assert sec.anchor == "matrix-units"
    assert len(figs) == 1 and figs[0].png.startswith(b"\x89PNG")
    assert any(isinstance(b, Bullets) for b in sec.blocks)
    study = unit_study(cfg.matrix_units, seed=cfg.seed)
    cells = {(r[0], r[2]): r[3] for r in tables[0].rows}
    for p in study.points:
        assert cells[(f"`{p.unit}`", str(p.k))] == f"{p.median_relative:.2e}"


def test_cli_report_writes_the_matrix_unit_section(tmp_path, capsys):
    from explorer.cli import main
    rc = main(["report", "--out", str(tmp_path / "r"), "--sqnr-samples", "256",
               "--matrix-unit", "h100", "fma16/x2/rne", "--json"])
    assert rc == 0
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Matrix units" in md and "fma16/x2/rne" in md
    assert any(p.endswith("matrix_units.png") for p in paths["figures"])
    rc = main(["report", "--out", str(tmp_path / "s"), "--matrix-unit", "tpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "tpu" in err and "Traceback" not in err


@pytest.mark.parametrize("kw, message", [
    (dict(matrix_units=("tpu",)), "tpu"),
    (dict(matrix_units=("v100",), matrix_unit_format="bfloat16"), "v100"),
    (dict(matrix_units=("h100", "h100")), "each unit once"),
    (dict(matrix_units=("h100",), matrix_unit_format="mxfp4"), "element format"),
    (dict(matrix_units=("mi300x",), matrix_unit_format="float8_e4m3fn"), "mi300x")])
def test_bad_matrix_unit_settings_are_value_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        ReportConfig(**kw)
