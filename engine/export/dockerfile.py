"""A container build context from an app's Image chain: a Dockerfile and the files it copies in.

Each Image builder becomes the Dockerfile lines that do what Modal's image builder does: the Python
version picks the base image, `apt_install` and `pip_install` become RUN lines, `env` becomes ENV,
`add_local_*` become COPY from files gathered into the context. The app file (and the local modules its
import loaded) go to /root, where Modal puts them, and mwtui itself is installed so that the container's
command, `mwtui worker APP --pool NAME`, is the replica mwtui runs locally. A builder that has no
faithful translation (`run_function`, `uv_sync`, ...) is left as a comment and a warning, never guessed.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_PYTHON = (3, 10)  # mwtui itself runs inside the container
ROOT = "/root"  # Modal's working directory, and where it puts the app's files
BUILD_TMP = "/tmp/mwtui-build"
UV_IMAGE = "ghcr.io/astral-sh/uv:latest"  # a static binary that can fetch a standalone CPython
MICROMAMBA_IMAGE = "mambaorg/micromamba:bookworm-slim"
CONSTRUCTORS = frozenset({
    "debian_slim", "micromamba", "from_registry", "from_aws_ecr", "from_gcp_artifact_registry",
    "from_dockerfile", "from_scratch", "from_id", "from_name",
})
PIP_ENV = "PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1"
NOT_TRANSLATED = {
    "run_function": "it runs a Python function at build time",
    "uv_sync": "it needs the project's uv workspace",
    "poetry_install_from_file": "it needs the project's poetry setup",
    "pip_install_private_repos": "it needs git credentials at build time",
}
IGNORED = {
    "entrypoint": "the container's command is `mwtui worker`",
    "cmd": "the container's command is `mwtui worker`",
    "shell": "it only affects `modal shell`",
}


@dataclass(frozen=True)
class Copy:
    """A file or folder to gather into the context: `source` on this machine -> `dest` in the context."""

    source: str
    dest: str
    only_python: bool = False  # add_local_python_source's default: .py files only
    ignore: tuple[str, ...] = ()  # glob patterns, relative to `source`


@dataclass
class BuildContext:
    name: str  # the image's name, without registry or tag
    pools: list[str]
    dockerfile: str = ""
    copies: list[Copy] = field(default_factory=list)
    python_version: str | None = None  # None: whatever the base image has
    warnings: list[str] = field(default_factory=list)


def _flatten(items: Iterable[Any]) -> list[str]:
    """Modal takes `*packages: str | list[str]`; blank entries are dropped."""
    out: list[str] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        elif isinstance(item, str) and item.strip():
            out.append(item.strip())
    return out


def _quote_all(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _json(*words: str) -> str:
    return json.dumps(list(words))


def _env_value(value: str) -> str:
    # ENV takes a double-quoted string; `$` would be expanded by the builder, so escape it too.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _remote(path: Any, fallback: str) -> str:
    text = str(path) if path else fallback
    return text if text.startswith("/") else posixpath.join(ROOT, text)


def _patterns(ignore: Any) -> tuple[tuple[str, ...], bool]:
    """(glob patterns, fully understood?) from Modal's `ignore=`: a list of globs or a FilePatternMatcher."""
    if not ignore:
        return (), True
    if isinstance(ignore, dict) and "__patterns__" in ignore:
        return tuple(ignore["__patterns__"]), True
    if isinstance(ignore, list) and all(isinstance(p, str) for p in ignore):
        return tuple(ignore), True
    return (), False


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


