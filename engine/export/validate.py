"""Check generated documents against Knative's own CRD schemas (copied in `schemas/`, see its README).

The `openAPIV3Schema` of the CRD version a document names is used as a JSON schema, made strict the way
`kubectl apply --validate=strict` is: an unknown field is an error wherever the schema lists the fields
and does not say `x-kubernetes-preserve-unknown-fields`. `metadata` is only `type: object` in a CRD, so
the parts of ObjectMeta we write are checked here too (names, labels, string-valued annotations).
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

CRD_FILES = {
    ("serving.knative.dev/v1", "Service"): "service.yaml",
    ("serving.knative.dev/v1beta1", "DomainMapping"): "domain-mapping.yaml",
}
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_1123_SUBDOMAIN = r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
QUALIFIED_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"


def _metadata_schema(name_pattern: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": name_pattern},
            "namespace": {"type": "string", "pattern": DNS_1123_LABEL},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": QUALIFIED_KEY},
                "additionalProperties": {"type": "string", "pattern": LABEL_VALUE},
            },
            "annotations": {
                "type": "object",
                "propertyNames": {"pattern": QUALIFIED_KEY},
                "additionalProperties": {"type": "string"},
            },
        },
    }


METADATA = {
    "Service": _metadata_schema(DNS_1035_LABEL),  # Knative needs a DNS label: it becomes a host name
    "DomainMapping": _metadata_schema(DNS_1123_SUBDOMAIN),  # the domain itself
}


def _strict(schema: Any) -> Any:
    """A copy in which objects with listed properties refuse unknown ones, unless the CRD allows them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    # `properties` maps names to schemas: its keys are never schema keywords, so restore them as given.
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    return out


@functools.cache
def schema_for(api_version: str, kind: str) -> dict[str, Any]:
    """The strict schema of one CRD version, with our metadata checks in place of `type: object`."""
    import yaml

    filename = CRD_FILES.get((api_version, kind))
    if filename is None:
        raise KeyError(f"no schema for {kind} {api_version}")
    text = resources.files("mwtui.engine.export").joinpath("schemas", filename).read_text(encoding="utf-8")
    crd = yaml.safe_load(text)
    group, _, version = api_version.partition("/")
    if crd["spec"]["group"] != group:
        raise KeyError(f"{filename} is for {crd['spec']['group']}, not {group}")
    found = next((v for v in crd["spec"]["versions"] if v["name"] == version), None)
    if found is None:
        raise KeyError(f"{filename} has no version {version}")
    schema = _strict(copy.deepcopy(found["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = METADATA[kind]
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def validate(doc: dict[str, Any]) -> list[str]:
    """Every way `doc` breaks its CRD schema, one line each; [] when it is valid."""
    from jsonschema import Draft7Validator

    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    try:
        schema = schema_for(str(api_version), str(kind))
    except KeyError as e:
        return [f"{kind} {api_version}: {e.args[0]}"]
    errors = sorted(Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    name = (doc.get("metadata") or {}).get("name", "?")
    return [
        f"{kind} {name}: {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in errors
    ]
