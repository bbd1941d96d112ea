"""The import graph of src/napari_phendiff, read from the code (every import, at module level or in a function).

    python scripts/import_graph.py            # one line per module: what it imports from the package
    python scripts/import_graph.py --mermaid  # the graph in docs/architecture.md

tests/test_architecture.py fails when the graph has a circle.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_phendiff"


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in the file (module level or inside a function)."""
    modules = {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                found.append(path[path.index(child) :] + [child])
            elif child not in state:
                visit(child, path + [child])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mermaid", action="store_true", help="print a mermaid flowchart")
    args = parser.parse_args()
    graph = import_graph()
    short = {m: m.replace("napari_phendiff.", "") for m in graph}
    # errors and plain package markers are imported everywhere or hold nothing: left out of the drawing
    shown = {
        m for m in graph if not m.endswith((".errors", ".core", ".training", ".widgets")) and m != "napari_phendiff"
    }
    if args.mermaid:
        print("flowchart LR")
        for module in sorted(shown):
            for target in sorted(graph[module] & shown):
                print(
                    f"  {short[module].replace('.', '_')}[{short[module]}] --> "
                    f"{short[target].replace('.', '_')}[{short[target]}]"
                )
    else:
        for module in sorted(graph):
            print(f"{short[module]:28s} -> {', '.join(sorted(short[t] for t in graph[module]))}")
    found = cycles(graph)
    print(f"%% circles: {found or 'none'}" if args.mermaid else f"circles: {found or 'none'}")


if __name__ == "__main__":
    main()
