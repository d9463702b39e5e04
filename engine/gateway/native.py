"""The gateway's hot path compiled with mypyc, and the choice, at import, between it and the sources.

The modules in MODULES are plain, type-annotated Python. `python -m mwtui.engine.gateway --compile`
(run by `make`) compiles them, unchanged, into extension modules beside their sources, and writes a
stamp holding the digest of the sources they were built from. Compiled, the gateway spends less CPU
per proxied request (figures in bench/RESULTS.md).

Python imports an extension module before a source file of the same name, so a build older than its
sources would run stale code. `choose()`, called when the package is imported, loads all five from
their sources instead whenever the stamp does not match them (or MWTUI_PURE_GATEWAY=1 asks for it):
never a mix, since compiled modules call each other's native classes directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# In import order: each imports only those before it (and modules that are never compiled).
MODULES = ("wire", "metrics", "routes", "proxy", "server")
PACKAGE = "mwtui.engine.gateway"
GROUP = "_native"  # the shared library mypyc builds for the group: `_native__mypyc.<abi>.so`
STAMP = "_native.sha256"
MYPY = "mypy==1.13.0"  # the compiler; the build installs nothing itself (see the Makefile)
FOLDER = Path(__file__).resolve().parent

COMPILED = "compiled"
STALE = "stale"  # built, but from other sources: the sources run
ABSENT = "absent"  # never built (or the build failed): the sources run


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in MODULES:
        h.update(name.encode() + b"\0" + (folder / f"{name}.py").read_bytes() + b"\0")
    return h.hexdigest()


def state(folder: Path) -> str:
    """Whether `folder` holds a build of exactly its current sources."""
    stamp = folder / STAMP
    if not stamp.exists() or not all(_built(folder, name) for name in MODULES):
        return ABSENT
    return COMPILED if stamp.read_text().strip() == digest(folder) else STALE


def _built(folder: Path, name: str) -> bool:
    return any(folder.glob(f"{name}.*.so")) or any(folder.glob(f"{name}.*.pyd"))


def choose() -> str:
    """Make the package's next imports of MODULES use the compiled build, or the sources; say which."""
    current = state(FOLDER)
    if current == COMPILED and os.environ.get("MWTUI_PURE_GATEWAY") != "1":
        return COMPILED
    if current == ABSENT:
        return ABSENT  # nothing compiled to step around: the normal import finds the sources
    for name in MODULES:
        fullname = f"{PACKAGE}.{name}"
        if fullname in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(fullname, FOLDER / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        spec.loader.exec_module(module)
    return "sources" if current == COMPILED else STALE


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
