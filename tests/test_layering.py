"""The layering of src/sockit, checked from source text: dependencies point down only.

Every module is parsed with :mod:`ast` (nothing is imported) and every import of sockit
code is collected: ``import sockit.x``, ``from sockit.x import y``, relative imports
(resolved against the module's package), imports inside functions, and imports under
``if TYPE_CHECKING:``, which may point anywhere below but, like any other, never up.
The order is :data:`RANKS`; a module may always import its own component, and the
top-level ``__init__``, ``__main__`` and ``_version`` modules may import anything.

proto/ is also checked to be sans-I/O: it must not import sockets, selectors, threads,
processes or asyncio, nor sleep.

This module must never import sockit: it has to report a broken layering even when the
broken layering makes ``import sockit`` fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "sockit"

# The component a module belongs to is the first name below the package: "addr" for
# sockit/addr/hosts.py, "errors" for sockit/errors.py. Lower ranks are lower layers.
RANKS: dict[str, float] = {
    "errors": 0,
    # A leaf holding the version string only, importable from everywhere.
    "_version": 0,
    "abc": 0.5,
    "addr": 1,
    "proto": 2,
    # Equal ranks: sync and aio are twins and must never import each other.
    "sync": 3,
    "aio": 3,
    "serve": 4,
    "relay": 5,
    "testing": 6,
    "cli": 7,
}
# The interfaces module sits below addr, yet its signatures mention addresses.
ONLY_ALLOWED: dict[str, frozenset[str]] = {"abc": frozenset({"errors", "addr"})}
# Top-level modules that wire everything together and may import anything.
UNRESTRICTED = frozenset({"__init__", "__main__", "_version"})
ROOT = "__init__"

# What sans-I/O rules out, by top-level module name.
SANS_IO_COMPONENT = "proto"
FORBIDDEN_IN_SANS_IO = frozenset(
    {
        "socket",
        "_socket",
        "select",
        "selectors",
        "threading",
        "_thread",
        "asyncio",
        "subprocess",
        "multiprocessing",
        "concurrent",
    }
)


@dataclass(frozen=True)
class ImportEdge:
    """One import of sockit code, resolved to the module it names."""

    path: Path
    line: int
    source: str
    target: str
    type_checking: bool

    def where(self, package_dir: Path) -> str:
        relative = self.path.relative_to(package_dir.parent)
        return f"{relative}:{self.line}"


def discover_modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    package = package_dir.name
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def component_of(module: str) -> str:
    """``sockit.addr.hosts`` -> ``addr``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def is_type_checking_test(node: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(node, ast.Name):
        return node.id == "TYPE_CHECKING"
    return isinstance(node, ast.Attribute) and node.attr == "TYPE_CHECKING"


class _ImportCollector(ast.NodeVisitor):
    """Every import statement in a module, with whether it is under TYPE_CHECKING."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self._type_checking_depth = 0

    def visit_If(self, node: ast.If) -> None:
        if is_type_checking_test(node.test):
            self._type_checking_depth += 1
            for statement in node.body:
                self.visit(statement)
            self._type_checking_depth -= 1
            for statement in node.orelse:
                self.visit(statement)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, self._type_checking_depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node, self._type_checking_depth > 0))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def resolve_targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]
) -> list[str] | None:
    """The package modules an import statement names (None: relative, above the package)."""
    package = module.partition(".")[0]

    def ours(name: str) -> bool:
        return name == package or name.startswith(f"{package}.")

    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if ours(alias.name)]
    if node.level:
        # A relative import starts from the module's package (the module itself for a
        # package's __init__) and goes one level up per extra dot.
        base_parts = module.split(".") if is_package else module.split(".")[:-1]
        keep = len(base_parts) - (node.level - 1)
        if keep < 1:
            return None
        base = ".".join(base_parts[:keep])
        imported = f"{base}.{node.module}" if node.module else base
    else:
        imported = node.module or ""
        if not ours(imported):
            return []
    targets = []
    for alias in node.names:
        # `from sockit import errors` names the submodule, not the package.
        submodule = f"{imported}.{alias.name}"
        targets.append(submodule if submodule in modules else imported)
    return targets


def collect_edges(package_dir: Path) -> tuple[list[ImportEdge], list[str]]:
    """All imports of package code, and the problems found while resolving them."""
    modules = discover_modules(package_dir)
    edges: list[ImportEdge] = []
    problems: list[str] = []
    for module, path in modules.items():
        collector = _ImportCollector()
        collector.visit(parse(path))
        for node, type_checking in collector.found:
            targets = resolve_targets(node, module, path.name == "__init__.py", modules)
            if targets is None:
                where = f"{path.relative_to(package_dir.parent)}:{node.lineno}"
                problems.append(f"{where}: relative import goes above the package")
                continue
            edges.extend(
                ImportEdge(path, node.lineno, module, target, type_checking) for target in targets
            )
    return edges, problems


def root_components(edges: list[ImportEdge]) -> set[str]:
    """The components the package's __init__ imports (what importing it pulls in)."""
    return {
        component_of(edge.target)
        for edge in edges
        if component_of(edge.source) == ROOT and component_of(edge.target) != ROOT
    }


def import_allowed(source: str, target: str, root_imports: set[str]) -> bool:
    """Whether component ``source`` may import component ``target`` (both known)."""
    if source in UNRESTRICTED or source == target:
        return True
    if target == "__main__":
        return False
    if source in ONLY_ALLOWED:
        return target in ONLY_ALLOWED[source]
    if target == ROOT:
        # Importing the package runs its __init__, which imports these: so the importer
        # must be allowed all of them, and must not be one of them (an import cycle).
        return source not in root_imports and all(
            import_allowed(source, other, set()) for other in root_imports
        )
    return RANKS[target] < RANKS[source]


def layering_violations(package_dir: Path) -> list[str]:
    """One line per import that points up, sideways, or into an unknown component."""
    package = package_dir.name
    edges, problems = collect_edges(package_dir)
    known = set(RANKS) | UNRESTRICTED
    for module in discover_modules(package_dir):
        component = component_of(module)
        if component not in known:
            problems.append(
                f"{package}.{component} is a new top-level module or package: add it to "
                f"RANKS in tests/test_layering.py at the layer where it belongs"
            )
    root_imports = root_components(edges)
    for edge in edges:
        source, target = component_of(edge.source), component_of(edge.target)
        if source not in known:
            continue  # reported above, once
        if target not in known:
            problems.append(
                f"{edge.where(package_dir)}: {edge.source} imports {edge.target}, "
                f"which is in no layer: add {package}.{target} to RANKS in tests/test_layering.py"
            )
            continue
        if import_allowed(source, target, root_imports):
            continue
        guard = " (under TYPE_CHECKING, which may point down only too)"
        problems.append(
            f"{edge.where(package_dir)}: {edge.source} imports {edge.target}: "
            f"{describe(source, root_imports)} may not depend on {describe(target, root_imports)}"
            f"{guard if edge.type_checking else ''}"
        )
    return sorted(set(problems))


def describe(component: str, root_imports: set[str]) -> str:
    if component == ROOT:
        return f"the package itself (which imports {', '.join(sorted(root_imports))})"
    if component in ONLY_ALLOWED:
        allowed = ", ".join(sorted(ONLY_ALLOWED[component]))
        return f"{component} (which may import only {allowed})"
    if component in RANKS:
        return f"{component} (rank {RANKS[component]:g})"
    return component


def sans_io_violations(package_dir: Path) -> list[str]:
    """One line per blocking or concurrency facility used in the sans-I/O component."""
    problems: list[str] = []
    for module, path in discover_modules(package_dir).items():
        if component_of(module) != SANS_IO_COMPONENT:
            continue
        tree = parse(path)
        where = path.relative_to(package_dir.parent)
        time_aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in FORBIDDEN_IN_SANS_IO:
                        problems.append(f"{where}:{node.lineno}: sans-I/O imports {alias.name}")
                    if alias.name == "time":
                        time_aliases.add(alias.asname or "time")
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] in FORBIDDEN_IN_SANS_IO:
                    problems.append(f"{where}:{node.lineno}: sans-I/O imports {node.module}")
                if node.module == "time" and any(a.name == "sleep" for a in node.names):
                    problems.append(f"{where}:{node.lineno}: sans-I/O imports time.sleep")
        problems.extend(
            f"{where}:{node.lineno}: sans-I/O calls time.sleep"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "sleep"
            and isinstance(node.value, ast.Name)
            and node.value.id in time_aliases
        )
    return sorted(problems)


