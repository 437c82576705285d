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
