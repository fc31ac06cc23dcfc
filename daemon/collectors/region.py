"""Region-wide audit posture: AWS Config recorders and CloudTrail trails covering the region.

The Lambda target reads both; the RDS target reads only the AWS Config recorders (whether they
record the RDS resource types its backups depend on), with the same code.
"""

from __future__ import annotations

from typing import Any

from daemon.collectors.base import AspectErrors, CollectContext, Operation
from daemon.model import frozen_errors, region_resource_id
from daemon.model.awslambda import (
    ASPECT_CLOUDTRAIL,
    ASPECT_CONFIG_RECORDER,
    ConfigRecorder,
    RegionPosture,
    Trail,
)

CONFIG_OPERATIONS = (
    Operation("config", "DescribeConfigurationRecorders", "config:DescribeConfigurationRecorders"),
    Operation(
        "config",
        "DescribeConfigurationRecorderStatus",
        "config:DescribeConfigurationRecorderStatus",
    ),
)
OPERATIONS = (
    *CONFIG_OPERATIONS,
    Operation("cloudtrail", "DescribeTrails", "cloudtrail:DescribeTrails"),
    Operation("cloudtrail", "GetTrailStatus", "cloudtrail:GetTrailStatus"),
    Operation("cloudtrail", "GetEventSelectors", "cloudtrail:GetEventSelectors"),
)


def _recorder(raw: dict[str, Any], recording: bool) -> ConfigRecorder:
    group = raw.get("recordingGroup") or {}
    strategy = (group.get("recordingStrategy") or {}).get("useOnly")
    all_supported = bool(
        group.get("allSupported", strategy in (None, "ALL_SUPPORTED_RESOURCE_TYPES"))
    )
    if strategy == "INCLUSION_BY_RESOURCE_TYPES":
        all_supported = False
    excluded = (group.get("exclusionByResourceTypes") or {}).get("resourceTypes") or []
    if strategy == "EXCLUSION_BY_RESOURCE_TYPES":
        all_supported = True
    return ConfigRecorder(
        name=str(raw.get("name", "default")),
        recording=recording,
        all_supported=all_supported,
        resource_types=frozenset(group.get("resourceTypes") or []),
        excluded_types=frozenset(excluded),
    )


def management_events_selected(selectors: dict[str, Any]) -> bool:
    """Whether a trail's selectors include write management events."""
    basic = selectors.get("EventSelectors") or []
    advanced = selectors.get("AdvancedEventSelectors") or []
    if not basic and not advanced:
        return True  # a trail without custom selectors logs all management events
    for sel in basic:
        if sel.get("IncludeManagementEvents", True) and sel.get("ReadWriteType", "All") in (
            "All",
            "WriteOnly",
        ):
            return True
    for sel in advanced:
        fields = {f.get("Field"): f for f in sel.get("FieldSelectors") or []}
        category = fields.get("eventCategory") or {}
        if "Management" not in (category.get("Equals") or []):
            continue
        read_only = fields.get("readOnly")
        if read_only is None or "false" in [str(v).lower() for v in read_only.get("Equals") or []]:
            return True
    return False


async def _config(ctx: CollectContext, errors: AspectErrors) -> tuple[ConfigRecorder, ...]:
    api = ctx.api
    recorders = await errors.fetch(
        ASPECT_CONFIG_RECORDER, api.call("config", "describe_configuration_recorders")
    )
    statuses = await errors.fetch(
        ASPECT_CONFIG_RECORDER, api.call("config", "describe_configuration_recorder_status")
    )
    if recorders is None or statuses is None:
        return ()
    recording = {
        s.get("name"): bool(s.get("recording"))
        for s in statuses.get("ConfigurationRecordersStatus", [])
    }
    return tuple(
        _recorder(r, recording.get(r.get("name"), False))
        for r in recorders.get("ConfigurationRecorders", [])
    )


async def _trails(ctx: CollectContext, errors: AspectErrors) -> tuple[Trail, ...]:
    api = ctx.api
    described = await errors.fetch(
        ASPECT_CLOUDTRAIL, api.call("cloudtrail", "describe_trails", includeShadowTrails=True)
    )
    if described is None:
        return ()
    out = []
    for raw in described.get("trailList", []):
        home = raw.get("HomeRegion", ctx.target.region)
        if home != ctx.target.region and not raw.get("IsMultiRegionTrail"):
            continue
        arn = raw.get("TrailARN") or raw.get("Name", "")
        status = await errors.fetch(
            ASPECT_CLOUDTRAIL, api.call("cloudtrail", "get_trail_status", Name=arn)
        )
        selectors = await errors.fetch(
            ASPECT_CLOUDTRAIL, api.call("cloudtrail", "get_event_selectors", TrailName=arn)
        )
        if status is None or selectors is None:
            continue
        out.append(
            Trail(
                name=str(raw.get("Name", arn)),
                arn=arn,
                home_region=home,
                multi_region=bool(raw.get("IsMultiRegionTrail")),
                logging=bool(status.get("IsLogging")),
                management_events=management_events_selected(selectors),
            )
        )
    return tuple(out)


async def collect_region(ctx: CollectContext, trails: bool = True) -> RegionPosture:
    """The account-region's AWS Config recorders and (unless `trails` is False) its trails."""
    errors = AspectErrors()
    recorders = await _config(ctx, errors)
    found = await _trails(ctx, errors) if trails else ()
    t = ctx.target
    return RegionPosture(
        arn=region_resource_id(t.account_id, t.region),
        account_id=t.account_id,
        region=t.region,
        errors=frozen_errors(errors.errors),
        config_recorders=recorders,
        trails=found,
    )
