"""A report document: headings, paragraphs, tables and figures, written as `report.md` (figures as PNG files beside
it) and one self-contained `report.html` (the same PNGs embedded as data URIs, so it opens anywhere)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "figure{margin:1.5em 0}figcaption{color:#555;font-size:.9em}"
)


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no global state)."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


@dataclass
class Report:
    """Sections in order; each figure is saved to `<out_dir>/<name>.png` as it is added. `values`: what the report
    computed (metrics, intervals, counts), for the code that asked for it."""

    out_dir: Path
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", (header, [[_cell(value) for value in row] for row in rows])))

    def figure(self, name: str, figure: Figure, caption: str) -> Path:
        path = self.out_dir / f"{name}.png"
        figure.savefig(path)
        self.figures.append(path)
        self.blocks.append(("figure", (path.name, caption)))
        return path

    def save(self) -> Path:
        """Write `report.md` and `report.html`; returns the HTML's path."""
        (self.out_dir / MARKDOWN_FILE).write_text(self.markdown(), encoding="utf-8")
        path = self.out_dir / HTML_FILE
        path.write_text(self.html(), encoding="utf-8")
        return path

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, content in self.blocks:
            if kind == "heading":
                lines += [f"## {content}", ""]
            elif kind == "paragraph":
                lines += [content, ""]
            elif kind == "table":
                header, rows = content
                lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
            else:
                name, caption = content
                lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
        ]
        for kind, content in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{html.escape(content)}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(content)}</p>")
            elif kind == "table":
                header, rows = content
                parts.append(
                    "<table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                    + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                    + "</table>"
                )
            else:
                name, caption = content
                data = base64.b64encode((self.out_dir / name).read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        return "".join(parts) + "</body></html>\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


__all__ = ["HTML_FILE", "MARKDOWN_FILE", "Report", "new_figure"]
