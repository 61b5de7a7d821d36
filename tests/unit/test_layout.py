"""The package's layout rules that a reader cannot see from one file."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "rtbook"
CLI = PACKAGE / "cli"
PARSERS = frozenset({"argparse", "click", "optparse"})


def _imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every module imported, including ``importlib.import_module("x")`` and ``__import__("x")``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


def test_argument_parsing_happens_only_in_rtbook_cli() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(CLI):
            continue
        parsers = _imported_modules(ast.parse(path.read_text(), filename=str(path))) & PARSERS
        if parsers:
            offenders[str(path.relative_to(ROOT))] = sorted(parsers)
    assert offenders == {}, f"argument parsing belongs in rtbook/cli/: {offenders}"


def test_the_layout_check_sees_every_form_of_import() -> None:
    source = (
        "import argparse\nfrom click import command\nimport optparse as o\n"
        "import importlib\nimportlib.import_module('click.testing')\n__import__('argparse')\n"
        "from . import click\n"  # a relative import of a sibling named click is not the click package
    )
    assert _imported_modules(ast.parse(source)) >= PARSERS
    assert "click" not in _imported_modules(ast.parse("from . import click\nfrom .click import x\n"))


def test_rtbook_cli_does_parse_arguments() -> None:
    # The rule above is only meaningful while the CLI is where parsing lives.
    assert "click" in _imported_modules(ast.parse((CLI / "__init__.py").read_text()))
