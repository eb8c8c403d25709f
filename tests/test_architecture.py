"""The layering of docs/architecture.md, read from the code's own imports (function-level ones too):
nothing imports the CLI, the packages import each other without a circle, the stages never reach the
workflows or the sample-data makers, and the model and detector tables are the single source of choices."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "facelab"


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "facelab" or len(parts) < 2:
        return None
    return parts[1] if (SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").exists() else None


def _imports() -> dict[str, set[str]]:
    """Package -> the other facelab packages its modules import."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                target = _package_of(name)
                if target and target != own:
                    graph.setdefault(own, set()).add(target)
    return graph


def test_nothing_below_the_command_line_imports_it():
    graph = _imports()
    assert {p for p, targets in graph.items() if "cli" in targets} <= {"__main__"}


def test_the_packages_import_each_other_without_a_circle():
    graph = _imports()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for package in sorted(graph):
        if package not in state:
            visit(package, [])


@pytest.mark.parametrize("upper", ["workflow", "samples", "qa"])
def test_stages_never_reach_up_to_workflows_checks_or_sample_data(upper):
    graph = _imports()
    allowed = {"cli", "workflow", "__main__", upper}
    assert not {p for p, targets in graph.items() if upper in targets} - allowed


def test_model_and_detector_choices_come_from_their_tables():
    from facelab.cli import build_parser
    from facelab.detect.registry import DETECTORS
    from facelab.swap.config import MODELS
    from facelab.swap.models import BUILDERS

    assert set(MODELS) == set(BUILDERS)
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    extract = next(a for a in sub.choices["extract"]._actions if a.dest == "detector")
    assert set(extract.metavar.strip("{}").split(",")) == set(DETECTORS)
