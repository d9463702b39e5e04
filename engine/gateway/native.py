"""The gateway's hot path compiled with mypyc, and the choice, at import, between it and the sources.

The modules in MODULES are plain, type-annotated Python. `python -m mwtui.engine.gateway --compile`
(run by `make`) compiles them, unchanged, into extension modules beside their sources, and writes a
stamp holding the digest of the sources they were built from. Compiled, the gateway spends less CPU
per proxied request (figures in bench/RESULTS.md).

Python imports an extension module before a source file of the same name, so a build older than its
sources would run stale code. `choose()`, called when the package is imported, makes all five load
from their sources instead (a finder ahead of the normal ones) unless every one is built and the stamp
matches the sources they depend on, or when MWTUI_PURE_GATEWAY=1 asks for it: never a mix, since
compiled modules call each other's native classes directly.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.machinery import ModuleSpec
from pathlib import Path

# The hot path: what the gateway runs per request.
MODULES = ("wire", "metrics", "routes", "inspector", "proxy", "upstream", "client", "waiting", "listeners", "server")
PACKAGE = "mwtui.engine.gateway"
GROUP = "_native"  # the shared library mypyc builds for the group: `_native__mypyc.<abi>.so`
STAMP = "_native.sha256"
MYPY = "mypy==1.13.0"  # the compiler; the build installs nothing itself (see the Makefile)
FOLDER = Path(__file__).resolve().parent

COMPILED = "compiled"
STALE = "stale"  # something is built, but not all of it, or not from these sources: the sources run
ABSENT = "absent"  # nothing built (or the build failed): the sources run


def sources(folder: Path) -> list[Path]:
    """What a build depends on: the whole package (compiled code calls the rest with fixed types)
    and the two engine modules it imports."""
    return [*sorted(folder.glob("*.py")), folder.parent / "params.py", folder.parent / "ports.py"]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sources(folder):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def state(folder: Path) -> str:
    """Whether `folder` holds a whole build of exactly its current sources."""
    built = {p.name.split(".")[0] for p in folder.iterdir() if p.suffix in (".so", ".pyd")}
    if not built:
        return ABSENT
    stamp = folder / STAMP
    whole = {*MODULES, f"{GROUP}__mypyc"} <= built
    if whole and stamp.exists() and stamp.read_text().strip() == digest(folder):
        return COMPILED
    return STALE


class _Sources(importlib.abc.MetaPathFinder):
    """Finds MODULES as their .py files, ahead of the extension modules beside them."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, FOLDER / f"{name}.py")


def choose() -> str:
    """Make later imports of MODULES use the compiled build, or the sources; say which. Nothing is
    imported here: a process that never imports them (the engine) pays nothing."""
    current = state(FOLDER)
    if current == COMPILED and os.environ.get("MWTUI_PURE_GATEWAY") != "1":
        return COMPILED
    if current != ABSENT and not any(isinstance(f, _Sources) for f in sys.meta_path):
        sys.meta_path.insert(0, _Sources())
    return "sources" if current == COMPILED else current


def running_compiled() -> bool:
    module = sys.modules.get(f"{PACKAGE}.proxy")
    return module is not None and not str(getattr(module, "__file__", "")).endswith(".py")


SETUP = """
from setuptools import setup
from mypyc.build import mypycify

files = {files!r}
setup(
    name="mwtui-gateway-native",
    packages=[],
    ext_modules=mypycify(["--ignore-missing-imports", *files], separate=[(files, {group!r})]),
    script_args=["build_ext", "--inplace", "-q"],
)
"""


def build(folder: Path = FOLDER) -> None:
    """Compile MODULES in a staging copy of the engine (mypyc names modules after their folders, so
    it must see `mwtui/engine/...`), then move the extension modules beside the sources."""
    engine = folder.parent
    with tempfile.TemporaryDirectory(prefix="mwtui-native-") as tmp:
        stage = Path(tmp)
        shutil.copytree(engine, stage / "mwtui" / "engine",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", STAMP))
        (stage / "mwtui" / "__init__.py").write_text("")
        files = [f"mwtui/engine/gateway/{name}.py" for name in MODULES]
        (stage / "setup_native.py").write_text(SETUP.format(files=files, group=f"{PACKAGE}.{GROUP}"))
        done = subprocess.run([sys.executable, "setup_native.py"], cwd=stage, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError((done.stdout + done.stderr).strip()[-4000:])
        built = sorted((stage / "mwtui" / "engine" / "gateway").glob("*.so"))
        if not built:
            raise RuntimeError("mypyc finished but left no extension module")
        for old in [*folder.glob("*.so"), folder / STAMP]:
            old.unlink(missing_ok=True)
        for so in built:
            shutil.copy2(so, folder / so.name)
        (folder / STAMP).write_text(digest(stage / "mwtui" / "engine" / "gateway") + "\n")


def compile_here() -> int:
    """`python -m mwtui.engine.gateway --compile`: build, and say what happened."""
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print(f"mwtui: mypyc is not installed ({MYPY}); the gateway runs from its sources",
              file=sys.stderr)
        return 1
    try:
        build()
    except (RuntimeError, OSError) as e:
        print(f"mwtui: compiling the gateway failed; it runs from its sources:\n{e}", file=sys.stderr)
        return 1
    print(f"mwtui: gateway compiled ({', '.join(MODULES)}) into {FOLDER}")
    return 0
