"""Service models cut down to the operations the daemon calls.

botocore loads a service's whole API model: every operation, every shape, and the documentation
of each. The daemon calls a handful of operations per service (EC2: one of ~750), yet the models
of the services it reads were most of its long-lived heap. `TrimmedLoader` keeps, of each
service model it loads, the operations the daemon declares (daemon/model/operations.py) and the
shapes they reach, without documentation; every other file (endpoint rules, paginators,
partitions, retry rules) loads as botocore's loader loads it.

A client of a trimmed model has methods only for the kept operations; calling another raises
AttributeError. Every operation the daemon calls is declared (a test sweeps the demo estate and
checks it), as its IAM policy, generated from the same declarations, would deny the rest anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from botocore.loaders import Loader

from daemon.model.operations import Operation

SERVICE_MODEL = "service-2"
DOC_KEYS = frozenset({"documentation", "documentationUrl"})


def operations_by_service(operations: Iterable[Operation]) -> dict[str, frozenset[str]]:
    by_service: dict[str, set[str]] = {}
    for op in operations:
        by_service.setdefault(op.service, set()).add(op.operation)
    return {service: frozenset(names) for service, names in by_service.items()}


def _shape_refs(shape: Mapping[str, Any]) -> Iterable[str]:
    """The shapes one shape refers to: structure members, list members, map keys and values."""
    for member in shape.get("members", {}).values():
        yield member["shape"]
    for key in ("member", "key", "value"):
        ref = shape.get(key)
        if ref is not None:
            yield ref["shape"]


def _undocumented(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _undocumented(v) for k, v in value.items() if k not in DOC_KEYS}
    if isinstance(value, list):
        return [_undocumented(v) for v in value]
    return value


def trim(model: Mapping[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """`model` (a service-2 document) with only the operations in `keep` and the shapes they
    reach (input, output, errors, transitively), documentation dropped. Names in `keep` that the
    model lacks are ignored: botocore reports those when they are called."""
    operations = {name: op for name, op in model["operations"].items() if name in keep}
    shapes = model["shapes"]
    pending = [
        ref["shape"]
        for op in operations.values()
        for ref in (op.get("input"), op.get("output"), *op.get("errors", ()))
        if ref is not None
    ]
    reached: set[str] = set()
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        pending.extend(_shape_refs(shapes[name]))
    trimmed = {k: v for k, v in model.items() if k not in ("operations", "shapes", *DOC_KEYS)}
    trimmed["operations"] = _undocumented(operations)
    trimmed["shapes"] = {name: _undocumented(shapes[name]) for name in sorted(reached)}
    return trimmed


class TrimmedLoader(Loader):  # type: ignore[misc]
    """botocore's loader, whose service models of the services in `keep` hold only those
    operations. The full document is parsed, cut, and dropped from the loader's cache."""

    _cache: dict[tuple[Any, ...], Any]  # botocore's, per method and arguments

    def __init__(self, keep: Mapping[str, frozenset[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keep = dict(keep)
        self._trimmed: dict[tuple[str, str | None], dict[str, Any]] = {}

    def load_service_model(
        self, service_name: str, type_name: str, api_version: str | None = None
    ) -> Any:
        keep = self._keep.get(service_name)
        if type_name != SERVICE_MODEL or keep is None:
            return super().load_service_model(service_name, type_name, api_version)
        key = (service_name, api_version)
        model = self._trimmed.get(key)
        if model is None:
            full = super().load_service_model(service_name, type_name, api_version)
            model = self._trimmed[key] = trim(full, keep)
            # botocore's caches would keep the full document alive: drop what refers to it
            self._cache = {k: v for k, v in self._cache.items() if not _holds(v, full)}
        return model


def _holds(cached: Any, document: Any) -> bool:
    """Whether a loader cache entry is `document` or a (document, path) pair holding it."""
    return cached is document or (
        isinstance(cached, tuple) and bool(cached) and cached[0] is document
    )


def trimmed_loader(data_path: str | None, keep: Mapping[str, frozenset[str]]) -> TrimmedLoader:
    """A `TrimmedLoader` searching where botocore's would (`create_loader`): AWS_DATA_PATH's
    directories first, then ~/.aws/models and botocore's own data."""
    paths = None
    if data_path is not None:
        paths = [str(Path(os.path.expandvars(p)).expanduser()) for p in data_path.split(os.pathsep)]
    return TrimmedLoader(keep, extra_search_paths=paths)
