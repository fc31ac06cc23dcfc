"""Immutable values shared by every layer (see core.py); per-service snapshots live beside it."""

from daemon.model.core import (
    EMPTY_TAGS,
    ArnParts,
    CollectionIssue,
    Finding,
    RegionResource,
    Resource,
    Severity,
    Snapshot,
    Status,
    Target,
    frozen_errors,
    frozen_tags,
    parse_arn,
    region_resource_id,
)

__all__ = [
    "EMPTY_TAGS",
    "ArnParts",
    "CollectionIssue",
    "Finding",
    "RegionResource",
    "Resource",
    "Severity",
    "Snapshot",
    "Status",
    "Target",
    "frozen_errors",
    "frozen_tags",
    "parse_arn",
    "region_resource_id",
]
