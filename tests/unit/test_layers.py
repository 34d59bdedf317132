"""The layout is the architecture: libraries at the bottom (settings, clients, replay, readback,
the stack builder, the Spark job), the Dagster code location and the command line on top. A lower
layer never imports a higher one, and inside Dagster only `definitions.py` reads the settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crypto_pipeline.settings import REPO_ROOT

PACKAGES = ("crypto_pipeline", "crypto_assets", "spark_jobs")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text())
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


def imported(tree: ast.Module) -> set[str]:
    """Every module imported anywhere in the file (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# (importing modules, modules they must never import)
RULES = [
    ("crypto_pipeline", ("crypto_assets", "crypto_cli")),
    ("spark_jobs", ("crypto_assets", "crypto_cli", "local_stack")),
    ("crypto_assets", ("crypto_cli", "local_stack")),
]


@pytest.mark.parametrize(("layer", "forbidden"), RULES)
def test_no_layer_imports_one_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        (name, target)
        for name, tree in modules().items()
        if within(name, layer) and not within(name, "crypto_cli")
        for target in imported(tree)
        if any(within(target, f) for f in forbidden)
    }
    assert wrong == set()


def test_inside_dagster_only_the_definitions_read_the_environment() -> None:
    readers = set()
    for name, tree in modules().items():
        if not within(name, "crypto_assets"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "from_env"):
                readers.add(name)
            if isinstance(node, ast.ImportFrom) and node.module == "dotenv":
                readers.add(name)
    assert readers == {"crypto_assets.definitions"}
