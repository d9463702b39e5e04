"""`mwtui export knative` and `mwtui worker`: the same app file, with the same knobs, on a Knative cluster.

No cluster here: the generated documents are checked against Knative's own CRD schemas (the
`openAPIV3Schema` of each CRD, with a JSON-schema validator) and field by field against the app's knobs,
and the container's command is run for real on loopback with $PORT set, as the cluster would run it.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator
from mwtui.engine.export.validate import validate

from .eventually import eventually

FIXTURES = Path(__file__).parent / "fixtures"
APP = FIXTURES / "export_app.py"
DEMO = Path(__file__).parent.parent / "assets" / "demo" / "demo.py"
TOKEN = "tok-must-not-leak"  # $EXPORT_TEST_TOKEN, read by Secret.from_local_environ
DOTENV_VALUE = "dotenv-value-must-not-leak"  # in fixtures/export_data/.env
APP_ENV = {"EXPORT_TEST_TOKEN": TOKEN}
# What the cluster gives a container of pool `predict` or `Multi`: the Service's env, and the values of
# the Kubernetes Secrets named in envFrom. No mwtui secret store.
CLUSTER_ENV = {
    "MWTUI_SECRETS_FROM_ENV": '{"DB_Creds": [], "openai-key": ["OPENAI_API_KEY"]}',
    "OPENAI_API_KEY": "sk-from-envfrom",
    "DB_PASSWORD": "from-envfrom",
}
A = "autoscaling.knative.dev"
CRDS = {
    ("serving.knative.dev/v1", "Service"): "service.yaml",
    ("serving.knative.dev/v1beta1", "DomainMapping"): "domain-mapping.yaml",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD's own openAPIV3Schema, untouched (our validator adds strictness on top)."""
    text = resources.files("mwtui.engine.export").joinpath("schemas", CRDS[(api_version, kind)]).read_text()
    crd = yaml.safe_load(text)
    version = api_version.split("/")[1]
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


@dataclass
class Exported:
    out: Path
    stdout: str
    texts: dict[str, str]  # file name -> text, every .yaml written
    docs: dict[str, dict[str, Any]]  # file name -> parsed

    def service(self, pool: str) -> dict[str, Any]:
        found = [d for d in self.docs.values()
                 if d["kind"] == "Service" and d["metadata"]["annotations"]["mwtui.dev/pool"] == pool]
        assert len(found) == 1, f"one Service for pool {pool}: {sorted(self.docs)}"
        return found[0]

    def service_text(self, pool: str) -> str:
        name = self.service(pool)["metadata"]["name"]
        return self.texts[f"service-{name}.yaml"]

    def mappings(self) -> dict[str, str]:
        """domain -> Service name"""
        return {d["metadata"]["name"]: d["spec"]["ref"]["name"] for d in self.docs.values()
                if d["kind"] == "DomainMapping"}


