"""Reference data controls read (runtime deprecation dates), shipped as YAML and overridable."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

LAMBDA_RUNTIMES = "lambda_runtimes"


@cache
def _packaged_runtimes() -> Mapping[str, dt.date]:
    text = resources.files("daemon.controls").joinpath("data/lambda_runtimes.yaml").read_text()
    raw = yaml.safe_load(text)
    return MappingProxyType({str(k): _as_date(v) for k, v in raw.items()})


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def build_reference(
    overrides: Mapping[str, Mapping[str, dt.date]] | None = None,
) -> Mapping[str, Any]:
    """Packaged reference data with the policy's overrides applied."""
    runtimes = dict(_packaged_runtimes())
    if overrides:
        runtimes.update(overrides.get(LAMBDA_RUNTIMES, {}))
    return MappingProxyType({LAMBDA_RUNTIMES: MappingProxyType(runtimes)})


def runtime_deprecations(reference: Mapping[str, Any]) -> Mapping[str, dt.date]:
    found = reference.get(LAMBDA_RUNTIMES)
    if found is None:
        return _packaged_runtimes()
    return found  # type: ignore[no-any-return]