class _Builder:
    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self.lines: list[str] = []
        self.workdir: str | None = None
        self.micromamba = False
        self._n = 0

    # --- helpers ------------------------------------------------------------------------------------

    def warn(self, text: str) -> None:
        self.ctx.warnings.append(f"image `{self.ctx.name}`: {text}")

    def slot(self) -> str:
        """A fresh folder in the context for one call's files."""
        self._n += 1
        return f"files/{self._n}"

    def gather(self, source: str | None, dest: str, *, what: str, **kw: Any) -> bool:
        if not source or not os.path.exists(source):
            self.warn(f"{what}: {source or 'no path'} does not exist here, so it is not copied in")
            self.lines.append(f"# NOT COPIED ({what}): {source} does not exist")
            return False
        self.ctx.copies.append(Copy(source, dest, **kw))
        return True

    def run(self, command: str) -> None:
        # A command with newlines only survives the JSON form.
        self.lines.append(f"RUN {_json('/bin/sh', '-c', command)}" if "\n" in command else f"RUN {command}")

    def pip(self, packages: Sequence[str], requirements: Sequence[str] = (), **kw: Any) -> None:
        args: list[str] = []
        for r in requirements:
            args += ["-r", r]
        if kw.get("index_url"):
            args += ["--index-url", str(kw["index_url"])]
        if kw.get("extra_index_url"):
            args += ["--extra-index-url", str(kw["extra_index_url"])]
        if kw.get("find_links"):
            args += ["--find-links", str(kw["find_links"])]
        if kw.get("pre"):
            args.append("--pre")
        extra = shlex.split(str(kw.get("extra_options") or ""))
        if not packages and not requirements:
            return
        self.run(f"python -m pip install {_quote_all([*args, *extra, *packages])}")

    # --- the base -------------------------------------------------------------------------------------

    def base(self, call: dict[str, Any] | None) -> None:
        """FROM and what makes it ready for pip (and for mwtui)."""
        name = call["name"] if call else "debian_slim"
        self._from(call)
        self.lines.append(f"ENV {PIP_ENV}")
        if name in ("from_registry", "from_aws_ecr", "from_gcp_artifact_registry", "from_dockerfile"):
            # A distribution's own Python refuses system-wide pip installs (PEP 668); Modal installs anyway.
            self.lines.append("ENV PIP_BREAK_SYSTEM_PACKAGES=1")
        self.lines.append(f"WORKDIR {ROOT}")

    def _from(self, call: dict[str, Any] | None) -> None:
        name = call["name"] if call else "debian_slim"
        args, kwargs = (call["args"], call["kwargs"]) if call else ([], {})
        local_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        if name == "debian_slim" or name not in CONSTRUCTORS or name in ("from_scratch", "from_id", "from_name"):
            if name != "debian_slim":
                what = f"Image.{name}()" if name in CONSTRUCTORS else f"an image starting with `{name}`"
                self.warn(f"{what} has no local definition to build from; using Image.debian_slim() instead")
            version = str(kwargs.get("python_version") or (args[0] if args else "") or local_version)
            self.ctx.python_version = version
            self.lines.append(f"FROM python:{version}-slim-bookworm")
        elif name == "micromamba":
            version = str(kwargs.get("python_version") or (args[0] if args else "") or local_version)
            self.ctx.python_version = version
            self.micromamba = True
            self.lines += [
                f"FROM {MICROMAMBA_IMAGE}",
                "USER root",
                "ENV PATH=/opt/conda/bin:$PATH",
                f"RUN micromamba install -y -n base -c conda-forge python={version} pip && micromamba clean -a -y",
            ]
        elif name == "from_dockerfile":
            self._from_dockerfile(call or {})
        else:  # from_registry, from_aws_ecr, from_gcp_artifact_registry: pulling is the builder's business
            tag = str(args[0] if args else kwargs.get("tag", ""))
            self.lines.append(f"FROM {tag}")
            self.lines += [str(c) for c in _flatten(kwargs.get("setup_dockerfile_commands") or [])]
            self._add_python(kwargs.get("add_python"))

    def _add_python(self, version: Any) -> None:
        if not version:
            self.warn("the base image must provide Python 3.10+ with pip (mwtui runs in it); "
                      "pass add_python=... to add one")
            return
        self.ctx.python_version = str(version)
        self.lines += [
            f"COPY --from={UV_IMAGE} /uv /usr/local/bin/uv",
            "ENV UV_PYTHON_INSTALL_DIR=/opt/uv-python",
            f"RUN uv venv --seed --python {shlex.quote(str(version))} /opt/python",
            "ENV PATH=/opt/python/bin:$PATH VIRTUAL_ENV=/opt/python",
        ]

    def _from_dockerfile(self, call: dict[str, Any]) -> None:
        path = (call.get("local") or {}).get("path")
        try:
            with open(path or "", encoding="utf-8") as f:
                text = f.read()
        except OSError:
            self.warn(f"Image.from_dockerfile: cannot read {path}; using Image.debian_slim() instead")
            self._from(None)
            return
        self.lines.append(f"# --- from {path} ---")
        self.lines += text.rstrip().splitlines()
        self.lines.append("# --- end of it ---")
        if any(ln.strip().upper().startswith(("COPY", "ADD")) for ln in text.splitlines()):
            self.warn(f"{path} copies files from its own build context; put them next to this Dockerfile "
                      "(or build from there)")
        if call["kwargs"].get("build_args"):
            self.warn(f"build_args of {path}: pass them to `docker build` as --build-arg")
        self._add_python(call["kwargs"].get("add_python"))

    # --- every other builder ------------------------------------------------------------------------------

    def call(self, call: dict[str, Any]) -> None:
        name, args, kwargs = call["name"], call["args"], call["kwargs"]
        local = call.get("local") or {}
        handler = getattr(self, f"_do_{name}", None)
        if handler is not None:
            handler(args, kwargs, local)
        elif name in NOT_TRANSLATED:
            self.warn(f"Image.{name}() is not translated ({NOT_TRANSLATED[name]}); add it to the Dockerfile by hand")
            self.lines.append(f"# NOT TRANSLATED: Image.{name}(...): {NOT_TRANSLATED[name]}")
        elif name in IGNORED:
            self.lines.append(f"# Image.{name}(...) left out: {IGNORED[name]}")
        elif name in CONSTRUCTORS:
            self.warn(f"Image.{name}() in the middle of a chain is not supported; ignored")
        else:
            self.warn(f"Image.{name}() is not known to mwtui's exporter; add it to the Dockerfile by hand")
            self.lines.append(f"# NOT TRANSLATED: Image.{name}(...)")

    def _do_apt_install(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        packages = _flatten(args)
        if packages:
            self.run("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                     f"{_quote_all(packages)} && rm -rf /var/lib/apt/lists/*")

    def _do_pip_install(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        self.pip(_flatten(args), **kwargs)

    def _do_uv_pip_install(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        requirements = [self._requirements_file(p, "uv_pip_install") for p in local.get("requirements", [])]
        self.pip(_flatten(args), [r for r in requirements if r], **kwargs)

    def _requirements_file(self, path: str | None, what: str) -> str | None:
        slot = self.slot()
        base = os.path.basename(path or "requirements.txt")
        if not self.gather(path, f"{slot}/{base}", what=what):
            return None
        self.lines.append(f"COPY {_json(f'{slot}/{base}', f'{BUILD_TMP}/{slot}/{base}')}")
        return f"{BUILD_TMP}/{slot}/{base}"

    def _do_pip_install_from_requirements(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        target = self._requirements_file(local.get("path"), "pip_install_from_requirements")
        if target:
            find_links = args[1] if len(args) > 1 else kwargs.get("find_links")
            self.pip([], [target], **{**kwargs, "find_links": find_links})

    def _do_pip_install_from_pyproject(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        path = local.get("path")
        try:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            with open(path or "", "rb") as f:
                project = tomllib.load(f).get("project", {})
        except (ModuleNotFoundError, OSError, ValueError) as e:
            self.warn(f"pip_install_from_pyproject: cannot read {path} ({e}); its dependencies are not installed")
            return
        packages = list(project.get("dependencies", []))
        groups = args[1] if len(args) > 1 else kwargs.get("optional_dependencies") or []
        for group in groups:
            packages += project.get("optional-dependencies", {}).get(group, [])
        self.pip(packages, **kwargs)

    def _do_micromamba_install(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        if not self.micromamba:
            self.warn("micromamba_install on an image that is not Image.micromamba(); the command may fail")
        words = ["micromamba", "install", "-y", "-n", "base"]
        for channel in kwargs.get("channels") or []:
            words += ["-c", str(channel)]
        spec = local.get("spec_file")
        if spec:
            slot = self.slot()
            dest = f"{slot}/{os.path.basename(spec)}"
            if self.gather(spec, dest, what="micromamba_install spec_file"):
                self.lines.append(f"COPY {_json(dest, f'{BUILD_TMP}/{dest}')}")
                words += ["-f", f"{BUILD_TMP}/{dest}"]
        self.run(f"{_quote_all([*words, *_flatten(args)])} && micromamba clean -a -y")

    def _do_run_commands(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        for command in _flatten(args):
            self.run(command)
        if kwargs.get("secrets"):
            self.warn("run_commands(secrets=...): build-time secrets are not passed to `docker build`")

    def _do_dockerfile_commands(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        commands = _flatten(args)
        self.lines += commands
        if any(c.upper().startswith(("COPY", "ADD")) for c in commands):
            self.warn("dockerfile_commands copy files from Modal's context; put them in this context by hand")

    def _do_env(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        values = args[0] if args else kwargs.get("vars", {})
        pairs = [f"{k}={_env_value(str(v))}" for k, v in dict(values or {}).items() if v is not None]
        if pairs:
            self.lines.append("ENV " + " ".join(pairs))

    def _do_workdir(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        path = str(args[0] if args else kwargs.get("path", ROOT))
        self.workdir = path
        self.lines.append(f"WORKDIR {path}")

    def _do_add_local_file(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        source = local.get("path")
        base = os.path.basename(source or "file")
        remote = _remote(args[1] if len(args) > 1 else kwargs.get("remote_path"), posixpath.join(ROOT, base))
        dest = f"{self.slot()}/{base}"
        if self.gather(source, dest, what="add_local_file"):
            self.lines.append(f"COPY {_json(dest, remote)}")

    def _do_add_local_dir(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        source = local.get("path")
        remote = _remote(args[1] if len(args) > 1 else kwargs.get("remote_path"), ROOT)
        patterns, understood = _patterns(kwargs.get("ignore"))
        if not understood:
            self.warn(f"add_local_dir({source}): an `ignore` callable cannot be applied here; everything is copied")
        dest = self.slot()
        if self.gather(source, dest, what="add_local_dir", ignore=patterns):
            self.lines.append(f"COPY {_json(dest + '/', remote.rstrip('/') + '/')}")

    def _do_add_local_python_source(self, args: list[Any], kwargs: dict[str, Any], local: dict[str, Any]) -> None:
        patterns, understood = _patterns(kwargs.get("ignore"))
        only_python = "ignore" not in kwargs  # Modal's default ignores every non-Python file
        for module in local.get("modules", []):
            name, path = module["module"], module["path"]
            if not path:
                self.warn(f"add_local_python_source: module `{name}` is not importable here, so it is not copied in")
                continue
            slot = self.slot()
            if module["package"]:
                if self.gather(path, slot, what=f"add_local_python_source({name})", only_python=only_python,
                               ignore=patterns):
                    self.lines.append(f"COPY {_json(slot + '/', posixpath.join(ROOT, *name.split('.')) + '/')}")
            else:
                dest = f"{slot}/{os.path.basename(path)}"
                if self.gather(path, dest, what=f"add_local_python_source({name})"):
                    self.lines.append(f"COPY {_json(dest, posixpath.join(ROOT, *name.split('.')) + '.py')}")


def build_context(
    name: str,
    calls: Sequence[dict[str, Any]] | None,
    *,
    pools: list[str],
    app_file: str,
    app_var: str | None = None,
    app_sources: Sequence[str] = (),
    mwtui_requirement: str | None = None,
) -> BuildContext:
    """The Dockerfile for one image, and what to copy in. `app_sources` are the app folder's other
    Python files its import loaded; `mwtui_requirement` installs mwtui from an index instead of the
    copy of this installation that `vendor` puts in `mwtui-dist/`."""
    ctx = BuildContext(name=name, pools=list(pools))
    b = _Builder(ctx)
    chain = list(calls or [])
    head = chain.pop(0) if chain and chain[0]["name"] in CONSTRUCTORS else None
    b.lines.append("# syntax=docker/dockerfile:1")
    b.lines.append(f"# Generated by `mwtui export knative` for pool(s): {', '.join(pools)}.")
    b.lines.append("# The app's Image chain, in order:" if calls else "# No Image given: Modal's default, debian_slim.")
    b.base(head)
    for call in chain:
        b.call(call)
    if ctx.python_version and _version_tuple(ctx.python_version) < MIN_PYTHON:
        b.warn(f"Python {ctx.python_version}: mwtui needs 3.10 or newer in the container")

    b.lines.append("# mwtui itself: the container runs `mwtui worker`, the same replica mwtui runs locally.")
    if mwtui_requirement:
        b.run(f"python -m pip install {shlex.quote(mwtui_requirement)}")
    else:
        b.lines.append(f"COPY {_json('mwtui-dist/', '/tmp/mwtui-dist/')}")
        b.run("python -m pip install /tmp/mwtui-dist && rm -rf /tmp/mwtui-dist")
    b.lines.append(f"# The app file and the local modules it imports, where Modal puts them: {ROOT}.")
    folder = os.path.dirname(app_file)
    for source in [app_file, *app_sources]:
        ctx.copies.append(Copy(source, "app/" + os.path.relpath(source, folder)))
    b.lines.append(f"COPY {_json('app/', ROOT + '/')}")
    b.lines.append(f"WORKDIR {b.workdir or ROOT}")
    b.lines.append(f"ENTRYPOINT {_json('mwtui', 'worker', app_ref_in_image(app_file, app_var))}")
    ctx.dockerfile = "\n".join(b.lines) + "\n"
    return ctx


def app_ref_in_image(app_file: str, app_var: str | None = None) -> str:
    """`/root/app.py`, or `/root/app.py::var`: what `mwtui worker` is given in the container."""
    path = posixpath.join(ROOT, os.path.basename(app_file))
    return f"{path}::{app_var}" if app_var else path
