"""mwtui itself, as a pip-installable source tree inside a build context (`mwtui-dist/`).

The container runs `mwtui worker`, so the image needs this very mwtui, whether it is installed from a
checkout (editable) or from a wheel. Its three packages are copied from where Python imports them, with
a minimal pyproject.toml that declares the same dependencies and the `mwtui` command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

PACKAGES = ("engine", "tui", "assets")  # installed as mwtui.engine, mwtui.tui, mwtui.assets
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def runtime_requirements() -> list[str]:
    """mwtui's dependencies, without the optional extras (tests, demo)."""
    try:
        requires = importlib.metadata.requires("mwtui") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [r for r in requires if "extra" not in r.partition(";")[2]]


def version() -> str:
    try:
        return importlib.metadata.version("mwtui")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def pyproject() -> str:
    deps = ",\n".join(f"    {json.dumps(r)}" for r in runtime_requirements())
    return f"""# Written by `mwtui export`: mwtui {version()}, copied from the installation that exported this app.
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mwtui"
version = "{version()}"
requires-python = ">=3.10"
dependencies = [
{deps}
]

[project.scripts]
mwtui = "mwtui.tui.cli:main"

[tool.setuptools.packages.find]
where = ["src"]
include = ["mwtui*"]
namespaces = true

[tool.setuptools.package-data]
"*" = ["*.tcss", "*.yaml", "*.md", "*.json", "*.txt"]
"""


def write(dest: Path) -> None:
    """Fill `dest` (created) with mwtui's source tree and its pyproject.toml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        module = importlib.import_module(f"mwtui.{name}")
        folder = Path(os.path.dirname(module.__file__ or ""))
        shutil.copytree(folder, dest / "src" / "mwtui" / name, ignore=SKIP, dirs_exist_ok=True)
    (dest / "pyproject.toml").write_text(pyproject(), encoding="utf-8")
