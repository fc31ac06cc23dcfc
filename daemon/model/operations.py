"""The AWS operations the daemon calls, each with the IAM action it needs and who needs it.

Every module that calls AWS declares its operations in an `OPERATIONS` tuple next to the code
that makes the calls; `daemon.collectors.registry.declared_operations` gathers them, the metrics
zero-initialise from them, and `python -m daemon.deploy` generates the IAM policies in
deploy/iam from them. A test sweeps the demo estate and checks that every operation the daemon
was seen to call is declared and granted, and that every granted action was called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Who makes the call, and so which role's policy must grant it:
# - "reader": the role the daemon assumes in every scanned account (POSTURE_AWS__ROLE_NAME), and
#   the daemon's own role when it scans its own account;
# - "hub": the role the daemon runs as (IRSA, EKS Pod Identity, ECS task role);
# - "organizations": whoever lists the organization's accounts: the hub role itself when it runs
#   in the management account, or the role named by POSTURE_AWS__ORGANIZATIONS_ROLE_ARN;
# - "export": whoever writes configuration snapshots (the bucket and its KMS key): the role named
#   by POSTURE_EXPORT__ROLE_ARN, or the hub role when it is unset. Opt-in only.
Principal = Literal["reader", "hub", "organizations", "export"]
PRINCIPALS: tuple[Principal, ...] = ("reader", "hub", "organizations", "export")


@dataclass(frozen=True, slots=True)
class Operation:
    """An AWS operation the daemon calls, with the IAM action it needs."""

    service: str  # botocore service name
    operation: str  # wire name, as in posture_aws_api_requests_total{operation}
    iam_action: str  # not always the operation's name: GetStages needs apigateway:GET
    # Only called by an opt-in feature (for example one that changes AWS): its action goes to a
    # separate, optional policy, never to the default read-only one.
    optional: bool = False
    principal: Principal = "reader"
