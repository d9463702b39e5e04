"""Knative documents for one pool: a Service (serving.knative.dev/v1) and a DomainMapping per custom domain.

Modal's knobs map one to one where Knative has the same knob (MODAL_SEMANTICS §8):

    min_containers    -> autoscaling.knative.dev/min-scale
    max_containers    -> autoscaling.knative.dev/max-scale ("0", Knative's "no limit", when None)
    target_inputs     -> autoscaling.knative.dev/target, with metric "concurrency" (the KPA's metric)
                         and target-utilization-percentage "100": Knative otherwise scales out at 70%
                         of the target, and Modal's target is the number itself
    max_inputs        -> containerConcurrency (a hard limit per container, as Modal's max_inputs)
    scaledown_window  -> autoscaling.knative.dev/scale-down-delay
    timeout           -> timeoutSeconds, capped at the cluster's max-revision-timeout-seconds
    web_server(port, startup_timeout) -> the container port, a TCP readiness probe, and a TCP startup
                         probe that gives up after startup_timeout seconds

What Knative has no knob for is said in the manifest's header comment and returned as a note:
`buffer_containers`, proxy auth (exported cluster-local instead, unless public), volumes,
`single_use_containers`.

Documents are plain dicts, checked against the CRD schemas by `validate` before anything is written.
(cloudcoil's generated Knative models were tried: that package installs a pytest plugin that breaks
every test run lacking `filelock`, and adds a Kubernetes client we do not use.)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..labels import default_label, normalize
from ..manifest import PoolSpec
from .introspect import PoolInfo

SERVICE_API = "serving.knative.dev/v1"
DOMAIN_MAPPING_API = "serving.knative.dev/v1beta1"
DEFAULT_MAX_TIMEOUT = 600  # Knative's default max-revision-timeout-seconds (config-defaults)
MAX_CONTAINER_CONCURRENCY = 1000  # Knative's default container-concurrency-max-limit
DEFAULT_PORT = 8080  # what Knative sets $PORT to when the container names no port
DEFAULT_PROGRESS_DEADLINE = 600  # seconds Knative gives a new revision to become ready
# Ports of Knative's queue-proxy sidecar in the same pod: the user's container cannot have them.
RESERVED_PORTS = frozenset({8012, 8013, 8022, 8112, 9090, 9091})
MAX_SERVICE_NAME = 57  # a DNS label (63) minus the revision suffix Knative adds ("-00001")
AUTOSCALING = "autoscaling.knative.dev"
VISIBILITY_LABEL = "networking.knative.dev/visibility"
SECRETS_FROM_ENV = "MWTUI_SECRETS_FROM_ENV"  # read by tui/commands/worker.py in the container


@dataclass
class Document:
    filename: str
    body: dict[str, Any]
    comments: list[str] = field(default_factory=list)  # written above the YAML, one `# ` line each

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass
class PoolExport:
    pool: str
    service: Document
    domain_mappings: list[Document] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed on stdout: what did not carry over as is

    @property
    def documents(self) -> list[Document]:
        return [self.service, *self.domain_mappings]


def service_name(app_name: str, pool: PoolSpec, taken: set[str]) -> str:
    """A function's Service is named by its endpoint's label, so that its Knative host starts as its
    Modal URL does; a class's by Modal's label rule for the class. Always a valid, unused DNS label."""
    first = pool.endpoints[0]
    base = first.label if len(pool.endpoints) == 1 and "." not in first.name else default_label(app_name, pool.name)
    name = re.sub(r"-+", "-", normalize(base)).strip("-")
    if not name or not name[0].isalpha():
        name = f"x-{name}".rstrip("-")
    if len(name) > MAX_SERVICE_NAME:
        name = f"{name[:MAX_SERVICE_NAME - 7].rstrip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:6]}"
    unique, n = name, 2
    while unique in taken:
        unique = f"{name[:MAX_SERVICE_NAME - 3]}-{n}"
        n += 1
    taken.add(unique)
    return unique


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return value.strip("-_.")


def build(
    pool: PoolSpec,
    info: PoolInfo | None,
    *,
    app_name: str,
    app_file: str,
    name: str,
    image: str,
    command: list[str],
    secret_refs: list[str],
    named_secrets: dict[str, list[str]] | None = None,
    namespace: str | None = None,
    public: bool = False,
    max_timeout: int = DEFAULT_MAX_TIMEOUT,
) -> PoolExport:
    """The Service and DomainMappings of one pool, and notes on what has no Knative equivalent."""
    k = pool.knobs
    notes: list[str] = []
    mapping: list[str] = []  # "knob -> field" lines for the header comment
    who = f"pool `{pool.name}`"

    annotations = {
        f"{AUTOSCALING}/class": "kpa.autoscaling.knative.dev",
        f"{AUTOSCALING}/metric": "concurrency",
        f"{AUTOSCALING}/target": str(k.target_inputs),
        f"{AUTOSCALING}/target-utilization-percentage": "100",
        f"{AUTOSCALING}/min-scale": str(k.min_containers),
        f"{AUTOSCALING}/max-scale": str(k.max_containers or 0),
        f"{AUTOSCALING}/scale-down-delay": f"{k.scaledown_window}s",
    }
    mapping += [
        f"min_containers={k.min_containers} -> {AUTOSCALING}/min-scale: \"{k.min_containers}\"",
        f"max_containers={k.max_containers} -> {AUTOSCALING}/max-scale: \"{k.max_containers or 0}\""
        + ("" if k.max_containers else " (no limit)"),
        f"target_inputs={k.target_inputs} -> {AUTOSCALING}/target: \"{k.target_inputs}\", metric: concurrency, "
        "target-utilization-percentage: \"100\"",
    ]

    concurrency = k.max_inputs
    if concurrency > MAX_CONTAINER_CONCURRENCY:
        concurrency = MAX_CONTAINER_CONCURRENCY
        notes.append(f"{who}: max_inputs={k.max_inputs} is above Knative's default limit; "
                     f"containerConcurrency is {concurrency}")
    mapping.append(f"max_inputs={k.max_inputs} -> containerConcurrency: {concurrency}")
    mapping.append(f"scaledown_window={k.scaledown_window} -> {AUTOSCALING}/scale-down-delay: "
                   f"\"{k.scaledown_window}s\"")

    timeout = math.ceil(k.timeout)
    if timeout > max_timeout:
        notes.append(f"{who}: timeout={k.timeout}s is above the platform maximum "
                     f"(max-revision-timeout-seconds={max_timeout}); timeoutSeconds is capped at {max_timeout}. "
                     "Raise it in the cluster's config-defaults and pass --max-timeout to keep Modal's value")
        timeout = max_timeout
    mapping.append(f"timeout={k.timeout} -> timeoutSeconds: {timeout}"
                   + (" (capped)" if timeout != math.ceil(k.timeout) else ""))

    container: dict[str, Any] = {"name": "app", "image": image, "command": command}
    port = DEFAULT_PORT
    web_servers = [e for e in pool.endpoints if e.kind == "web_server"]
    served_elsewhere = [e for e in pool.endpoints if e.kind != "web_server"]
    if web_servers and not served_elsewhere:
        ws = web_servers[0]
        assert ws.port is not None
        if ws.port in RESERVED_PORTS:
            notes.append(f"{who}: web_server port {ws.port} is reserved by Knative's queue-proxy; the container "
                         f"listens on {DEFAULT_PORT} and mwtui relays to {ws.port} inside it")
        else:
            port = ws.port
        startup = float(ws.startup_timeout or 5.0)
        # Modal polls the port until it accepts, for at most startup_timeout: so do these probes.
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
        container["startupProbe"] = {
            "tcpSocket": {"port": port}, "periodSeconds": 1, "timeoutSeconds": 1,
            "failureThreshold": max(1, math.ceil(startup)),
        }
        mapping.append(f"web_server(port={ws.port}, startup_timeout={ws.startup_timeout}) -> containerPort: {port}, "
                       f"startupProbe: tcpSocket every 1s, failureThreshold {max(1, math.ceil(startup))}; "
                       "readinessProbe: tcpSocket")
        if startup > DEFAULT_PROGRESS_DEADLINE:
            annotations["serving.knative.dev/progress-deadline"] = f"{math.ceil(startup) + 60}s"
        for extra in web_servers[1:]:
            notes.append(f"{who}: web_server `{extra.name}` (port {extra.port}) is not reachable: a Knative "
                         f"container has one port, which goes to `{ws.name}`")
    else:
        for ws in web_servers:
            notes.append(f"{who}: web_server `{ws.name}` (port {ws.port}) is not reachable: a Knative container "
                         f"has one port, which serves the class's other web methods")
    container["ports"] = [{"name": "http1", "containerPort": port}]
    if secret_refs:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in secret_refs]
    if named_secrets:
        # `mwtui worker` reads Secret.from_name values from the environment there (see its docstring).
        container["env"] = [{"name": SECRETS_FROM_ENV, "value": json.dumps(named_secrets, sort_keys=True)}]

    if len(served_elsewhere) > 1:
        routes = ", ".join(f"{e.name} ({e.label})" for e in served_elsewhere)
        mapping.append(f"class web methods on one port: header x-mwtui-endpoint: <Class.method>, else the Host's "
                       f"custom domain or first label, else `{served_elsewhere[0].name}`: {routes}")
        notes.append(f"{who}: its {len(served_elsewhere)} web methods share one Service and port; a request goes "
                     "to the method named by the x-mwtui-endpoint header, else by Host (a method's custom domain, "
                     f"or a first DNS label equal to its label), else to `{served_elsewhere[0].name}`")

    # What Knative has no knob for.
    no_equivalent: list[str] = []
    if k.buffer_containers:
        no_equivalent.append(f"buffer_containers={k.buffer_containers}: Knative keeps no idle spare containers "
                             "beyond min-scale; raise min-scale to keep some warm")
    auth = [e for e in pool.endpoints if e.requires_proxy_auth]
    cluster_local = bool(auth) and not public
    if auth:
        names = ", ".join(f"`{e.name}`" for e in auth)
        if cluster_local:
            no_equivalent.append(f"requires_proxy_auth ({names}): Knative has no proxy-auth tokens; exported "
                                 f"cluster-local ({VISIBILITY_LABEL}: cluster-local), reachable only inside the "
                                 "cluster. Put an authenticating gateway in front, or pass --public")
        else:
            no_equivalent.append(f"requires_proxy_auth ({names}): Knative has no proxy-auth tokens; exported "
                                 "public because of --public, so anyone who can reach it can call it")
    for v in info.volumes if info else ():
        no_equivalent.append(f"volume {v.name or '(ephemeral)'} at {v.mount} ({v.type}): not exported; files "
                             "written there stay in one container and go with it")
    if info and info.single_use_containers:
        no_equivalent.append("single_use_containers: Knative does not retire a container after one request "
                             "(containerConcurrency 1 is the closest)")
    notes += [f"{who}: {text}" for text in no_equivalent]

    labels = {
        "app.kubernetes.io/part-of": _label_value(app_name) or "app",
        "app.kubernetes.io/managed-by": "mwtui",
    }
    if cluster_local:
        labels[VISIBILITY_LABEL] = "cluster-local"
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": {"mwtui.dev/pool": pool.name}}
    if namespace:
        metadata["namespace"] = namespace
    body = {
        "apiVersion": SERVICE_API,
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containerConcurrency": concurrency,
                    "timeoutSeconds": timeout,
                    "containers": [container],
                },
            },
        },
    }
    endpoints = ", ".join(f"{e.name} ({e.kind})" for e in pool.endpoints)
    comments = [
        f"Knative Service for pool `{pool.name}` of app `{app_name}` ({app_file}): {endpoints}.",
        "Generated by `mwtui export knative`. Modal knob -> Knative:",
        *(f"  {line}" for line in mapping),
    ]
    if no_equivalent:
        comments.append("No Knative equivalent:")
        comments += [f"  {line}" for line in no_equivalent]
    service = Document(f"service-{name}.yaml", body, comments)

    mappings: list[Document] = []
    for ep in pool.endpoints:
        for domain in ep.custom_domains:
            domain = domain.strip().lower().rstrip(".")
            if cluster_local:
                notes.append(f"{who}: custom domain {domain} is not mapped: the Service is cluster-local "
                             "(proxy auth); pass --public to map it")
                continue
            dm_meta: dict[str, Any] = {"name": domain, "labels": {"app.kubernetes.io/managed-by": "mwtui"}}
            if namespace:
                dm_meta["namespace"] = namespace
            dm = {
                "apiVersion": DOMAIN_MAPPING_API,
                "kind": "DomainMapping",
                "metadata": dm_meta,
                "spec": {"ref": {"apiVersion": SERVICE_API, "kind": "Service", "name": name}},
            }
            mappings.append(Document(f"domainmapping-{domain}.yaml", dm, [
                f"Custom domain of `{ep.name}` (custom_domains=[{domain!r}]) -> Knative Service {name}.",
                "The cluster must accept the domain: a ClusterDomainClaim, or autocreate-cluster-domain-claims "
                "in config-network; and DNS must point it at the cluster's ingress.",
            ]))
    return PoolExport(pool.name, service, mappings, notes)


def kustomization(files: list[str], namespace: str | None) -> Document:
    body: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        body["namespace"] = namespace
    body["resources"] = files
    return Document("kustomization.yaml", body, ["Apply with: kubectl apply -k <this folder>"])
