"""EC2 security groups, reduced to the inbound rules network-exposure controls read."""

from __future__ import annotations

from dataclasses import dataclass

ASPECT_SECURITY_GROUPS = "security_groups"  # ec2:DescribeSecurityGroups of the groups in use

WORLD_V4 = "0.0.0.0/0"
WORLD_V6 = "::/0"


@dataclass(frozen=True, slots=True)
class IngressRule:
    """One IpPermissions entry: a protocol, a port range and where traffic may come from."""

    protocol: str  # "tcp", "udp", "icmp", "-1" (all), or a protocol number
    from_port: int | None  # None (or -1) with protocol "-1": every port
    to_port: int | None
    cidrs: tuple[str, ...] = ()  # IPv4 and IPv6 ranges
    prefix_lists: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # source security groups

    def covers_tcp_port(self, port: int | None) -> bool:
        """Whether the rule admits TCP traffic to `port` (None: to some port)."""
        if self.protocol in ("-1", "all"):
            return True
        if self.protocol not in ("tcp", "6"):
            return False
        if port is None:
            return True
        low = -1 if self.from_port is None else self.from_port
        high = -1 if self.to_port is None else self.to_port
        if low == -1 and high == -1:
            return True
        return low <= port <= high

    @property
    def ports(self) -> str:
        if self.protocol in ("-1", "all"):
            return "all traffic"
        if self.from_port is None or self.from_port == -1:
            return f"{self.protocol} all ports"
        if self.from_port == self.to_port:
            return f"{self.protocol}/{self.from_port}"
        return f"{self.protocol}/{self.from_port}-{self.to_port}"


@dataclass(frozen=True, slots=True)
class SecurityGroup:
    group_id: str
    name: str
    vpc_id: str | None
    ingress: tuple[IngressRule, ...] = ()

    def open_to(self, cidrs: frozenset[str], port: int | None) -> list[IngressRule]:
        """Inbound rules that admit any of `cidrs` to the TCP `port`."""
        return [r for r in self.ingress if r.covers_tcp_port(port) and cidrs & set(r.cidrs)]
