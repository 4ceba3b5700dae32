"""The recommendation report: ``build_report(out_dir, ReportConfig(...)) -> ReportPaths``.

Writes ``report.md``, a self-contained ``index.html`` (inline CSS, figures as base64 data URIs,
no scripts, no external requests) and ``figures/*.png``.  See docs/report.md.
"""

from .builder import ReportPaths, build_report
from .config import ReportConfig

__all__ = ["ReportConfig", "ReportPaths", "build_report"]
