"""The report's document model, renderers, figures and configuration (no analyzer needed)."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pytest

from explorer.report import figures as fig
from explorer.report.config import ReportConfig
from explorer.report.document import (
    Bullets,
    Code,
    Document,
    Figure,
    Para,
    Section,
    Table,
    png_data_uri,
    render_html,
    render_markdown,
)
from explorer.report.formats import differences, neighbours, properties_row, sqnr_db
from explorer.report.lawview import pareto_front, scaled_quantize, sqnr_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _doc() -> Document:
    png = fig.grouped_bars(["a", "b"], {"x": [1, 2], "y": [2, 1]}, "dB", "t", highlight=["y"])
    s = Section("First <section> & more")
    s.add(Para("Use `e3m4b5` and **`e2m1`** <not a tag>"), Bullets(("one", "**two**")),
          Table(("a|b", "c"), (("1", "x|y"),), caption="cap"),
          Figure("bars", png, "A caption"), Code("fpx report --out 'dir'"))
    return Document("Title & co", "Lead <b>", [s])


def test_html_escapes_text_and_renders_inline_marks():
    page = render_html(_doc())
    assert "&lt;not a tag&gt;" in page
    assert "<code>e3m4b5</code>" in page
    assert "<strong><code>e2m1</code></strong>" in page
    assert "First &lt;section&gt; &amp; more" in page
    p = _Collect()
    p.feed(page)
    assert not [t for t, _ in p.tags if t in ("script", "link", "iframe")]
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 1
    assert imgs[0]["src"].startswith("data:image/png;base64,")
    assert base64.b64decode(imgs[0]["src"].split(",", 1)[1]).startswith(PNG_MAGIC)
    anchors = [a["href"] for t, a in p.tags if t == "a"]
    assert anchors == ["#first-section-more"]


def test_markdown_links_figures_and_escapes_pipes():
    md = render_markdown(_doc())
    assert "![A caption](figures/bars.png)" in md
    assert "| a\\|b | c |" in md and "| 1 | x\\|y |" in md
    assert "```\nfpx report --out 'dir'\n```" in md
    assert "- [First <section> & more](#first-section-more)" in md


def test_document_blocks_validate():
    with pytest.raises(ValueError, match="rows\\[0\\]"):
        Table(("a", "b"), (("1",),))
    with pytest.raises(ValueError, match="figure name"):
        Figure("Bad Name", PNG_MAGIC, "c")
    with pytest.raises(ValueError, match="not PNG"):
        Figure("ok", b"GIF89a", "c")
    assert png_data_uri(PNG_MAGIC) == "data:image/png;base64,iVBORw0KGgo="


def test_figures_are_png():
    E, M = np.arange(0, 4), np.arange(0, 3)
    loss = 2.0 + 1.0 / ((E[None, :] + 1.0) * (M[:, None] + 1.0))
    outs = [
        fig.loss_heatmap(E, M, loss, 2.0, {3: (1, 1)}, "t"),
        fig.loss_gap_bars({4: ["e1m2"]}, {4: [0.01]}, "t"),
        fig.lines_loglog(np.logspace(1, 3, 5), {"a": np.logspace(2, 4, 5)}, xlabel="x",
                         ylabel="y", title="t", marker_x=100,
                         reference=("r", np.logspace(1, 3, 5))),
        fig.precision_vs_budget(np.logspace(18, 20, 5), np.linspace(4, 6, 5), (4, 8), "t", 1e19),
        fig.block_effect(np.array([5.0, 6.0]), ["32", "64"], {"a": np.array([1e-3, 2e-3])},
                         "y", "t"),
        fig.value_grids({"a": np.array([-1.0, 0.0, 0.5, 1.0]), "b": np.array([0.25, 2.0])}, "t",
                        highlight=["a"]),
        fig.pareto({"a": (1.0, 2.0), "b": (2.0, 1.0), "c": (3.0, 3.0)}, ["a", "b"], xlabel="x",
                   ylabel="y", title="t", highlight=["c"]),
        fig.fit_diagnostics(np.array([3.0, 3.1, 3.2]), np.array([3.01, 3.08, 3.22]),
                            ["a", "a", "b"], "t",
                            lo=np.array([2.9, 3.0, 3.1]), hi=np.array([3.1, 3.2, 3.3])),
        fig.sweep_curves({"r": (np.array([1e3, 1e4]), np.array([4.0, 3.0]))}, "t"),
    ]
    for png in outs:
        assert png.startswith(PNG_MAGIC) and len(png) > 2000
    # reproducible: no timestamps in the PNG
    assert fig.pareto({"a": (1.0, 2.0)}, ["a"], xlabel="x", ylabel="y", title="t") == \
        fig.pareto({"a": (1.0, 2.0)}, ["a"], xlabel="x", ylabel="y", title="t")


def test_config_validation():
    assert ReportConfig().tokens_or_default == 20e9
    assert ReportConfig(block="32").block == 32
    assert ReportConfig(bits=(8, 4, 4)).bits == (4, 8)
    with pytest.raises(ValueError, match="bits"):
        ReportConfig(bits=(1,))
    with pytest.raises(ValueError, match="params"):
        ReportConfig(params=-1)
    with pytest.raises(ValueError, match="block"):
        ReportConfig(block="rows")
    with pytest.raises(ValueError, match="block"):
        ReportConfig(block=1)
    with pytest.raises(ValueError, match="tokens"):
        ReportConfig(tokens=float("nan"))
    with pytest.raises(ValueError, match="sqnr_samples"):
        ReportConfig(sqnr_samples=10)


def test_pareto_front():
    pts = {"cheap_bad": (1, 5), "mid": (2, 3), "dominated": (3, 4), "best": (4, 1)}
    assert pareto_front(pts) == ["cheap_bad", "mid", "best"]


def test_format_facts():
    from fpformat import get_format
    f = get_format("e3m4b5")
    nb = neighbours(f)
    assert nb[0] == "e3m4" and "float8_e4m3fn" in nb and "float8_e5m2" in nb
    assert "e3m4b5" not in nb
    row = properties_row("e3m4b5")
    assert row[4] == "5" and row[5] == "7.75"           # bias 5 halves e3m4's max 31 twice
    d = differences(f, get_format("e3m4"))
    assert "×2^-2" in d and "same epsilon" in d
    d = differences(f, get_format("float8_e4m3fn"))
    assert "448" in d and "specials: none vs NaN" in d


def test_sqnr_measurements():
    x = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, 0 * x) == pytest.approx(0.0)
    from fpformat import get_format
    f = get_format("e2m1")
    y = np.random.default_rng(1).standard_normal(64)
    q = scaled_quantize(f, y, 32)
    for lo in (0, 32):                # each block's amax maps onto the format max: kept exactly
        i = lo + int(np.argmax(np.abs(y[lo:lo + 32])))
        assert q[i] == pytest.approx(y[i], rel=1e-6)     # float32 scale: amax kept to 2**-24
    assert not np.allclose(q, y)
    t = sqnr_table(["e2m1", "e4m3"], 1024, 0)
    for col in t.columns:
        # one more mantissa bit is worth several dB on every distribution
        assert t.values["e4m3"][col] > t.values["e2m1"][col] + 6
    assert t.values["e2m1"]["Student-t(3), block 32"] > t.values["e2m1"]["Student-t(3), per-tensor"]
