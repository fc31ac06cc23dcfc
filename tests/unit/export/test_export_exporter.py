"""The exporter's decisions that need no AWS: when a full re-read is due, since when a function's
export is pending, which region a KMS key lives in; and the settings that turn the export on."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from daemon.config import ExportSettings, SettingsError, load_settings
from daemon.export.exporter import Exporter, key_region
from daemon.logging import setup_logging
from daemon.metrics.health import HealthMetrics
from daemon.model import awslambda as m
from daemon.model.export import SnapshotRef

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ARN = "arn:aws:lambda:us-east-1:111111111111:function:f"


def exporter(**settings: Any) -> Exporter:
    s = ExportSettings(enabled=True, bucket="backups", **settings)
    return Exporter(
        s, gateway=None, metrics=HealthMetrics(CollectorRegistry()), default_region="us-east-1"
    )  # type: ignore[arg-type]


def ref(captured: dt.datetime) -> SnapshotRef:
    return SnapshotRef("s3://b/x/", "20260101T000000.000Z-ab", captured, "ab", "f")


def fn(last_modified: dt.datetime | None = None) -> m.LambdaFunction:
    return m.LambdaFunction(
        arn=ARN,
        name="f",
        account_id="111111111111",
        region="us-east-1",
        runtime="python3.12",
        package_type="Zip",
        handler="h",
        role_arn="r",
        memory_mb=128,
        timeout_s=3,
        code_sha256="x",
        last_modified=last_modified,
        revision_id=None,
    )


def test_full_checks_are_spread_over_the_period() -> None:
    e = exporter(full_check_hours=24)
    latest = ref(NOW - dt.timedelta(days=3))
    # on first sight (a start or restart) nothing is due at once: no burst of full reads ...
    assert not e._full_check_due(ARN, latest, NOW)
    # ... the first check comes at the function's phase within the period
    due_at = [h for h in range(48) if e._full_check_due(ARN, latest, NOW + dt.timedelta(hours=h))]
    assert due_at and 0 < due_at[0] <= 24
    e._full_checked[ARN] = NOW + dt.timedelta(hours=due_at[0])
    later = [
        h
        for h in range(due_at[0], due_at[0] + 48)
        if e._full_check_due(ARN, latest, NOW + dt.timedelta(hours=h))
    ]
    assert later and later[0] - due_at[0] in range(23, 26)  # once a period
    # different functions have different phases
    phases = set()
    for i in range(20):
        arn = f"{ARN}-{i}"
        e._full_checked[arn] = NOW
        phases.add(
            next(
                h
                for h in range(1, 49)
                if e._full_check_due(arn, latest, NOW + dt.timedelta(hours=h))
            )
        )
    assert len(phases) > 5
    assert not exporter(full_check_hours=0)._full_check_due(ARN, latest, NOW + dt.timedelta(days=9))
    assert not e._full_check_due(ARN, None, NOW)  # never exported: exported anyway


def test_pending_since_prefers_aws_change_time() -> None:
    e = exporter()
    latest = ref(NOW - dt.timedelta(hours=5))
    changed = NOW - dt.timedelta(hours=2)
    state = e._pending_state(fn(last_modified=changed), latest, NOW, None)
    assert state.pending_since == changed
    # no LastModified after the snapshot (an attachment changed): since the daemon first saw it
    e2 = exporter()
    first = e2._pending_state(fn(), latest, NOW, "x")
    again = e2._pending_state(fn(), latest, NOW + dt.timedelta(minutes=10), "y")
    assert first.pending_since == again.pending_since == NOW
    assert again.problem == "y" and not again.current


def test_key_region() -> None:
    assert key_region("arn:aws:kms:eu-west-1:1:key/abc", "us-east-1") == "eu-west-1"
    assert key_region("arn:aws:kms:eu-west-1:1:alias/backups", "us-east-1") == "eu-west-1"
    assert key_region("alias/backups", "us-east-1") == "us-east-1"
    assert key_region("1234abcd-12ab", "ap-south-1") == "ap-south-1"


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().export.enabled is False
    monkeypatch.setenv("POSTURE_EXPORT__ENABLED", "true")
    with pytest.raises(SettingsError, match=r"POSTURE_EXPORT: .*without a bucket"):
        load_settings()
    monkeypatch.setenv("POSTURE_EXPORT__BUCKET", "my-backups")
    monkeypatch.setenv("POSTURE_EXPORT__INCLUDE_ENV_VALUES", "true")
    with pytest.raises(SettingsError, match="include_env_values needs kms_key_id"):
        load_settings()
    monkeypatch.setenv("POSTURE_EXPORT__KMS_KEY_ID", "alias/backups")
    monkeypatch.setenv("POSTURE_EXPORT__ROLE_ARN", "arn:aws:iam::999999999999:role/Exporter")
    monkeypatch.setenv("POSTURE_EXPORT__KEEP_LAST", "5")
    s = load_settings().export
    assert (s.bucket, s.keep_last, s.max_age_days, s.include_code) == ("my-backups", 5, None, True)
    monkeypatch.setenv("POSTURE_EXPORT__BUCKET", "Not_A_Bucket")
    with pytest.raises(SettingsError, match="POSTURE_EXPORT__BUCKET"):
        load_settings()


def test_presigned_urls_are_redacted_in_logs() -> None:
    """A backstop: the exporter never logs Code.Location, but a stray URL would lose its
    signature."""
    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    try:
        url = "https://awslambda-us-east-1-tasks.s3.amazonaws.com/x?X-Amz-Security-Token=tok&X-Amz-Signature=abc123"
        structlog.get_logger("t").info("oops", url=url)
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert "abc123" not in line["url"] and "tok" not in line["url"]
