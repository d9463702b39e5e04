"""Modal's label rules (pure functions)."""

from __future__ import annotations

import hashlib

import pytest
from mwtui.engine.labels import (
    MAX_LABEL_LENGTH,
    default_label,
    find_conflicts,
    is_dns_safe,
    label_warning,
    normalize,
    truncate,
)
from mwtui.engine.manifest import EndpointSpec


@pytest.mark.parametrize("text,expected", [
    ("hello", "hello"),
    ("Hello_World", "hello-world"),
    ("text_to_speech", "text-to-speech"),
    ("MyAPI.health", "myapi-health"),
    ("a b!c", "a-b-c"),
    ("already-ok-123", "already-ok-123"),
    ("Ünïcode", "-n-code"),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize("app,tag,expected", [
    ("sound-api", "fastapi_app", "sound-api-fastapi-app"),
    ("demo", "hello", "demo-hello"),
    ("demo", "MyAPI.health", "demo-myapi-health"),
    ("example-comfyui", "ComfyUI.api", "example-comfyui-comfyui-api"),
    ("My App", "Fn", "my-app-fn"),
])
def test_default_label(app: str, tag: str, expected: str) -> None:
    assert default_label(app, tag) == expected


def test_long_label_is_cut_and_hashed() -> None:
    label = default_label("example-spam-detect-llm-with-a-really-long-application-name", "fastapi_app_thundergolfer")
    assert label == "example-spam-detect-llm-with-a-really-long-application-n-476ee2"
    assert len(label) == MAX_LABEL_LENGTH


def test_truncation_rule() -> None:
    full = "x" * 50 + "-" + "y" * 20
    assert truncate(full) == full[:56] + "-" + hashlib.sha256(full.encode()).hexdigest()[:6]
    assert truncate("a" * 63) == "a" * 63  # exactly 63 is kept


def test_hash_is_sha256_of_the_full_text() -> None:
    # The rule was checked against a real Modal URL: this prefix gave `...-thun-ed2e0f-dev`.
    full = "modal-labs--example-spam-detect-llm-fastapi-app-thundergolfer"
    assert hashlib.sha256(full.encode()).hexdigest()[:6] == "ed2e0f"


@pytest.mark.parametrize("label,ok", [
    ("foo-bar", True),
    ("a", True),
    ("a1-b2", True),
    ("x" * 63, True),
    ("x" * 64, False),
    ("Bad_Label!!", False),
    ("UPPER", False),
    ("-lead", False),
    ("trail-", False),
    ("12345", False),
    ("", False),
    ("dots.here", False),
])
def test_is_dns_safe(label: str, ok: bool) -> None:
    assert is_dns_safe(label) is ok


def test_label_warning_names_the_endpoint() -> None:
    assert label_warning("hello", "good-label") is None
    text = label_warning("MyAPI.health", "Bad_Label!!")
    assert text is not None
    assert text.startswith("MyAPI.health: label 'Bad_Label!!' is not a valid DNS label")


def _ep(name: str, label: str, domains: tuple[str, ...] = ()) -> EndpointSpec:
    return EndpointSpec(name=name, pool=name.split(".")[0], kind="fastapi", label=label, custom_domains=domains)


def test_no_conflicts() -> None:
    assert find_conflicts([_ep("a", "x-a", ("a.example.com",)), _ep("b", "x-b", ("b.example.com",))]) == []


def test_same_label_names_both_endpoints() -> None:
    (error,) = find_conflicts([_ep("hello", "shared"), _ep("other", "x-other"), _ep("MyAPI.web", "SHARED")])
    assert "'SHARED'" in error and "`hello`" in error and "`MyAPI.web`" in error


def test_same_custom_domain_names_both_endpoints() -> None:
    (error,) = find_conflicts([
        _ep("one", "l1", ("api.example.com",)),
        _ep("two", "l2", ("API.example.com.",)),
    ])
    assert "custom domain 'API.example.com.'" in error and "`one`" in error and "`two`" in error


def test_repeating_a_domain_on_one_endpoint_is_not_a_conflict() -> None:
    assert find_conflicts([_ep("one", "l1", ("a.example.com", "a.example.com"))]) == []
