"""check_response_body: a 2xx answer whose body does not parse is refused, never read as empty.

botocore's own JSON parser turns such a body into an empty result (`{"message": body}`); these
cases use botocore's real service models and parser to show both sides.
"""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.parsers import create_parser

from daemon.aws.api import check_response_body
from daemon.aws.errors import ErrorKind, MalformedResponseError, classify_exception, error_code

SESSION = botocore.session.get_session()


def op(service: str, name: str) -> Any:
    return SESSION.get_service_model(service).operation_model(name)


def response(body: bytes, status: int = 200) -> dict[str, Any]:
    return {"status_code": status, "headers": {}, "body": body}


@pytest.mark.parametrize(
    ("service", "operation", "body"),
    [
        ("lambda", "ListFunctions", b'{"Functions": [{"FunctionName": "a"'),  # cut short
        ("lambda", "ListFunctions", b""),  # empty
        ("lambda", "ListFunctions", b"[]"),  # JSON, but not an object
        ("lambda", "GetPolicy", b"<html>gateway timeout</html>"),
        ("logs", "DescribeLogGroups", b'{"logGroups": [}'),  # json protocol
        ("iam", "ListRoles", b"<ListRolesResponse><ListRolesResult><Roles><mem"),  # query
        ("iam", "GetRole", b""),
        ("ec2", "DescribeSubnets", b"<DescribeSubnetsResponse"),  # ec2 protocol
    ],
)
def test_bodies_that_do_not_parse_are_refused(service: str, operation: str, body: bytes) -> None:
    model = op(service, operation)
    with pytest.raises(MalformedResponseError) as info:
        check_response_body(model, response(body))
    assert classify_exception(info.value) is ErrorKind.TRANSIENT
    assert error_code(info.value) == "MalformedResponse"
    assert operation in str(info.value)


def test_botocore_alone_would_read_a_cut_listing_as_no_functions() -> None:
    model = op("lambda", "ListFunctions")
    parsed = create_parser("rest-json").parse(
        response(b'{"Functions": [{"FunctionName": "a"'), model.output_shape
    )
    assert "Functions" not in parsed  # what the daemon refuses to believe


@pytest.mark.parametrize(
    ("service", "operation", "body", "status"),
    [
        ("lambda", "ListFunctions", b'{"Functions": []}', 200),
        ("iam", "ListRoles", b"<ListRolesResponse><ListRolesResult/></ListRolesResponse>", 200),
        ("lambda", "GetPolicy", b"not json at all", 404),  # errors are botocore's to parse
        ("lambda", "DeleteFunction", b"", 204),  # no output body
        ("lambda", "GetFunctionConcurrency", b"{}", 200),
    ],
)
def test_good_answers_and_errors_pass(
    service: str, operation: str, body: bytes, status: int
) -> None:
    check_response_body(op(service, operation), response(body, status))
