"""The event fast path against moto server's SQS: a change event becomes a metric in seconds.

The daemon sweeps once, then (interval: an hour) only the event can make it look again. The test
changes a function the way no listing shows (a public function URL: the cached details would hide
it until max_data_age), puts the CloudTrail-via-EventBridge event for that call on the queue, and
waits for the violation. Malformed messages and events of accounts out of scope are deleted, not
looped on.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiobotocore.session import get_session

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .harness import aws_client, running_daemon, scrape, settings_for, value, wait_for


def cloudtrail_event(account: str, region: str, event_name: str, params: dict[str, str]) -> str:
    """What an EventBridge rule delivers for a CloudTrail management event (as SQS sees it)."""
    return json.dumps(
        {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.lambda",
            "account": account,
            "time": "2026-11-21T23:00:00Z",
            "region": region,
            "resources": [],
            "detail": {
                "eventVersion": "1.08",
                "userIdentity": {"type": "AssumedRole", "accountId": account},
                "eventTime": "2026-11-21T23:00:00Z",
                "eventSource": "lambda.amazonaws.com",
                "eventName": event_name,
                "awsRegion": region,
                "sourceIPAddress": "203.0.113.10",
                "requestParameters": params,
                "responseElements": None,
                "readOnly": False,
                "eventType": "AwsApiCall",
                "managementEvent": True,
                "recipientAccountId": account,
                "eventCategory": "Management",
            },
        }
    )


async def test_a_change_event_becomes_a_metric_within_seconds(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "909000000004"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    async with get_session().create_client("sqs", region_name=PRIMARY) as sqs:
        queue_url = (await sqs.create_queue(QueueName="posture-changes-test"))["QueueUrl"]
        settings = settings_for(
            policy_for([account], tmp_path, regions=[PRIMARY]),
            reconciler={"interval_seconds": 3600, "max_data_age_seconds": 3600},
            events={"enabled": True, "queue_url": queue_url, "wait_seconds": 1},
        )
        lam = {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}
        url_auth = {"control": "lambda-url-auth", "severity": "high"}
        async with running_daemon(settings) as daemon:
            assert value(await scrape(daemon), "posture_violations", **lam, **url_auth) == 0
            swept = daemon.store.view().health
            # junk first: it must be deleted, not handed back again and again
            await sqs.send_message(QueueUrl=queue_url, MessageBody="not an event {")
            await sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=json.dumps({"source": "aws.s3", "detail": {}}),
            )
            # an event of an account this daemon does not scan: deleted, nothing queued
            await sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=cloudtrail_event(
                    "909000000099", PRIMARY, "AddPermission20150331v2", {"functionName": "x"}
                ),
            )
            async with aws_client("lambda", account, PRIMARY) as client:
                await client.create_function_url_config(FunctionName="orders-api", AuthType="NONE")
            started = time.monotonic()
            await sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=cloudtrail_event(
                    account, PRIMARY, "CreateFunctionUrlConfig", {"functionName": "orders-api"}
                ),
            )
            while value(await scrape(daemon), "posture_violations", **lam, **url_auth) != 1:
                assert time.monotonic() - started < 20, "the event never became a metric"
                await asyncio.sleep(0.1)
            took = time.monotonic() - started
            consumer = daemon.events
            assert consumer is not None
            await wait_for(lambda: consumer.handled + consumer.malformed >= 4, 10, "handling")
            assert consumer.malformed == 2
            # the sweep interval is an hour: only the event made the daemon look again, and it
            # read that one function's details again, not the others'
            assert took < 15
            after = daemon.store.view().health
            assert all(after[t].last_success > swept[t].last_success for t in swept)
        attrs = (
            await sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
        assert attrs == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }
