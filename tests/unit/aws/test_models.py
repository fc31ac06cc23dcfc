"""Service models cut down to the declared operations (daemon/aws/models.py), on botocore's real
models. No AWS call is made; tests/integration/test_clients.py calls through trimmed models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.loaders import Loader

from daemon.aws.models import TrimmedLoader, operations_by_service, trim
from daemon.collectors.registry import declared_operations


def _refs(shape: dict[str, Any]) -> Iterator[str]:
    for member in shape.get("members", {}).values():
        yield member["shape"]
    for key in ("member", "key", "value"):
        if key in shape:
            yield shape[key]["shape"]


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def _without_docs(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_docs(v)
            for k, v in value.items()
            if k not in ("documentation", "documentationUrl")
        }
    if isinstance(value, list):
        return [_without_docs(v) for v in value]
    return value


def test_a_trimmed_model_keeps_the_operations_and_every_shape_they_reach() -> None:
    full = Loader().load_service_model("ec2", "service-2")
    keep = frozenset({"DescribeSecurityGroups", "NoSuchOperation"})
    trimmed = trim(full, keep)
    assert set(trimmed["operations"]) == {"DescribeSecurityGroups"}
    assert trimmed["metadata"] == full["metadata"]
    shapes = trimmed["shapes"]
    # closed: everything a kept operation or shape refers to is there...
    op = trimmed["operations"]["DescribeSecurityGroups"]
    roots = [op["input"]["shape"], op["output"]["shape"]]
    seen: set[str] = set()
    while roots:
        name = roots.pop()
        if name not in seen:
            seen.add(name)
            roots.extend(_refs(shapes[name]))
    # ... nothing else is, and what is kept is the original, less its documentation
    assert seen == set(shapes)
    assert "SecurityGroup" in shapes and "Instance" not in shapes
    for name in shapes:
        assert shapes[name] == _without_docs(full["shapes"][name])
    assert op == _without_docs(full["operations"]["DescribeSecurityGroups"])
    assert "documentation" not in set(_keys(trimmed))
    assert len(shapes) < len(full["shapes"]) / 20


def test_the_loader_trims_the_declared_services_and_forgets_the_full_documents() -> None:
    keep = operations_by_service(declared_operations())
    loader = TrimmedLoader(keep)
    lam = loader.load_service_model("lambda", "service-2")
    every = set(Loader().load_service_model("lambda", "service-2")["operations"])
    # a declared name that is no API operation (DownloadFunctionCode: the code's presigned URL)
    # is ignored
    assert set(lam["operations"]) == keep["lambda"] & every
    assert "GetFunction" in lam["operations"] and "CreateFunction" not in lam["operations"]
    assert loader.load_service_model("lambda", "service-2") is lam  # cached, trimmed once
    # no cache entry still holds a full document (its operations beyond the declared ones)
    for value in loader._cache.values():
        doc = value[0] if isinstance(value, tuple) else value
        if isinstance(doc, dict) and "operations" in doc:
            assert set(doc["operations"]) <= keep["lambda"]
    # other files and undeclared services load whole, as botocore's loader loads them
    assert loader.load_service_model("lambda", "paginators-1") == Loader().load_service_model(
        "lambda", "paginators-1"
    )
    assert "dynamodb" not in keep
    assert loader.load_service_model("dynamodb", "service-2") == Loader().load_service_model(
        "dynamodb", "service-2"
    )
