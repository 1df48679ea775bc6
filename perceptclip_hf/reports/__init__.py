"""Reports people look at: PNG figures, `report.md` and a self-contained `report.html` (matplotlib, Agg canvas)."""

from .document import HTML_FILE, MARKDOWN_FILE, Report
from .predictions import classification_report, regression_report

__all__ = ["HTML_FILE", "MARKDOWN_FILE", "Report", "classification_report", "regression_report"]
