"""The build hook: a wheel (and `pip install .`, pipx, `uv tool install`) carries the gateway's hot path
compiled with mypyc, as black and mypy ship theirs. Everything else about the project is in
pyproject.toml.

The build copies the sources as usual, then compiles `mwtui.engine.gateway`'s hot-path modules in the
build folder (engine/gateway/native.py does the work, exactly as `python -m mwtui.engine.gateway
--compile` does for a checkout) and tags the wheel for this platform. Where that cannot be done (no C
compiler, no mypyc) the build says so in one line and ships the pure sources, which run as they are.
An editable install (`make`) compiles in place instead, with its own step.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent


def _can_compile() -> str | None:
    """Why the gateway cannot be compiled here; None when it can."""
    if os.environ.get("MWTUI_PURE_GATEWAY") == "1":
        return "MWTUI_PURE_GATEWAY=1"
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed in the build environment"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    return None


WHY_NOT = _can_compile()


def _native_module() -> object:
    spec = importlib.util.spec_from_file_location("mwtui_native_build", HERE / "engine" / "gateway" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """Copy the sources, then compile the gateway's hot path beside them in the build folder."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the checkout is the package: `make` compiles it in place
        if WHY_NOT is not None:
            print(f"mwtui: the gateway is built from its sources only ({WHY_NOT}); it runs, more slowly",
                  file=sys.stderr)
            return
        gateway = Path(self.build_lib) / "mwtui" / "engine" / "gateway"
        try:
            _native_module().build(gateway)  # type: ignore[attr-defined]
        except (RuntimeError, OSError) as e:
            print(f"mwtui: compiling the gateway failed, so it is built from its sources only: {e}", file=sys.stderr)
            return
        print(f"mwtui: the gateway's hot path is compiled into {gateway}", file=sys.stderr)


class BinaryDistribution(Distribution):
    """A wheel with the compiled gateway is for this platform and Python only."""

    def has_ext_modules(self) -> bool:
        return WHY_NOT is None


setup(cmdclass={"build_py": BuildPy}, distclass=BinaryDistribution)
