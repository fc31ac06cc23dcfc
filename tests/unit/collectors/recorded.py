"""Recorded AWS answers for collector tests, checked against botocore's service model.

`checked(service, operation, response)` fails when a response holds a key, or a value type, that
the operation's output shape does not have, so the hand-written answers below cannot drift from
what AWS (and botocore) really return. `FakeApi` stands in for `AwsApi`: it answers from a table
of recorded responses (or raises a recorded error) and records every call it gets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, Shape, StructureShape

from daemon.aws.errors import AwsError, classify_code
from daemon.collectors.base import CollectContext
from daemon.model import Target

_SESSION = botocore.session.get_session()
_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "double": (int, float),
    "float": (int, float),
    "timestamp": (dt.datetime, str, int, float),
    "blob": (bytes, str),
}


def _check(shape: Shape, value: Any, path: str) -> None:
    if isinstance(shape, StructureShape):
        assert isinstance(value, dict), f"{path}: expected an object"
        for key, item in value.items():
            assert key in shape.members, f"{path}.{key}: not in botocore's {shape.name}"
            _check(shape.members[key], item, f"{path}.{key}")
    elif isinstance(shape, ListShape):
        assert isinstance(value, list), f"{path}: expected a list"
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]")
    elif isinstance(shape, MapShape):
        assert isinstance(value, dict), f"{path}: expected a map"
        for key, item in value.items():
            _check(shape.key, key, f"{path}<key>")
            _check(shape.value, item, f"{path}.{key}")
    else:
        types = _SCALARS[shape.type_name]
        assert isinstance(value, types) and not (
            shape.type_name in ("integer", "long") and isinstance(value, bool)
        ), f"{path}: {value!r} is not a {shape.type_name}"
        enum = getattr(shape, "enum", None)
        if enum and shape.type_name == "string":
            assert value in enum, f"{path}: {value!r} not one of {enum}"


def checked(service: str, operation: str, response: dict[str, Any]) -> dict[str, Any]:
    """The response, after checking it against the operation's output shape."""
    model = _SESSION.get_service_model(service).operation_model(operation)
    assert model.output_shape is not None
    _check(model.output_shape, response, operation)
    return response


def wire_name(service: str, method: str) -> str:
    model = _SESSION.get_service_model(service)
    for name in model.operation_names:
        if botocore.xform_name(name) == method:
            return name
    raise KeyError(method)


Answer = dict[str, Any] | AwsError | Callable[[dict[str, Any]], dict[str, Any] | AwsError]


def error(code: str, operation: str = "") -> AwsError:
    return AwsError(classify_code(code), code, operation=operation)


class FakeApi:
    """Answers `call`/`all_items` from recorded responses keyed by (service, method)."""

    def __init__(self, answers: dict[tuple[str, str], Answer], account_id: str, region: str):
        self.answers = answers
        self.account_id = account_id
        self.region = region
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def _answer(self, service: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((service, method, params))
        answer = self.answers.get((service, method))
        if answer is None:
            raise AssertionError(f"unexpected call {service}.{method}({params})")
        if callable(answer):
            answer = answer(params)
        if isinstance(answer, AwsError):
            raise answer
        return checked(service, wire_name(service, method), answer)

    async def call(self, service: str, method: str, **params: Any) -> dict[str, Any]:
        return self._answer(service, method, params)

    async def all_items(self, service: str, method: str, key: str, **params: Any) -> list[Any]:
        return list(self._answer(service, method, params).get(key) or [])

    def count(self, service: str, method: str) -> int:
        return sum(1 for s, m, _ in self.calls if (s, m) == (service, method))


def context(api: FakeApi, service: str, enabled: frozenset[str] | None = None) -> CollectContext:
    target = Target(api.account_id, api.region, service)
    return CollectContext(
        target=target,
        api=api,  # type: ignore[arg-type]
        global_api=api,  # type: ignore[arg-type]
        now=dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC),
        enabled_controls=enabled,
    )
