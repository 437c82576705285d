"""The house rules, checked: the layer contract of pyproject.toml (import-linter), no re-export shims."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lapmusic"


def test_the_layer_contract_is_kept():
    cli = pytest.importorskip("importlinter.cli")  # a test tool (pip install -e .[test])
    assert cli.lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml")) == cli.EXIT_STATUS_SUCCESS, \
        "an import breaks the layer contract: run lint-imports to see which"


def modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_level_getattr_shims(path):
    tree = ast.parse(path.read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "__getattr__" not in names, f"{path}: names are imported from their home module, not through a shim"


def test_at_most_twelve_modules_directly_under_the_package():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 12, f"{len(top)} modules directly under lapmusic/: {top}; give them a subpackage"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_reads_in_one_sitting(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.relative_to(PACKAGE)} has {lines} lines: split it along a seam of responsibility"


@pytest.mark.parametrize("path", [p for p in modules() if p.name != "__init__.py"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unused_import_is_kept_for_callers(path):
    # ruff (make test) flags unused imports; a "noqa: F401" on a lapmusic import would keep a re-export alive.
    kept = [line for line in path.read_text().splitlines()
            if "noqa: F401" in line and line.lstrip().startswith(("from lapmusic", "import lapmusic"))]
    assert not kept, f"{path}: import these names from their home modules instead: {kept}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_package_imports_none_of_its_modules(path):
    # Importing lapmusic.jobs.worker must not pull in torch through lapmusic/training/__init__.py, say.
    tree = ast.parse(path.read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not imports, f"{path}: name the modules in the docstring; callers import from them"
