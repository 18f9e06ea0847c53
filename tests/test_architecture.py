"""The house rules, checked on the source (issue 12, "a house with clear rooms"):

(a) ``common/`` imports no domain app (rollout, cohorts, audit): it is the bottom layer;
(b) no import cycles between modules, counting imports at module top and inside functions;
(c) an import of a project module inside a function says why, in a comment on the same or the previous line.

The graph is built with ``ast`` from the files themselves (nothing is imported, so no side effects and well
under a second). Not ``import-linter``: its contracts cover (a) and a form of (b), but not (c), and it counts
only the imports its own scanner resolves; these rules are short enough to state here exactly. Imports under
``if TYPE_CHECKING:`` are left out: they never run, so they cannot close a loop at import time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "common", "rollout", "cohorts", "audit", "actions", "notifications")
BOTTOM = "common"
DOMAIN = ("rollout", "cohorts", "audit", "actions", "notifications")
# What does not count as a reason: lint markers alone.
_MARKERS = re.compile(r"noqa(:\s*[A-Z0-9, ]+)?|type:\s*ignore(\[[^\]]*\])?", re.IGNORECASE)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported project module
    line: int
    in_function: bool
    reasoned: bool  # a comment on the same or the previous line says why


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            out[imp.source].add(imp.target)
        return out


def _module_names(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    found: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "migrations" in parts:
                continue
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _reasoned(lines: list[str], lineno: int) -> bool:
    """A comment with words in it (not only ``noqa`` / ``type: ignore``) on the line or the one above."""
    candidates = [lines[lineno - 1].partition("#")[2] if "#" in lines[lineno - 1] else ""]
    if lineno >= 2 and lines[lineno - 2].lstrip().startswith("#"):
        candidates.append(lines[lineno - 2].lstrip()[1:])
    return any(len(re.findall(r"[A-Za-z]{2,}", _MARKERS.sub("", text))) >= 2 for text in candidates)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _walk_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that runs, with whether it sits inside a function."""
    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (pair for orelse in child.orelse for pair in visit_one(orelse, in_function))
                continue
            yield from visit_one(child, in_function)

    def visit_one(child: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        yield from visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    return visit(tree, False)


def build_graph(root: Path, packages: Iterable[str] = PACKAGES) -> Graph:
    packages = tuple(packages)
    names = _module_names(root, packages)
    graph = Graph(modules={name: path for name, (path, _) in names.items()})

    def resolve(dotted: str) -> str | None:
        """The project module an import of ``dotted`` loads: itself, or its nearest enclosing module."""
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for module, (path, is_package) in names.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        package = module if is_package else module.rpartition(".")[0]
        for node, in_function in _walk_imports(ast.parse(text, filename=str(path))):
            targets: set[str | None] = set()
            if isinstance(node, ast.Import):
                targets = {resolve(alias.name) for alias in node.names if alias.name.split(".")[0] in packages}
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    origin = ".".join([*base, node.module] if node.module else base)
                else:
                    origin = node.module or ""
                if origin.split(".")[0] not in packages:
                    continue
                for alias in node.names:  # `from pkg import submodule` loads the submodule
                    sub = f"{origin}.{alias.name}"
                    targets.add(sub if sub in names else resolve(origin))
            for target in sorted(t for t in targets if t and t != module):
                graph.imports.append(Import(module, target, node.lineno, in_function, _reasoned(lines, node.lineno)))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (a closed path, first module repeated at the end) per strongly connected component."""
    edges = graph.edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(start: str) -> None:  # Tarjan, iterative (no recursion limit to meet)
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    for module in sorted(edges):
        if module not in index:
            strongconnect(module)

    found = []
    for component in components:
        first = min(component)
        # Shortest way back to `first` inside the component (breadth-first).
        previous: dict[str, str] = {}
        frontier = [first]
        while frontier and first not in previous:
            following = []
            for node in frontier:
                for child in sorted(edges[node] & component):
                    if child not in previous:
                        previous[child] = node
                        following.append(child)
            frontier = following
        back = []
        node = previous[first]
        while node != first:
            back.append(node)
            node = previous[node]
        found.append([first, *reversed(back), first])
    return sorted(found)


def bottom_layer_violations(graph: Graph, bottom: str = BOTTOM, domain: Iterable[str] = DOMAIN) -> list[str]:
    domain = tuple(domain)
    return [f"{imp.source}:{imp.line} imports {imp.target}" for imp in graph.imports
            if imp.source.split(".")[0] == bottom and imp.target.split(".")[0] in domain]


def unexplained_function_imports(graph: Graph) -> list[str]:
    seen = set()
    found = []
    for imp in graph.imports:
        if imp.in_function and not imp.reasoned and (imp.source, imp.line) not in seen:
            seen.add((imp.source, imp.line))
            found.append(f"{imp.source}:{imp.line} imports {imp.target} inside a function without saying why")
    return found


@pytest.fixture(scope="module")
def project() -> Graph:
    return build_graph(ROOT)


# --- the rules, on Turnout's own source -----------------------------------------------------------------


def test_common__any_module__imports_no_domain_app(project: Graph) -> None:
    assert bottom_layer_violations(project) == []


def test_import_graph__whole_project__has_no_cycle(project: Graph) -> None:
    found = cycles(project)
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_function_level_imports__of_project_modules__each_say_why(project: Graph) -> None:
    assert unexplained_function_imports(project) == []


def test_import_graph__whole_project__sees_every_app(project: Graph) -> None:
    # Guards the checks above against passing on an empty or partial graph.
    assert {m.split(".")[0] for m in project.modules} == set(PACKAGES)
    assert ("rollout.plans.guardrails", "rollout.plans.stages") in {(i.source, i.target) for i in project.imports}


# --- the checker itself, on small made-up packages ------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_import_graph__modules_import_each_other_inside_functions__cycle_reported(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "common/__init__.py": "", "rollout/__init__.py": "",
        "rollout/a.py": "def f():\n    from rollout.b import g\n",
        "rollout/b.py": "def g():\n    from rollout import c\n",
        "rollout/c.py": "from . import a\n",
    })
    assert cycles(build_graph(root, ("common", "rollout"))) == [["rollout.a", "rollout.b", "rollout.c", "rollout.a"]]


def test_import_graph__import_under_type_checking__not_counted(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "rollout/__init__.py": "",
        "rollout/a.py": "from rollout.b import g\n",
        "rollout/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rollout.a import X\n",
    })
    assert cycles(build_graph(root, ("rollout",))) == []


def test_bottom_layer__common_imports_a_domain_model__violation_named(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "common/__init__.py": "", "common/ui.py": "import os\n\n\ndef envs():\n    from rollout.models import Env\n",
        "rollout/__init__.py": "", "rollout/models.py": "from common import ui\n",
    })
    assert bottom_layer_violations(build_graph(root, ("common", "rollout"))) == ["common.ui:5 imports rollout.models"]


def test_function_imports__comment_or_none__only_the_silent_one_reported(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "rollout/__init__.py": "", "rollout/models.py": "",
        "rollout/a.py": (
            "def f():\n"
            "    # Django app registry not ready at import\n"
            "    from rollout.models import A\n"
            "    from rollout.models import B  # optional dependency\n"
            "    from rollout.models import C  # noqa: F401\n"
            "    from rollout.models import D\n"
            "    import json\n"
        ),
    })
    found = unexplained_function_imports(build_graph(root, ("rollout",)))
    assert [line.split(" imports ")[0].rsplit(":", 1)[1] for line in found] == ["5", "6"]
