"""docs/benchmarks.md names every figure the benchmark modules emit, with its unit, and no other.

The benchmark modules' source is parsed, not run: a figure is a dict literal with a "name" and a
"unit" key. The name is a string literal, or a loop variable bound by a `for` over a literal
tuple of tuples around the dict (as in bench_sim's two pass-generation rates).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
MODULES = sorted((REPO / "benchmarks").glob("bench_*.py"))

# A row of the figures table: | `name` | `unit` | ...
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|")


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _loop_values(tree: ast.Module, figure: ast.Dict, variable: str) -> list[str]:
    """Values a `for` around `figure` binds to `variable` from a literal tuple of tuples."""
    values: list[str] = []
    for loop in ast.walk(tree):
        if not isinstance(loop, ast.For) or figure not in set(ast.walk(loop)):
            continue
        targets = loop.target.elts if isinstance(loop.target, ast.Tuple) else [loop.target]
        names = [t.id if isinstance(t, ast.Name) else None for t in targets]
        if variable not in names or not isinstance(loop.iter, ast.Tuple | ast.List):
            continue
        position = names.index(variable)
        for item in loop.iter.elts:
            elements = item.elts if isinstance(item, ast.Tuple) else [item]
            value = _string(elements[position]) if position < len(elements) else None
            assert value is not None, f"line {item.lineno}: a figure name that is not a string"
            values.append(value)
    return values


def _emitted(path: Path) -> set[tuple[str, str]]:
    """(name, unit) of every figure dict literal in one benchmark module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    figures: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        fields = {_string(k): v for k, v in zip(node.keys, node.values, strict=True) if k}
        if "name" not in fields or "unit" not in fields:
            continue
        where = f"{path.name}:{node.lineno}"
        unit = _string(fields["unit"])
        assert unit is not None, f"{where}: the unit of a figure must be a string literal"
        name_node = fields["name"]
        name = _string(name_node)
        if name is not None:
            names = [name]
        elif isinstance(name_node, ast.Name):
            names = _loop_values(tree, node, name_node.id)
        else:
            names = []
        assert names, f"{where}: cannot tell the figure's name from the source"
        figures.update((n, unit) for n in names)
    return figures


def _documented() -> list[tuple[str, str]]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def test_the_parser_finds_the_figures_the_checks_rely_on():
    emitted = {name for path in MODULES for name, _ in _emitted(path)}
    for name in (
        "sync_tags_per_s",
        "sift_detections_per_s",
        "ldpc_decode_bits_per_s",
        "ldpc_efficiency",
        "cascade_efficiency",
        "pa_input_bits_per_s",
        "pass_realtime_factor",
        "pass_generation_s_1ghz",
    ):
        assert name in emitted


def test_each_figure_is_documented_once():
    names = [name for name, _ in _documented()]
    assert names, "no figures table in docs/benchmarks.md"
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_documented_figures_are_the_emitted_ones_with_their_units():
    emitted = set().union(*(_emitted(path) for path in MODULES))
    documented = set(_documented())
    assert sorted(emitted - documented) == [], "emitted but not in docs/benchmarks.md"
    assert sorted(documented - emitted) == [], "in docs/benchmarks.md but emitted by no module"