# --- the real tree -----------------------------------------------------------------------


def test_the_real_tree_is_there() -> None:
    modules = discover_modules(PACKAGE_DIR)
    assert {"sockit", "sockit.errors", "sockit.abc"} <= set(modules)


def test_dependencies_point_down() -> None:
    problems = layering_violations(PACKAGE_DIR)
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_proto_is_sans_io() -> None:
    problems = sans_io_violations(PACKAGE_DIR)
    assert not problems, "I/O in proto/:\n" + "\n".join(problems)


# --- the checker itself, on synthetic trees ----------------------------------------------

CLEAN_TREE = {
    "__init__.py": "from sockit.sync import connect\nfrom sockit._version import v\n",
    "__main__.py": "from sockit.cli import main\n",
    "_version.py": "v = '0'\n",
    "errors.py": "import errno\n",
    "abc.py": (
        "import abc\nfrom typing import TYPE_CHECKING\nfrom sockit import errors\n"
        "if TYPE_CHECKING:\n    from sockit.addr import Address\n"
    ),
    "addr/__init__.py": "from .hosts import check\nfrom sockit.abc import Stream\n",
    "addr/hosts.py": "import socket\nfrom sockit import errors\nfrom . import ordering\n",
    "addr/ordering.py": "from .hosts import check\n",
    "proto/__init__.py": "",
    "proto/buffer.py": (
        "import time\nfrom sockit.errors import LimitExceeded\nfrom ..addr import hosts\n"
        "def now() -> float:\n    return time.monotonic()\n"
    ),
    "sync/__init__.py": "from sockit.sync.stream import connect\n",
    "sync/stream.py": "import socket\nfrom ..proto.buffer import now\nfrom . import connect\n",
    "aio/__init__.py": "from sockit.proto import buffer\n",
    "serve/__init__.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sockit.sync import x\n"
        "    from sockit.aio import y\n"
    ),
    "relay/__init__.py": "import sockit.serve\n",
    "testing/__init__.py": "import sockit\nfrom sockit import relay\n",
    "cli/__init__.py": "",
    "cli/main.py": (
        "def main() -> None:\n    from sockit import connect\n    import sockit.testing\n"
    ),
}


