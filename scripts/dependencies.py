"""The package's import graph, read from the source with `ast` (imports inside functions included), its layering
rules, and the picture of it in `docs/`.

    python scripts/dependencies.py      # redraws docs/images/dependencies.png and the table in docs/architecture.md

`tests/test_architecture.py` checks the rules (no cycle, no upward import, nothing imports `cli/`, serving never
imports training) and that the document shows the graph of the code as it is.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "perceptclip_hf"
# Folders installed inside the package under another name (setup.py's mapping) that hold Python code.
MAPPED = {"modeling": REPO_ROOT / "modeling"}
# The parts, top to bottom: a part imports only the parts below it. The command line and the root package (whose lazy
# names load the scorer) are on top; then the jobs; the core; the remote code at the bottom.
LAYERS = (
    ("cli",),
    (PACKAGE,),
    ("integrations",),
    ("training",),
    ("demo",),
    ("evaluation",),
    ("export",),
    ("explain",),
    ("scoring",),
    ("hub",),
    ("backends",),
    ("reports",),
    ("tasks",),
    ("preprocessing",),
    ("data",),
    ("output_lock",),
    ("run_layout", "output_safety", "cache_folders"),
    ("metrics", "geometry"),
    ("errors",),
    ("modeling",),
)
JOBS = ("integrations", "training", "demo", "evaluation", "export", "explain", "scoring", "hub")
SERVING = ("integrations", "demo", "evaluation", "export", "explain", "scoring", "hub")
PICTURE = REPO_ROOT / "docs" / "images" / "dependencies.png"
DOCUMENT = REPO_ROOT / "docs" / "architecture.md"
TABLE_MARKERS = ("<!-- dependencies: begin (scripts/dependencies.py) -->", "<!-- dependencies: end -->")


def module_files() -> dict[str, Path]:
    """Every module of the installed package by its dotted name below `perceptclip_hf` ("" is the package)."""
    folders = {"": REPO_ROOT / PACKAGE, **MAPPED}
    modules = {}
    for prefix, folder in folders.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [*([prefix] if prefix else []), *path.relative_to(folder).with_suffix("").parts]
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(absolute module below the package, imported name or None) for each import of the package's code."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [part for part in package if part]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name[len(PACKAGE) + 1 :], None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                target = node.module[len(PACKAGE) + 1 :]
            else:
                continue
            for alias in node.names:
                yield target, alias.name


def import_graph() -> dict[str, set[str]]:
    """module → the package's modules it imports (a from-import of a submodule is an edge to that submodule)."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for target, name in imported_names(module, path):
            submodule = f"{target}.{name}" if target else name
            if name is not None and submodule in modules:
                targets.add(submodule)
            else:
                while target not in modules:  # `import perceptclip_hf.x.y` of a name: its nearest module
                    target = target.rpartition(".")[0]
                targets.add(target)
        graph[module] = targets - {module}
    return graph


def part_of(module: str) -> str:
    """The part a module belongs to: its subpackage or top-level module (the root package is `perceptclip_hf`)."""
    return module.split(".")[0] if module else PACKAGE


def rank(part: str) -> int:
    return next(index for index, parts in enumerate(LAYERS) if part in parts)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a part to a part at its own level or above (within a part, anything goes but cycles)."""
    return [
        f"{source or PACKAGE} -> {target or PACKAGE}"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if part_of(source) != part_of(target) and rank(part_of(target)) <= rank(part_of(source))
    ]


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    parts = {part_of(module) for module in graph}
    edges = {part: set() for part in parts}
    for source, targets in graph.items():
        edges[part_of(source)] |= {part_of(target) for target in targets} - {part_of(source)}
    return edges


def dependency_table(graph: dict[str, set[str]]) -> str:
    """The parts, top to bottom, with the parts each imports: the text twin of the picture."""
    edges = part_graph(graph)
    rows = ["| part | imports |", "|---|---|"]
    for parts in LAYERS:
        for part in parts:
            below = sorted(edges.get(part, ()), key=lambda name: (rank(name), name))
            rows.append(f"| `{part}` | {', '.join(f'`{name}`' for name in below) or '-'} |")
    return "\n".join(rows)


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def transitive_reduction(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The imports not implied by others (a → c is left out when a → b → … → c): the picture's arrows."""
    return {
        part: {
            target for target in targets if not any(target in reachable(edges, other) for other in targets - {target})
        }
        for part, targets in edges.items()
    }


def draw(graph: dict[str, set[str]], path: Path = PICTURE) -> Path:
    """The parts as boxes, each above everything it imports (rows by the longest chain of imports below a part),
    with an arrow for each import not implied by others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = part_graph(graph)
    height: dict[str, int] = {}

    def height_of(part: str) -> int:
        if part not in height:
            height[part] = 1 + max((height_of(target) for target in edges[part]), default=-1)
        return height[part]

    rows: dict[int, list[str]] = {}
    for parts in LAYERS:
        for part in parts:
            rows.setdefault(height_of(part), []).append(part)
    position = {
        part: ((column - (len(row) - 1) / 2) * 2.2, level)
        for level, row in rows.items()
        for column, part in enumerate(row)
    }
    figure, axes = plt.subplots(figsize=(10, 9))
    for source, targets in transitive_reduction(edges).items():
        for target in targets:
            (x0, y0), (x1, y1) = position[source], position[target]
            axes.annotate(
                "",
                xy=(x1, y1 + 0.2),
                xytext=(x0, y0 - 0.2),
                arrowprops={"arrowstyle": "->", "color": "#6b6b6b", "lw": 0.9, "shrinkA": 2, "shrinkB": 2},
            )
    colours = {"job": "#dbe9f6", "core": "#e8f3e0", "other": "#f3f3f3"}
    for part, (x, y) in position.items():
        kind = "job" if part in JOBS else "other" if part in (PACKAGE, "cli", "modeling") else "core"
        folder = (REPO_ROOT / PACKAGE / part).is_dir() or part in MAPPED
        axes.text(
            x,
            y,
            part + ("/" if folder else ""),
            ha="center",
            va="center",
            fontsize=11,
            bbox={"boxstyle": "round,pad=0.35", "facecolor": colours[kind], "edgecolor": "#555555"},
        )
    widest = max(len(row) for row in rows.values())
    axes.set_xlim(-1.2 * widest - 0.4, 1.2 * widest + 0.4)
    axes.set_ylim(-0.6, max(rows) + 0.6)
    axes.axis("off")
    axes.set_title(
        "perceptclip_hf: every import points down (blue: jobs, green: core)\n"
        "arrows: the imports not implied by others; all of them in docs/architecture.md",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def documented_table(document: Path = DOCUMENT) -> str:
    begin, end = TABLE_MARKERS
    text = document.read_text()
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


def main() -> None:
    graph = import_graph()
    problems = cycles(graph) + upward_imports(graph)
    if problems:
        raise SystemExit(f"the layering is broken: {problems}")
    begin, end = TABLE_MARKERS
    text = DOCUMENT.read_text()
    text = re.sub(
        re.escape(begin) + ".*?" + re.escape(end),
        lambda _: f"{begin}\n{dependency_table(graph)}\n{end}",
        text,
        flags=re.S,
    )
    DOCUMENT.write_text(text)
    print(f"wrote {draw(graph)} and the table in {DOCUMENT}")


if __name__ == "__main__":
    main()
