"""The event-driven fast path (optional): change events from an SQS queue trigger a reconcile now.

An EventBridge rule in each member account (deploy/events/) forwards the CloudTrail management
events of Lambda, ECR, ECS and RDS ("AWS API Call via CloudTrail": write calls only) to one SQS
queue. For each message the daemon forgets the cached details of the resource it names (or of
the whole target when it names none it can tell) and queues that target at once, so a change is a
metric within seconds instead of a sweep interval. Then the message is deleted.

- A message that is not an event the daemon understands (not JSON, not an EventBridge event of a
  watched service) is logged and deleted: it would never parse, so it must not loop.
- An event for a target this replica does not reconcile (another shard, out of scope) is deleted.
- When handling fails unexpectedly the message is left for SQS to deliver again, at most
  MAX_RECEIVES times (then logged and deleted).
Receiving fails? The loop logs and retries with backoff; the sweeps go on regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.aws.api import AwsApi
from daemon.aws.errors import AwsError
from daemon.collectors.base import Operation

log = structlog.get_logger("posture.events")

OPERATIONS = (
    Operation("sqs", "ReceiveMessage", "sqs:ReceiveMessage", principal="hub", optional=True),
    Operation("sqs", "DeleteMessage", "sqs:DeleteMessage", principal="hub", optional=True),
)

SOURCES = {"aws.lambda": "lambda", "aws.ecr": "ecr", "aws.ecs": "ecs", "aws.rds": "rds"}
MAX_RECEIVES = 5

# requestParameters keys that name the changed resource, per service (first found wins)
_NAME_KEYS = {
    "lambda": ("functionName", "resource", "layerName"),
    "ecr": ("repositoryName", "resourceArn"),
    "ecs": ("taskDefinition", "service", "cluster", "resourceArn"),
    "rds": ("dBSnapshotIdentifier", "dBClusterSnapshotIdentifier", "resourceName"),
}


class MalformedEventError(ValueError):
    """A message that is not an event the daemon can act on (never retried)."""


@dataclass(frozen=True, slots=True)
class Change:
    account_id: str
    region: str
    service: str  # lambda | ecr | ecs | rds
    event_name: str
    resource: str | None  # an ARN or a name in the account-region; None: the whole target


def _resource(service: str, account: str, region: str, detail: dict[str, Any]) -> str | None:
    params = detail.get("requestParameters")
    if not isinstance(params, dict):
        params = {}
    for key in _NAME_KEYS[service]:
        value = params.get(key)
        if isinstance(value, str) and value:
            if service == "lambda" and key == "layerName":
                return None  # a layer: the target's layer listing (not cached per function)
            if service == "rds" and not value.startswith("arn:"):
                kind = "cluster-snapshot" if "Cluster" in key else "snapshot"
                return f"arn:aws:rds:{region}:{account}:{kind}:{value}"
            return value
    response = detail.get("responseElements")
    if isinstance(response, dict):
        for key in ("functionArn", "repositoryArn"):
            value = response.get(key)
            if isinstance(value, str) and value:
                return value
        repository = response.get("repository")
        if isinstance(repository, dict) and isinstance(repository.get("repositoryArn"), str):
            return str(repository["repositoryArn"])
    return None


def parse_event(body: str) -> Change | None:
    """The change an SQS message body names. None: a valid event the daemon does not act on
    (e.g. a read-only call). Raises MalformedEventError for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        raise MalformedEventError("body is not JSON") from None
    if not isinstance(event, dict):
        raise MalformedEventError("body is not a JSON object")
    source = event.get("source")
    service = SOURCES.get(source) if isinstance(source, str) else None
    if service is None:
        raise MalformedEventError(f"not an event of a watched service (source {source!r:.40})")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEventError("event without a detail object")
    account = detail.get("recipientAccountId") or event.get("account")
    region = detail.get("awsRegion") or event.get("region")
    if not (isinstance(account, str) and account.isdigit() and len(account) == 12):
        raise MalformedEventError("event without a 12-digit account")
    if not isinstance(region, str) or not region:
        raise MalformedEventError("event without a region")
    name = str(detail.get("eventName") or "")
    if detail.get("readOnly") is True or name.startswith(("Get", "List", "Describe")):
        return None
    return Change(account, region, service, name, _resource(service, account, region, detail))


OnChange = Callable[[Change], bool]  # True: a target of this replica was queued


class EventConsumer:
    """Long-polls the queue and hands each change to the reconciler."""

    def __init__(
        self,
        api: AwsApi,
        queue_url: str,
        on_change: OnChange,
        wait_seconds: int = 10,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.queue_url = queue_url
        self.on_change = on_change
        self.wait_seconds = wait_seconds
        self._sleep = sleep
        self.handled = 0
        self.malformed = 0

    async def poll_once(self) -> int:
        """One ReceiveMessage and the handling of what it returned; the number of messages."""
        resp = await self.api.call(
            "sqs",
            "receive_message",
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = resp.get("Messages") or []
        for message in messages:
            await self._handle(message)
        return len(messages)

    async def _handle(self, message: dict[str, Any]) -> None:
        handle = message.get("ReceiptHandle")
        message_id = str(message.get("MessageId", ""))[:64]
        try:
            change = parse_event(str(message.get("Body") or ""))
        except MalformedEventError as exc:
            self.malformed += 1
            log.warning("malformed change event: deleted", message_id=message_id, problem=str(exc))
            await self._delete(handle)
            return
        try:
            if change is not None:
                queued = self.on_change(change)
                log.info(
                    "change event",
                    aws_account_id=change.account_id,
                    aws_region=change.region,
                    aws_service=change.service,
                    event_name=change.event_name[:64],
                    resource=(change.resource or "")[:256],
                    queued=queued,
                )
        except Exception:
            receives = int((message.get("Attributes") or {}).get("ApproximateReceiveCount") or 1)
            if receives < MAX_RECEIVES:
                log.exception(
                    "change event not handled: left for redelivery", message_id=message_id
                )
                return
            log.exception("change event not handled after retries: deleted", message_id=message_id)
        self.handled += 1
        await self._delete(handle)

    async def _delete(self, handle: Any) -> None:
        if not handle:
            return
        try:
            await self.api.call(
                "sqs", "delete_message", QueueUrl=self.queue_url, ReceiptHandle=str(handle)
            )
        except AwsError as err:
            # not deleted: SQS delivers it again after the visibility timeout (handled twice)
            log.warning("change event not deleted", error_code=err.code)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(60.0, 2.0 ** min(failures, 6))
                code = exc.code if isinstance(exc, AwsError) else type(exc).__name__
                log.error("change events not received", error_code=code, retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