def make_tree(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / "sockit"
    for relative, source in files.items():
        path = package_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(source), encoding="utf-8")
    return package_dir


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    package_dir = make_tree(tmp_path, CLEAN_TREE)
    assert layering_violations(package_dir) == []
    assert sans_io_violations(package_dir) == []


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        pytest.param(
            "errors.py", "from sockit.addr import x\n", "errors (rank 0) may not", id="up"
        ),
        pytest.param(
            "sync/extra.py", "import sockit.aio\n", "sync (rank 3) may not depend on aio", id="twin"
        ),
        pytest.param(
            "aio/extra.py", "from ..sync import stream\n", "imports sockit.sync.stream", id="rel"
        ),
        pytest.param(
            "proto/extra.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sockit.sync import s\n",
            "(under TYPE_CHECKING",
            id="type-checking-up",
        ),
        pytest.param(
            "addr/extra.py",
            "def f() -> None:\n    import sockit.serve.x\n",
            "addr (rank 1) may not depend on serve",
            id="lazy-up",
        ),
        pytest.param(
            "abc.py", "from sockit.proto import buffer\n", "may import only addr, errors", id="abc"
        ),
        pytest.param(
            "addr/extra.py",
            "from sockit import connect\n",
            "may not depend on the package itself",
            id="root",
        ),
        pytest.param(
            "sync/extra.py", "import sockit\n", "may not depend on the package itself", id="cycle"
        ),
        pytest.param(
            "addr/extra.py", "from sockit.__main__ import x\n", "may not depend on __main__", id="m"
        ),
        pytest.param(
            "tls/__init__.py", "", "sockit.tls is a new top-level module or package", id="new"
        ),
        pytest.param(
            "cli/extra.py", "import sockit.nowhere\n", "add sockit.nowhere to RANKS", id="unknown"
        ),
        pytest.param(
            "proto/extra.py", "from .... import x\n", "relative import goes above", id="above"
        ),
    ],
)
def test_checker_rejects(tmp_path: Path, relative: str, source: str, expected: str) -> None:
    package_dir = make_tree(tmp_path, {**CLEAN_TREE, relative: source})
    problems = layering_violations(package_dir)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert f"sockit/{relative}" in problems[0] or "new top-level" in problems[0]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import socket\n", "imports socket"),
        ("import select as poll\n", "imports select"),
        ("from asyncio import sleep\n", "imports asyncio"),
        ("import concurrent.futures\n", "imports concurrent.futures"),
        ("from threading import Lock\n", "imports threading"),
        ("import subprocess\n", "imports subprocess"),
        ("from time import monotonic, sleep\n", "imports time.sleep"),
        ("import time as clock\nclock.sleep(1)\n", "calls time.sleep"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import selectors\n",
            "imports selectors",
        ),
    ],
)
def test_sans_io_checker_rejects(tmp_path: Path, source: str, expected: str) -> None:
    package_dir = make_tree(tmp_path, {**CLEAN_TREE, "proto/extra.py": source})
    problems = sans_io_violations(package_dir)
    assert len(problems) == 1, problems
    assert problems[0].startswith("sockit/proto/extra.py:")
    assert expected in problems[0]