def run_export(app: Path, out: Path, *extra: str) -> Exported:
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "export", "knative", str(app), "-o", str(out), *extra],
        env={**os.environ, **APP_ENV}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    texts = {p.name: p.read_text() for p in sorted(out.glob("*.yaml"))}
    docs = {name: yaml.safe_load(text) for name, text in texts.items() if name != "kustomization.yaml"}
    return Exported(out, proc.stdout, texts, docs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return run_export(APP, tmp_path_factory.mktemp("knative") / "out")


@pytest.fixture(scope="module")
def exported_public(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return run_export(APP, tmp_path_factory.mktemp("knative-public") / "out", "--public", "--namespace", "ml",
                      "--registry", "ghcr.io/acme/", "--max-timeout", "1800")


def dockerfile(e: Exported, image: str) -> str:
    return (e.out / "build" / image / "Dockerfile").read_text()


# --- the documents are what Knative accepts ------------------------------------------------------------


def test_every_document_validates_against_the_crd_schemas(exported: Exported, exported_public: Exported) -> None:
    for e in (exported, exported_public):
        assert {d["kind"] for d in e.docs.values()} == {"Service", "DomainMapping"}
        for name, doc in e.docs.items():
            assert validate(doc) == [], name
            errors = list(Draft7Validator(raw_schema(doc["apiVersion"], doc["kind"])).iter_errors(doc))
            assert errors == [], f"{name}: {[err.message for err in errors]}"


def test_the_validator_is_strict_about_names_and_types(exported: Exported) -> None:
    doc = copy.deepcopy(exported.service("predict"))
    doc["spec"]["template"]["spec"]["containerConcurency"] = 3  # a typo Kubernetes would drop silently
    doc["spec"]["template"]["spec"]["timeoutSeconds"] = "600"
    doc["metadata"]["name"] = "Not_A_Label"
    errors = "\n".join(validate(doc))
    assert "containerConcurency" in errors
    assert "timeoutSeconds" in errors and "is not of type 'integer'" in errors
    assert "metadata.name" in errors


def test_demo_and_other_apps_export_valid_documents(tmp_path: Path) -> None:
    for app in (DEMO, FIXTURES / "worker_cls.py", FIXTURES / "worker_wsgi.py"):
        e = run_export(app, tmp_path / app.stem)
        assert e.docs, app
        for name, doc in e.docs.items():
            assert validate(doc) == [], f"{app.name}: {name}"
        kustomization = yaml.safe_load((e.out / "kustomization.yaml").read_text())
        assert sorted(kustomization["resources"]) == sorted(e.docs)


def test_kustomization_lists_every_document_and_builds(exported: Exported, exported_public: Exported) -> None:
    k = yaml.safe_load(exported.texts["kustomization.yaml"])
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    assert sorted(k["resources"]) == sorted(exported.docs)
    assert "namespace" not in k
    assert yaml.safe_load(exported_public.texts["kustomization.yaml"])["namespace"] == "ml"
    if shutil.which("kubectl") is None:
        return
    built = subprocess.run(["kubectl", "kustomize", str(exported.out)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    assert len(list(yaml.safe_load_all(built.stdout))) == len(exported.docs)


# --- the knobs, field by field -----------------------------------------------------------------------


def test_autoscaling_mirrors_the_modal_knobs(exported: Exported) -> None:
    svc = exported.service("predict")
    template = svc["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        f"{A}/class": "kpa.autoscaling.knative.dev",
        f"{A}/metric": "concurrency",
        f"{A}/target": "10",  # target_inputs
        f"{A}/target-utilization-percentage": "100",  # Modal's target is the number itself, not 70% of it
        f"{A}/min-scale": "1",  # min_containers
        f"{A}/max-scale": "5",  # max_containers
        f"{A}/scale-down-delay": "120s",  # scaledown_window
    }
    assert template["spec"]["containerConcurrency"] == 20  # max_inputs
    assert template["spec"]["timeoutSeconds"] == 600  # timeout=900, capped at Knative's default maximum
    assert "timeout=900s is above the platform maximum" in exported.stdout
    assert "timeout=900 -> timeoutSeconds: 600 (capped)" in exported.service_text("predict")


def test_modal_defaults_map_to_explicit_values(exported: Exported) -> None:
    annotations = exported.service("legacy")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[f"{A}/min-scale"] == "0"  # scale to zero
    assert annotations[f"{A}/max-scale"] == "0"  # Knative's "no limit", as max_containers=None
    assert annotations[f"{A}/target"] == "1"  # without @modal.concurrent: one input at a time
    assert annotations[f"{A}/scale-down-delay"] == "60s"
    spec = exported.service("legacy")["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == 1 and spec["timeoutSeconds"] == 300


def test_a_higher_max_timeout_keeps_modals_timeout(exported_public: Exported) -> None:
    assert exported_public.service("predict")["spec"]["template"]["spec"]["timeoutSeconds"] == 900
    assert "above the platform maximum" not in exported_public.stdout


def test_web_server_port_and_startup_probe(exported: Exported) -> None:
    svc = exported.service("server")
    spec = svc["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8765}]  # @modal.web_server(8765)
    assert container["startupProbe"] == {
        "tcpSocket": {"port": 8765}, "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 45,
    }  # startup_timeout=45: polled every second, as Modal polls the port
    assert container["readinessProbe"] == {"tcpSocket": {"port": 8765}, "periodSeconds": 1}
    assert spec["timeoutSeconds"] == 30
    for pool in ("predict", "api", "legacy", "Multi"):  # the others listen on $PORT, Knative's 8080
        (c,) = exported.service(pool)["spec"]["template"]["spec"]["containers"]
        assert c["ports"] == [{"name": "http1", "containerPort": 8080}]
        assert "startupProbe" not in c and "readinessProbe" not in c


def test_container_command_is_the_local_replica_entry_point(exported: Exported) -> None:
    for pool in ("predict", "private", "api", "legacy", "server", "Multi"):
        (c,) = exported.service(pool)["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["mwtui", "worker", "/root/export_app.py", "--pool", pool]
        assert c["image"].startswith("dev.local/export-demo")


def test_no_knative_equivalent_is_said_in_the_manifest_and_on_stdout(exported: Exported) -> None:
    text = exported.service_text("predict")
    assert "# No Knative equivalent:" in text and "#   buffer_containers=2:" in text
    assert "pool `predict`: buffer_containers=2" in exported.stdout
    api = exported.service_text("api")
    assert "volume models at /data" in api and "volume models at /data" in exported.stdout
    assert "buffer_containers" not in exported.service_text("legacy")


def test_proxy_auth_is_cluster_local_unless_public(exported: Exported, exported_public: Exported) -> None:
    labels = exported.service("private")["metadata"]["labels"]
    assert labels["networking.knative.dev/visibility"] == "cluster-local"
    assert "requires_proxy_auth" in exported.service_text("private")
    assert "pool `private`: requires_proxy_auth" in exported.stdout
    assert "networking.knative.dev/visibility" not in exported.service("predict")["metadata"]["labels"]
    # A custom domain would make it public again: not mapped, and said so.
    assert "private.example.com" not in exported.mappings()
    assert "custom domain private.example.com is not mapped" in exported.stdout

    public = exported_public.service("private")
    assert "networking.knative.dev/visibility" not in public["metadata"]["labels"]
    assert "exported public because of --public" in exported_public.service_text("private")
    assert exported_public.mappings()["private.example.com"] == public["metadata"]["name"]


def test_a_domain_mapping_per_custom_domain(exported: Exported) -> None:
    predict = exported.service("predict")["metadata"]["name"]
    multi = exported.service("Multi")["metadata"]["name"]
    assert exported.mappings() == {
        "api.example.com": predict, "www.example.com": predict, "multi.example.com": multi,
    }
    dm = exported.docs["domainmapping-api.example.com.yaml"]
    assert dm["apiVersion"] == "serving.knative.dev/v1beta1"
    assert dm["spec"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": predict}


def test_service_names_follow_modal_labels(exported: Exported, exported_public: Exported) -> None:
    assert exported.service("api")["metadata"]["name"] == "my-api"  # label="my-api"
    assert exported.service("predict")["metadata"]["name"] == "export-demo-predict"
    assert exported.service("Multi")["metadata"]["name"] == "export-demo-multi"
    assert "namespace" not in exported.service("api")["metadata"]
    assert exported_public.service("api")["metadata"]["namespace"] == "ml"
    assert all(d["metadata"]["namespace"] == "ml" for d in exported_public.docs.values())


def test_class_routing_is_explained(exported: Exported) -> None:
    assert "x-mwtui-endpoint" in exported.service_text("Multi")
    assert "pool `Multi`: its 3 web methods share one Service" in exported.stdout


# --- secrets: by name, never by value ------------------------------------------------------------------


def test_secrets_are_referenced_by_name_and_never_written(exported: Exported) -> None:
    (c,) = exported.service("predict")["spec"]["template"]["spec"]["containers"]
    refs = [e["secretRef"]["name"] for e in c["envFrom"]]
    assert refs[0] == "openai-key"  # Secret.from_name("openai-key")
    assert refs[1].startswith("export-demo-dotenv-")  # Secret.from_dotenv
    assert refs[2] == "export-demo-predict-local-environ"  # Secret.from_local_environ
    assert len(refs) == 3  # from_dict values travel in the app file, as on Modal
    # Which named secrets `mwtui worker` takes from the environment in the container.
    assert c["env"] == [{"name": "MWTUI_SECRETS_FROM_ENV", "value": '{"openai-key": ["OPENAI_API_KEY"]}'}]
    (m,) = exported.service("Multi")["spec"]["template"]["spec"]["containers"]
    assert m["envFrom"] == [{"secretRef": {"name": "db-creds"}}]  # "DB_Creds", made a valid name
    (legacy,) = exported.service("legacy")["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in legacy

    out = exported.stdout
    assert "kubectl create secret generic openai-key --from-env-file=<(mwtui secret export openai-key)" in out
    assert "kubectl create secret generic db-creds --from-env-file=<(mwtui secret export DB_Creds)" in out
    assert "(keys: OPENAI_API_KEY)" in out
    dotenv = str(FIXTURES / "export_data" / ".env")
    assert f"--from-env-file={dotenv}" in out
    assert '--from-literal=EXPORT_TEST_TOKEN="$EXPORT_TEST_TOKEN"' in out
    everything = out + "".join(exported.texts.values())
    for path in exported.out.rglob("*"):
        if path.is_file():
            everything += path.read_text(errors="replace")
    assert TOKEN not in everything and DOTENV_VALUE not in everything


# --- the build context -------------------------------------------------------------------------------


def test_dockerfile_from_the_image_chain(exported: Exported) -> None:
    text = dockerfile(exported, "export-demo")
    lines = text.splitlines()
    expected = [
        "FROM python:3.12-slim-bookworm",  # debian_slim(python_version="3.12")
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "curl git && rm -rf /var/lib/apt/lists/*",
        "RUN python -m pip install --index-url https://pypi.example.com/simple 'fastapi[standard]==0.115.0' flask",
        'ENV GREETING="hello \\$USER" MODE="prod"',  # Modal's values are literal: $ is not expanded
        'COPY ["files/1/config.json", "/etc/app/config.json"]',
        'COPY ["files/2/", "/assets/"]',
        "RUN echo built > /built.txt",
        "RUN python -c 'print(1)'",
        'COPY ["files/3/export_helpers.py", "/root/export_helpers.py"]',
        'COPY ["mwtui-dist/", "/tmp/mwtui-dist/"]',
        "RUN python -m pip install /tmp/mwtui-dist && rm -rf /tmp/mwtui-dist",
        'COPY ["app/", "/root/"]',
        'ENTRYPOINT ["mwtui", "worker", "/root/export_app.py"]',
    ]
    positions = [lines.index(line) for line in expected]  # each present...
    assert positions == sorted(positions), text  # ...and in the chain's order

    context = exported.out / "build" / "export-demo"
    assert (context / "files/1/config.json").read_text() == '{"debug": false}\n'
    assert (context / "files/2/site.css").exists() and (context / "files/2/sub/page.html").exists()
    assert not (context / "files/2/draft.tmp").exists()  # ignore=["*.tmp"]
    assert (context / "app/export_app.py").read_bytes() == APP.read_bytes()
    assert (context / "app/export_helpers.py").exists()  # a local module the app imports
    assert not list(context.rglob(".env"))
    pyproject = (context / "mwtui-dist/pyproject.toml").read_text()
    assert 'mwtui = "mwtui.tui.cli:main"' in pyproject and '"uvicorn[standard]>=0.30"' in pyproject
    assert (context / "mwtui-dist/src/mwtui/engine/worker/replica.py").exists()
    assert (context / "mwtui-dist/src/mwtui/engine/export/schemas/service.yaml").exists()
    assert not list(context.rglob("__pycache__"))


def test_second_image_from_registry_with_added_python(exported: Exported) -> None:
    text = dockerfile(exported, "export-demo-server")
    assert text.splitlines()[3] == "FROM nvidia/cuda:12.4.0-runtime-ubuntu22.04"
    assert "RUN uv venv --seed --python 3.11 /opt/python" in text
    assert "RUN python -m pip install numpy" in text
    assert "# NOT TRANSLATED: Image.run_function(...)" in text
    assert "warning: image `export-demo-server`: Image.run_function() is not translated" in exported.stdout
    (c,) = exported.service("server")["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("dev.local/export-demo-server:")


def test_registry_and_tags(exported: Exported, exported_public: Exported) -> None:
    (c,) = exported_public.service("api")["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("ghcr.io/acme/export-demo:")
    tag = c["image"].rsplit(":", 1)[1]
    assert len(tag) == 12
    assert f"docker push {c['image']}" in exported_public.stdout
    assert "kind load docker-image dev.local/export-demo:" in exported.stdout


def test_default_image_and_python_without_an_image(tmp_path: Path) -> None:
    e = run_export(FIXTURES / "worker_wsgi.py", tmp_path / "out")
    (build,) = (e.out / "build").iterdir()
    text = (build / "Dockerfile").read_text()
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM python:{local}-slim-bookworm" in text  # Modal's default: debian_slim, local Python


def test_export_of_a_broken_app_fails_readably(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "export", "knative", str(FIXTURES / "export_broken.py"),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("mwtui: export_broken.py:")
    assert "NameError" in proc.stderr and "undefined_name_at_import" in proc.stderr
    assert not (tmp_path / "out").exists()


# --- the container's command, run here -------------------------------------------------------------


@contextmanager
def worker(pool: str, port: int, *, use_listen: bool, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`mwtui worker export_app.py --pool POOL`, on 127.0.0.1:PORT via --listen, or on $PORT (all
    interfaces) as in the container. Stopped with SIGTERM; the test checks it exits 0."""
    args = [sys.executable, "-m", "mwtui.tui.cli", "worker", str(APP), "--pool", pool]
    full_env = {**os.environ, **APP_ENV, **CLUSTER_ENV, **(env or {})}
    full_env["MWTUI_HOME"] = tempfile.mkdtemp(prefix="mwtui-test-home-")  # an empty store, as in a container
    if use_listen:
        args += ["--listen", f"tcp:127.0.0.1:{port}"]
        full_env.pop("PORT", None)
    else:
        full_env["PORT"] = str(port)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=tempfile.gettempdir())
    try:

        def listening() -> bool:
            assert proc.poll() is None, _output(log)  # it ended: fail now, not at the timeout
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True

        # OSError: not listening yet.
        eventually(listening, 30, lambda: f"the worker listening on {port}: {_output(log)}", retry_on=(OSError,))
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, _output(log)
        assert "serving on http://" in _output(log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(full_env["MWTUI_HOME"], ignore_errors=True)


def _output(log: Any) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


def test_worker_serves_a_function_on_tcp() -> None:
    port = free_port()
    with worker("predict", port, use_listen=True):
        r = httpx.post(f"http://127.0.0.1:{port}/", json={"x": 1}, timeout=10)
        assert r.status_code == 200
        assert r.json() == {"echo": {"x": 1}, "helper": "OK!", "openai": "sk-from-envfrom", "inline": "on"}


def test_worker_in_a_container_needs_the_required_keys_of_named_secrets(tmp_path: Path) -> None:
    env = {**os.environ, **APP_ENV, **CLUSTER_ENV, "MWTUI_HOME": str(tmp_path), "PORT": str(free_port())}
    del env["OPENAI_API_KEY"]
    proc = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "worker", str(APP), "--pool", "predict"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "Secret 'openai-key' needs OPENAI_API_KEY, missing from the container's environment" in proc.stderr
    assert not list(tmp_path.iterdir())  # the real store is never written


def test_worker_listens_on_port_from_the_environment() -> None:
    port = free_port()
    with worker("api", port, use_listen=False):
        assert httpx.get(f"http://127.0.0.1:{port}/items", timeout=10).json() == [1, 2, 3]


def test_worker_serves_wsgi_through_gunicorn_on_tcp() -> None:
    port = free_port()
    with worker("legacy", port, use_listen=False):
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert r.status_code == 200 and r.text == "flask over tcp"


def test_worker_relays_port_to_a_web_server_on_another_port() -> None:
    port, server_port = free_port(), free_port()
    with worker("server", port, use_listen=False, env={"MWTUI_TEST_PORT": str(server_port)}):
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert r.status_code == 200 and "Directory listing" in r.text


def test_worker_routes_a_class_by_header_host_or_first_method() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with worker("Multi", port, use_listen=False), httpx.Client(base_url=base, timeout=10) as c:
        # No header, unknown host: the first web method.
        assert c.get("/").json() == {"method": "hello", "calls": 1}
        # The header the local gateway sends.
        assert c.get("/", headers={"x-mwtui-endpoint": "Multi.web"}).json() == {"method": "web", "calls": 1}
        # A custom domain, as Knative passes it on after a DomainMapping rewrote Host.
        r = c.post("/", json={"a": 1}, headers={"K-Original-Host": "multi.example.com"})
        assert r.json() == {"method": "echo", "body": {"a": 1}, "calls": 2}
        # The method's label as the first DNS label of Host.
        assert c.get("/", headers={"Host": "export-demo-multi-web.example.org"}).json()["method"] == "web"
        # One instance behind every method: state is shared, as on Modal.
        assert c.get("/", headers={"x-mwtui-endpoint": "Multi.hello"}).json() == {"method": "hello", "calls": 3}


def test_worker_rejects_a_bad_listen_address() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "worker", str(APP), "--pool", "predict", "--listen", "0.0.0.0:80"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **APP_ENV},
    )
    assert proc.returncode == 2
    assert "--listen takes `unix` or `tcp:HOST:PORT`" in proc.stderr
