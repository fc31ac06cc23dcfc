"""Parsing change events (CloudTrail management events as EventBridge delivers them to SQS)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.reconciler.events import Change, MalformedEventError, parse_event

ACCOUNT = "111111111111"


def event(source: str, name: str, params: Any, response: Any = None, **top: Any) -> str:
    return json.dumps(
        {
            "version": "0",
            "detail-type": "AWS API Call via CloudTrail",
            "source": source,
            "account": ACCOUNT,
            "region": "eu-west-1",
            "detail": {
                "eventName": name,
                "awsRegion": "eu-west-1",
                "requestParameters": params,
                "responseElements": response,
                "readOnly": False,
                "recipientAccountId": ACCOUNT,
            },
            **top,
        }
    )


@pytest.mark.parametrize(
    ("body", "resource"),
    [
        (event("aws.lambda", "UpdateFunctionCode20150331v2", {"functionName": "orders"}), "orders"),
        (
            event(
                "aws.lambda",
                "TagResource20170331v2",
                {"resource": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:orders"},
            ),
            f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:orders",
        ),
        (
            event(
                "aws.lambda",
                "CreateFunction20150331",
                {"functionName": None},
                {"functionArn": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:new"},
            ),
            f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:new",
        ),
        (event("aws.lambda", "PublishLayerVersion20181031", {"layerName": "shared"}), None),
        (event("aws.ecr", "SetRepositoryPolicy", {"repositoryName": "web"}), "web"),
        (
            event("aws.rds", "ModifyDBSnapshotAttribute", {"dBSnapshotIdentifier": "nightly"}),
            f"arn:aws:rds:eu-west-1:{ACCOUNT}:snapshot:nightly",
        ),
        (event("aws.ecs", "UpdateService", {"service": "api", "cluster": "prod"}), "api"),
    ],
)
def test_change_events_name_their_resource(body: str, resource: str | None) -> None:
    change = parse_event(body)
    assert change is not None
    assert change.account_id == ACCOUNT and change.region == "eu-west-1"
    assert change.resource == resource


def test_service_and_event_name() -> None:
    change = parse_event(event("aws.ecr", "PutLifecyclePolicy", {"repositoryName": "web"}))
    assert change == Change(ACCOUNT, "eu-west-1", "ecr", "PutLifecyclePolicy", "web")


def test_read_only_events_are_ignored() -> None:
    assert parse_event(event("aws.lambda", "GetFunction20150331v2", {"functionName": "x"})) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"source": "aws.s3", "detail": {}}), "watched service"),
        (json.dumps({"source": "aws.lambda"}), "detail"),
        (json.dumps({"source": "aws.lambda", "detail": {}, "region": "eu-west-1"}), "account"),
        (json.dumps({"source": "aws.lambda", "detail": {}, "account": ACCOUNT}), "region"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(body: str, problem: str) -> None:
    with pytest.raises(MalformedEventError, match=problem):
        parse_event(body)


class FakeSqs:
    """What EventConsumer uses of AwsApi: ReceiveMessage answers and the deletions."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.deleted: list[str] = []

    async def call(self, service: str, method: str, **params: Any) -> dict[str, Any]:
        assert service == "sqs"
        if method == "receive_message":
            out, self.messages = self.messages, []
            return {"Messages": out}
        assert method == "delete_message"
        self.deleted.append(params["ReceiptHandle"])
        return {}


def message(handle: str, body: str, receives: int = 1) -> dict[str, Any]:
    return {
        "MessageId": handle,
        "ReceiptHandle": handle,
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": str(receives)},
    }


async def test_consumer_deletes_after_handling_and_never_loops_on_junk() -> None:
    from daemon.reconciler.events import MAX_RECEIVES, EventConsumer

    seen: list[Change] = []
    good = event("aws.lambda", "AddPermission20150331v2", {"functionName": "orders"})
    sqs = FakeSqs(
        [
            message("junk", "{not json"),
            message("good", good),
            message("read-only", event("aws.lambda", "GetPolicy20150331v2", {})),
        ]
    )
    consumer = EventConsumer(sqs, "https://queue", lambda c: seen.append(c) is None)  # type: ignore[arg-type]
    assert await consumer.poll_once() == 3
    assert sqs.deleted == ["junk", "good", "read-only"]
    assert [c.resource for c in seen] == ["orders"]
    assert consumer.malformed == 1 and consumer.handled == 2

    def broken(change: Change) -> bool:
        raise RuntimeError("bug")

    sqs.messages = [message("retry", good, receives=1), message("give-up", good, MAX_RECEIVES)]
    consumer.on_change = broken
    await consumer.poll_once()
    # left for SQS to deliver again, until it was received MAX_RECEIVES times
    assert sqs.deleted[-1] == "give-up" and "retry" not in sqs.deleted
