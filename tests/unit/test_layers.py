"""The layout is the architecture. Packages form a DAG, bottom to top:

    crypto_pipeline (core library: settings, clients, rules, formats, replay, ledger, readback)
      <- spark_jobs (the Spark job; `spark_jobs.interface` is all anyone else sees of it)
      <- crypto_assets (the Dagster code location), crypto_api (the candles API and chart page)
      <- crypto_cli (the command line), which also drives local_stack (the local servers)

Inside Dagster only `definitions.py` reads the settings; no product module is over 400 lines and
no two share a file name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_pipeline.settings import REPO_ROOT

PACKAGES = (
    "crypto_pipeline",
    "spark_jobs",
    "crypto_assets",
    "crypto_api",
    "crypto_cli",
    "local_stack",
)
INTERFACE = "spark_jobs.interface"
# What each package may import of the product (itself included).
ALLOWED = {
    "crypto_pipeline": ("crypto_pipeline",),
    "spark_jobs": ("crypto_pipeline", "spark_jobs"),
    INTERFACE: ("crypto_pipeline", INTERFACE),
    "crypto_assets": ("crypto_pipeline", INTERFACE, "crypto_assets"),
    "crypto_api": ("crypto_pipeline", INTERFACE, "crypto_api"),
    "local_stack": ("crypto_pipeline", "local_stack"),
    "crypto_cli": (
        "crypto_pipeline",
        INTERFACE,
        "crypto_assets",
        "crypto_api",
        "local_stack",
        "crypto_cli",
    ),
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((REPO_ROOT / package).rglob("*.py"))]


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in product_files()}


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


def layer_of(name: str) -> str:
    return INTERFACE if within(name, INTERFACE) else name.split(".")[0]


def test_packages_form_a_dag_and_only_the_interface_of_the_job_is_imported() -> None:
    wrong = {
        (name, target)
        for name, tree in modules().items()
        for target in imported(tree)
        if target.split(".")[0] in PACKAGES
        and not any(within(target, allowed) for allowed in ALLOWED[layer_of(name)])
    }
    assert wrong == set()


def test_the_interface_of_the_job_and_the_dagster_code_load_without_pyspark() -> None:
    probe = (
        "import sys, crypto_assets.definitions, crypto_cli\n"
        "import spark_jobs.interface.config, spark_jobs.interface.launch\n"
        "import spark_jobs.interface.heartbeat, spark_jobs.interface.repair\n"
        "import spark_jobs.interface.summary, crypto_api.app\n"
        "assert 'pyspark' not in sys.modules, 'pyspark was loaded'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO_ROOT)


def test_no_product_module_is_over_the_limit_and_no_two_share_a_file_name() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): lines
        for path in product_files()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
    names: dict[str, list[str]] = {}
    for path in product_files():
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.name, []).append(str(path.relative_to(REPO_ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


@pytest.mark.parametrize("package", ["crypto_assets"])
def test_inside_dagster_only_the_definitions_read_the_environment(package: str) -> None:
    readers = set()
    for name, tree in modules().items():
        if not within(name, package):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "from_env"):
                readers.add(name)
            if isinstance(node, ast.ImportFrom) and node.module == "dotenv":
                readers.add(name)
    assert readers == {"crypto_assets.definitions"}
