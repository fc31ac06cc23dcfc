"""Which service models the daemon loads (and freezes) before its first sweep."""

from __future__ import annotations

from daemon.app import warm_services
from daemon.collectors.registry import declared_operations
from daemon.config import EventsSettings, ExportSettings, Settings

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/posture-events"


def test_opt_in_features_models_are_loaded_only_when_they_are_on() -> None:
    default = warm_services(Settings())
    # every service a sweep calls (discovery, the collectors, STS) ...
    assert {"sts", "lambda", "ecr", "ecs", "rds", "iam", "organizations"} <= default
    # ... but not the export's S3 or the event fast path's SQS
    assert not default & {"s3", "sqs"}

    export = warm_services(Settings(export=ExportSettings(enabled=True, bucket="posture-bkp")))
    assert export - default == {"s3"}
    events = warm_services(Settings(events=EventsSettings(enabled=True, queue_url=QUEUE)))
    assert events - default == {"sqs"}
    # nothing declared is left out when everything is on
    both = warm_services(
        Settings(
            export=ExportSettings(enabled=True, bucket="posture-bkp"),
            events=EventsSettings(enabled=True, queue_url=QUEUE),
        )
    )
    assert both == {op.service for op in declared_operations()}
