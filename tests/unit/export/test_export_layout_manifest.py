"""Snapshot keys and manifests: what a reader trusts, and the clear error when it cannot."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from daemon.export.layout import (
    LayoutError,
    Location,
    parse_snapshot_id,
    parse_snapshot_url,
    snapshot_id,
)
from daemon.export.manifest import (
    FunctionIdentity,
    Manifest,
    ManifestError,
    ManifestObject,
    listing_problems,
    parse_manifest,
)

T = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
SID = "20250601T120000.123Z-3f2a9c0d1e4b5a69"
LOC = Location("backups", "posture/lambda")


def test_snapshot_ids_sort_in_time_and_round_trip() -> None:
    assert snapshot_id(T, "3f2a9c0d1e4b5a69") == SID
    parsed = parse_snapshot_id(SID)
    assert parsed == (T.replace(microsecond=123000), "3f2a9c0d1e4b5a69")
    later = snapshot_id(T + dt.timedelta(milliseconds=1), "0000000000000000")
    assert sorted([later, SID]) == [SID, later]
    assert snapshot_id(T.astimezone(dt.timezone(dt.timedelta(hours=2))), "ab12ab12") == (
        "20250601T120000.123Z-ab12ab12"
    )
    for bad in ("20250601T120000Z-abc", "2025-06-01-abcdabcd", "20251301T120000.000Z-abcdabcd"):
        assert parse_snapshot_id(bad) is None


def test_keys() -> None:
    assert (
        LOC.region_prefix("111111111111", "eu-west-1") == "posture/lambda/111111111111/eu-west-1/"
    )
    assert LOC.snapshot_prefix("111111111111", "eu-west-1", "fn", SID) == (
        f"posture/lambda/111111111111/eu-west-1/fn/{SID}/"
    )
    assert Location("b", "").function_prefix("111111111111", "eu-west-1", "fn") == (
        "111111111111/eu-west-1/fn/"
    )
    assert LOC.prefix_for() == "posture/lambda/"
    assert LOC.prefix_for("111111111111") == "posture/lambda/111111111111/"
    key = LOC.snapshot_prefix("111111111111", "eu-west-1", "fn", SID) + "code/ab.zip"
    parts = LOC.parse(key)
    assert parts is not None
    assert (parts.account, parts.region, parts.function, parts.snapshot_id, parts.name) == (
        "111111111111",
        "eu-west-1",
        "fn",
        SID,
        "code/ab.zip",
    )
    claim = LOC.parse(LOC.claim_key("111111111111", "eu-west-1", "fn", "none", "ab"))
    assert claim is not None and claim.claim and claim.snapshot_id is None
    for foreign in (
        "other/111111111111/eu-west-1/fn/" + SID + "/x",
        "posture/lambda/notanaccount/eu-west-1/fn/" + SID + "/x",
        "posture/lambda/111111111111/eu-west-1/fn/not-an-id/x",
        "posture/lambda/111111111111/eu-west-1/fn/" + SID + "/",
    ):
        assert LOC.parse(foreign) is None


def test_snapshot_urls() -> None:
    url = f"s3://backups/posture/lambda/111111111111/eu-west-1/fn/{SID}/"
    for variant in (url, url.rstrip("/"), url + "manifest.json"):
        a = parse_snapshot_url(variant)
        assert (a.bucket, a.account, a.region, a.function, a.snapshot_id) == (
            "backups",
            "111111111111",
            "eu-west-1",
            "fn",
            SID,
        )
        assert a.manifest_key == f"posture/lambda/111111111111/eu-west-1/fn/{SID}/manifest.json"
    for bad, why in (
        ("https://backups/x", "not an s3:// URL"),
        ("s3://backups", "names no snapshot"),
        (f"s3://b/1111/eu-west-1/fn/{SID}/", "not an account id"),
        (f"s3://b/111111111111/europe/fn/{SID}/", "not a region"),
        ("s3://b/111111111111/eu-west-1/fn/latest/", "not a snapshot id"),
    ):
        with pytest.raises(LayoutError, match=why):
            parse_snapshot_url(bad)


def manifest(**changes: Any) -> Manifest:
    base: dict[str, Any] = {
        "snapshot_id": SID,
        "captured_at": T,
        "function": FunctionIdentity(
            "fn", "arn:aws:lambda:eu-west-1:111111111111:function:fn", "111111111111", "eu-west-1"
        ),
        "revision": "3f2a9c0d1e4b5a69",
        "fingerprint": "f" * 20,
        "revision_id": None,
        "code_sha256": "u3WT",
        "document": "function.abc.json",
        "environment_values": "omitted",
        "objects": (
            ManifestObject("function.abc.json", 10, "a" * 64, "application/json"),
            ManifestObject("code/" + "b" * 64 + ".zip", 20, "b" * 64, "application/zip"),
        ),
        "writer": {"name": "posture-daemon", "version": "0.1.0"},
    }
    base.update(changes)
    return Manifest(**base)


def test_manifest_round_trip() -> None:
    m = manifest()
    parsed = parse_manifest(
        m.to_json(), snapshot_id=SID, function="fn", account="111111111111", region="eu-west-1"
    )
    assert parsed == m
    assert parsed.size == 30


def mutated(change: Any) -> bytes:
    doc = json.loads(manifest().to_json())
    change(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("objects"), "field objects is missing"),
        (lambda d: d.update(schema_version="1"), "field schema_version has the wrong type"),
        (lambda d: d.update(schema_version=0), "schema_version 0 is not supported"),
        (lambda d: d.update(kind="x"), "field kind"),
        (lambda d: d.update(captured_at="yesterday"), "captured_at is not an ISO timestamp"),
        (lambda d: d.update(captured_at="2025-06-01T12:00:00"), "captured_at has no time zone"),
        (lambda d: d["function"].pop("arn"), "field function.arn is missing"),
        (lambda d: d["function"].update(name="other"), "function.name 'other' does not match"),
        (lambda d: d.update(revision="0" * 16), "revision does not match its snapshot id"),
        (lambda d: d.update(environment_values="plain"), "environment_values is not one of"),
        (
            lambda d: d["objects"][0].update(name="../../etc"),
            r"objects\[0\].name '../../etc' is not",
        ),
        (
            lambda d: d["objects"][1].update(name="function.abc.json"),
            "lists 'function.abc.json' twice",
        ),
        (lambda d: d["objects"][0].update(sha256="xyz"), r"objects\[0\].size or sha256 is invalid"),
        (lambda d: d["objects"][0].update(size=True), r"objects\[0\].size has the wrong type"),
        (lambda d: d.update(document="missing.json"), "document 'missing.json' is not among"),
        (
            lambda d: d.update(snapshot_id="20250601T120000.124Z-3f2a9c0d1e4b5a69"),
            "does not match its key",
        ),
    ],
)
def test_manifest_errors_name_the_field(change: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(mutated(change), snapshot_id=SID, function="fn", account="111111111111")
    assert not info.value.newer


def test_newer_schema_is_flagged_not_judged() -> None:
    with pytest.raises(ManifestError, match="written by a newer posture-daemon") as info:
        parse_manifest(mutated(lambda d: d.update(schema_version=2)))
    assert info.value.newer


def test_not_json() -> None:
    with pytest.raises(ManifestError, match="manifest is not JSON"):
        parse_manifest(b"\xff{")
    with pytest.raises(ManifestError, match="not a JSON object"):
        parse_manifest(b"[]")


def test_listing_problems() -> None:
    m = manifest()
    assert listing_problems(m, {"function.abc.json": 10, f"code/{'b' * 64}.zip": 20}) == []
    assert listing_problems(m, {"function.abc.json": 11}) == [
        "function.abc.json has 11 bytes, the manifest says 10",
        f"code/{'b' * 64}.zip is missing",
    ]
