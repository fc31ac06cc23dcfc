"""The direct path's SigV4 signs exactly as botocore's `SigV4Auth` does, and reads only what it
can send as botocore would (daemon/aws/direct.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import get_session
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.aws.direct import SigV4, eligible
from daemon.collectors.registry import declared_operations

NOW = dt.datetime(2026, 11, 22, 13, 45, 7)
# what botocore's REST serialiser puts in a path or a query: percent-encoded text
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
)
_encoded = _text.map(botocore.utils.percent_encode)
_segment = st.one_of(_encoded, st.sampled_from([".", "..", "a:b", "fn-1", "%2F", "~x"]))


def _botocore(
    url: str, headers: dict[str, str], creds: Credentials, region: str, service: str
) -> dict[str, str]:
    request = AWSRequest(method="GET", url=url, headers=dict(headers), data=b"")
    auth = botocore.auth.SigV4Auth(creds, service, region)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: NOW  # type: ignore[assignment]
    try:
        auth.add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original  # type: ignore[assignment]
    return dict(request.headers.items())


def _ours(
    url: str, headers: dict[str, str], creds: Credentials, region: str, service: str
) -> dict[str, str]:
    out = dict(headers)
    host = botocore.auth._host_from_url(url)
    SigV4().sign(
        "GET",
        url,
        out,
        creds.get_frozen_credentials(),
        region,
        service,
        host,
        NOW.strftime("%Y%m%dT%H%M%SZ"),
    )
    return out


@settings(max_examples=300, deadline=None)
@given(
    host=st.sampled_from(
        [
            "https://lambda.us-east-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "https://lambda-fips.us-gov-west-1.amazonaws.com:443",
            "http://localhost:80",
        ]
    ),
    path=st.lists(_segment, min_size=0, max_size=5),
    query=st.lists(st.tuples(_encoded, _encoded), max_size=4),
    token=st.one_of(st.none(), st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=40)),
    extra=st.dictionaries(
        st.sampled_from(["User-Agent", "X-Amz-Trace-Id", "Content-Type", "x-custom"]),
        st.text(alphabet="ab c/1\t", min_size=1, max_size=12).filter(lambda v: v.strip()),
        max_size=3,
    ),
    region=st.sampled_from(["us-east-1", "eu-west-1"]),
)
def test_signature_is_botocores(
    host: str,
    path: list[str],
    query: list[tuple[str, str]],
    token: str | None,
    extra: dict[str, str],
    region: str,
) -> None:
    url = host + "/2015-03-31/" + "/".join(path)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    theirs = _botocore(url, extra, creds, region, "lambda")
    ours = _ours(url, extra, creds, region, "lambda")
    assert ours == theirs


def test_signing_key_is_derived_once_per_day_region_and_service() -> None:
    signer = SigV4()
    creds = Credentials("AKID", "secret", None).get_frozen_credentials()
    for day in ("20261122T000000Z", "20261122T235959Z", "20261123T000000Z"):
        signer.sign("GET", "https://h/x", {}, creds, "us-east-1", "lambda", "h", day)
    signer.sign("GET", "https://h/x", {}, creds, "eu-west-1", "lambda", "h", "20261123T000001Z")
    assert len(signer._keys) == 3  # two days in us-east-1, one in eu-west-1


def test_the_known_aws_example_signature() -> None:
    # AWS's documented example (IAM ListUsers, GET, 2015-08-30T12:36:00Z): the signature AWS
    # publishes for it, not one computed by botocore
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    SigV4().sign(
        "GET",
        "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        headers,
        creds.get_frozen_credentials(),
        "us-east-1",
        "iam",
        "iam.amazonaws.com",
        "20150830T123600Z",
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


def test_the_daemon_reads_lambda_directly_and_everything_else_through_botocore() -> None:
    by_service: dict[str, set[str]] = {}
    session = get_session()
    models: dict[str, Any] = {}
    for op in declared_operations():
        if op.service not in models:
            models[op.service] = session.get_service_model(op.service)
        if op.operation not in models[op.service].operation_names:
            continue  # not an API call (the code download of a presigned URL)
        if eligible(models[op.service].operation_model(op.operation)):
            by_service.setdefault(op.service, set()).add(op.operation)
    assert {"GetFunction", "GetPolicy", "GetFunctionUrlConfig"} <= by_service["lambda"]
    assert {"GetFunctionEventInvokeConfig", "ListAliases"} <= by_service["lambda"]
    # JSON, query and XML protocols, and POSTs, are never sent directly
    for service in ("ecr", "ecs", "rds", "iam", "sts", "logs", "ec2", "sqs"):
        assert service not in by_service, (service, by_service.get(service))
