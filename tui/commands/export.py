"""`mwtui export knative APP`: the same app file, with the same knobs, on a Knative cluster.

Writes the bundle (see `mwtui.engine.export.bundle`), then prints what was written, what did not carry
over as is, the `kubectl create secret` commands (values never inline) and the commands that build,
load and apply it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from mwtui.tui.cli_values import k8s_namespace, one_line, output_folder, positive_int, registry


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="write deployment files to run the app elsewhere (knative)",
        description="Write deployment files that run the same app file elsewhere.",
    )
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    k = targets.add_parser(
        "knative",
        help="Knative Services, DomainMappings, a kustomization and container build contexts",
        description="Per pool (function, or class with its web methods): a Knative Service whose "
        "autoscaling mirrors Modal's knobs, a DomainMapping per custom domain, a kustomization.yaml, "
        "and a build context (Dockerfile from the app's Image chain) whose image runs "
        "`mwtui worker APP --pool NAME`.",
    )
    k.add_argument("app", help="path/to/app.py or path/to/app.py::app_variable")
    k.add_argument("-o", "--output", type=output_folder, default=None, help="folder to write (default ./<app>-knative)")
    k.add_argument(
        "--registry", type=registry, default=None,
        help="image registry prefix, e.g. ghcr.io/me (default dev.local: load images into a local cluster)",
    )
    k.add_argument("--namespace", type=k8s_namespace, default=None, help="Kubernetes namespace (default: the current one)")
    k.add_argument(
        "--public", action="store_true",
        help="export requires_proxy_auth endpoints publicly too (default: cluster-local)",
    )
    k.add_argument(
        "--max-timeout", type=positive_int, default=None, metavar="SECONDS",
        help="the cluster's max-revision-timeout-seconds (default 600, Knative's default): timeouts are capped to it",
    )
    k.add_argument(
        "--mwtui-requirement", type=one_line, default=None, metavar="SPEC",
        help="install mwtui in the image with pip from SPEC (e.g. mwtui==0.1.0) instead of copying this one",
    )


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    from mwtui.engine.export import ExportError, ExportOptions, export_knative
    from mwtui.engine.export.bundle import DEFAULT_REGISTRY
    from mwtui.engine.export.knative import DEFAULT_MAX_TIMEOUT
    from mwtui.engine.loader import AppRef
    from mwtui.tui.cli_values import checked_app

    ref = checked_app(AppRef.parse(args.app))
    options = ExportOptions(
        out_dir=args.output,
        registry=args.registry or DEFAULT_REGISTRY,
        namespace=args.namespace,
        public=args.public,
        max_timeout=args.max_timeout or DEFAULT_MAX_TIMEOUT,
        mwtui_requirement=args.mwtui_requirement,
    )
    try:
        result = export_knative(ref, options)
    except ExportError as e:
        print(f"mwtui: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output folder: not writable, or a file on its path
        print(f"mwtui: cannot write the bundle: {e.strerror or e}: {e.filename or args.output}", file=sys.stderr)
        return 1
    out = _rel(result.out_dir)
    print(f"Exported {result.app_name} for Knative into {out}/")
    for export in result.pools:
        print(f"  {export.service.filename:<40} pool {export.pool}")
        for dm in export.domain_mappings:
            print(f"  {dm.filename:<40} {dm.name} -> {export.service.name}")
    print(f"  {'kustomization.yaml':<40} all of the above")
    for image in result.images:
        print(f"  {_rel(image.context) + '/':<40} image {image.ref} (pools: {', '.join(image.pools)})")
    for w in result.warnings:
        print(f"warning: {w}")
    if result.notes:
        print("\nNot carried over as is:")
        for note in result.notes:
            print(f"  - {note}")
    if result.secrets:
        print("\nSecrets (referenced by name; make them in the cluster first, values are read where they live):")
        for secret in result.secrets:
            keys = f" (keys: {', '.join(secret.keys)})" if secret.keys else ""
            print(f"  # {secret.name}: {secret.source}{keys}, for {', '.join(secret.pools)}")
            print(f"  {' '.join(secret.command)}")
    print("\nThen build the images and apply:")
    for image in result.images:
        print(f"  docker build -t {image.ref} {_rel(image.context)}")
        if result.local_registry:
            print(f"  kind load docker-image {image.ref}   # or your local cluster's equivalent")
        else:
            print(f"  docker push {image.ref}")
    print(f"  kubectl apply -k {out}")
    return 0
