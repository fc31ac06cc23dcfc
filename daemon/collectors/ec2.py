"""EC2 security groups of the resources a collector found, fetched once per target."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daemon.aws.errors import AwsError
from daemon.collectors.base import CollectContext, Operation
from daemon.model.ec2 import IngressRule, SecurityGroup

OPERATIONS = (Operation("ec2", "DescribeSecurityGroups", "ec2:DescribeSecurityGroups"),)

_CHUNK = 200  # values per filter


def _port(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else None


def ingress_rule(raw: dict[str, Any]) -> IngressRule:
    cidrs = [str(r.get("CidrIp")) for r in raw.get("IpRanges") or [] if r.get("CidrIp")]
    cidrs += [str(r.get("CidrIpv6")) for r in raw.get("Ipv6Ranges") or [] if r.get("CidrIpv6")]
    return IngressRule(
        protocol=str(raw.get("IpProtocol", "-1")).lower(),
        from_port=_port(raw.get("FromPort")),
        to_port=_port(raw.get("ToPort")),
        cidrs=tuple(cidrs),
        prefix_lists=tuple(
            str(p.get("PrefixListId"))
            for p in raw.get("PrefixListIds") or []
            if p.get("PrefixListId")
        ),
        groups=tuple(
            str(g.get("GroupId")) for g in raw.get("UserIdGroupPairs") or [] if g.get("GroupId")
        ),
    )


def security_group(raw: dict[str, Any]) -> SecurityGroup:
    return SecurityGroup(
        group_id=str(raw.get("GroupId", "")),
        name=str(raw.get("GroupName", "")),
        vpc_id=raw.get("VpcId"),
        ingress=tuple(ingress_rule(p) for p in raw.get("IpPermissions") or []),
    )


async def security_groups(
    ctx: CollectContext, group_ids: Iterable[str]
) -> tuple[dict[str, SecurityGroup], str | None]:
    """The groups that exist among `group_ids`, or an error code if EC2 would not say.

    A `group-id` filter (rather than GroupIds) makes a vanished group simply absent from the
    answer instead of failing the whole call with InvalidGroup.NotFound.
    """
    ids = sorted(set(group_ids))
    found: dict[str, SecurityGroup] = {}
    try:
        for i in range(0, len(ids), _CHUNK):
            groups = await ctx.api.all_items(
                "ec2",
                "describe_security_groups",
                "SecurityGroups",
                Filters=[{"Name": "group-id", "Values": ids[i : i + _CHUNK]}],
            )
            for raw in groups:
                sg = security_group(raw)
                found[sg.group_id] = sg
    except AwsError as err:
        if err.kind.retryable:
            raise
        return {}, err.code
    return found, None
