"""The snapshot document: environment encryption format, package names, referenced versions."""

from __future__ import annotations

import base64
import hashlib

import pytest

from daemon.export import document as d


def test_plaintext_format_round_trips_every_value() -> None:
    for value in ("", "x", "ünïcode", "a" * 4000):
        assert d.value_of(d.plaintext_of(value)) == value
        assert d.plaintext_of(value)  # never empty: KMS refuses an empty plaintext
    with pytest.raises(d.DocumentError):
        d.value_of(b"plain")


def test_encryption_context_binds_the_value_to_its_place() -> None:
    assert d.encryption_context("arn:f", "$LATEST", "DB") == {
        "posture-daemon:function": "arn:f",
        "posture-daemon:qualifier": "$LATEST",
        "posture-daemon:variable": "DB",
    }


def test_code_names() -> None:
    digest = hashlib.sha256(b"zip").digest()
    sha = base64.b64encode(digest).decode()
    assert d.code_sha_hex(sha) == digest.hex()
    assert d.code_object_name(sha) == f"code/{digest.hex()}.zip"
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(d.DocumentError):
            d.code_sha_hex(bad)


def test_referenced_versions() -> None:
    view = {
        "versions": [{"Version": v} for v in ("1", "2", "3", "10", "11")],
        "aliases": [
            {
                "Name": "live",
                "FunctionVersion": "10",
                "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}},
            },
            {"Name": "dev", "FunctionVersion": "$LATEST"},
        ],
        "provisioned_concurrency": [{"Qualifier": "live"}, {"Qualifier": "3"}],
        "event_invoke_configs": [{"Qualifier": "$LATEST"}],
        "event_source_mappings": [{"Qualifier": "11"}, {"Qualifier": "99"}],  # 99: gone
    }
    assert d.referenced_versions(view) == ["2", "3", "10", "11"]


def test_environment_sections() -> None:
    assert d.environment_section(None, "KMSAccessDenied") == {
        "variables": None,
        "values": "unreadable",
        "error": "KMSAccessDenied",
    }
    assert d.environment_section(["A"], None) == {"variables": ["A"], "values": "omitted"}
    section = d.environment_section(["A"], None, {"$LATEST": {"A": "c2VjcmV0"}}, "arn:key")
    assert section["values"] == "kms-encrypted" and section["kms_key_id"] == "arn:key"


def test_document_parse_names_the_missing_field() -> None:
    with pytest.raises(d.DocumentError, match="schema_version"):
        d.Document.parse({"schema_version": 2})
    with pytest.raises(d.DocumentError, match="field configuration"):
        d.Document.parse({"schema_version": 1, "function": {}})
    with pytest.raises(d.DocumentError, match="not a JSON object"):
        d.Document.parse([])
