"""The runtime declares exactly what ``src/`` imports, and ``src/`` never imports mlflow or boto3."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mlsvc_discover"

# Declared but not imported by src/, each for a reason written beside it in pyproject.toml.
DECLARED_NOT_IMPORTED = {"sniffio"}


def third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> files importing it, lazy imports inside functions included."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "mlsvc_discover":
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_runtime() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {normalise(re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def test_src_never_imports_mlflow_or_boto3() -> None:
    imports = third_party_imports()
    assert not {m: imports[m] for m in ("mlflow", "boto3") if m in imports}


def test_the_runtime_declares_exactly_what_src_imports() -> None:
    distributions = packages_distributions()
    # A top-level name several distributions install into (lightkube and lightkube-models share
    # the `lightkube` namespace) counts as an import of each of them.
    imported = {normalise(d) for module in third_party_imports() for d in distributions[module]}
    declared = declared_runtime()

    assert imported - declared == set(), "imported by src/ but not declared in [project] dependencies"
    assert declared - imported == DECLARED_NOT_IMPORTED, "declared but never imported by src/"


def test_the_version_is_written_once_in_pyproject_and_read_from_the_installed_metadata() -> None:
    import mlsvc_discover

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert mlsvc_discover.__version__ == project["version"]
    assert not re.search(r"__version__\s*=\s*['\"]\d+\.\d+", (SRC / "__init__.py").read_text(encoding="utf-8"))


def imported_modules(folder: Path) -> dict[str, list[str]]:
    """Every absolute import under ``folder`` -> the files importing it."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_bench_demo_and_the_test_support_never_import_from_tests() -> None:
    for folder in ("bench", "demo", "testing"):
        imports = imported_modules(REPO / folder)
        assert imports, folder
        assert {m: f for m, f in imports.items() if m == "tests" or m.startswith("tests.")} == {}, folder


def test_the_wheel_holds_only_src() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert setuptools["packages"]["find"] == {"where": ["src"]}
    assert not (REPO / "src" / "testing").exists()
