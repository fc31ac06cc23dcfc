"""Execution roles and their policies (IAM is global: shared by every region of an account).

Roles are cached per account so the regions of one account, and the many functions that share a
role, read it once: a role that was read is re-read after `ttl_seconds` (the daemon's
max_data_age), each role after its own fraction of it (between half and all of it, from a hash of
its ARN) so the refreshes spread over the sweeps; a role that could not be read is asked again
after `error_ttl_seconds` (short: unknown is not kept for long). A managed policy version is
immutable, so its document is cached until the policy's default version changes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from daemon.aws.api import AwsApi
from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.base import Operation
from daemon.collectors.cache import phase
from daemon.model.awslambda import ExecutionRole, InlinePolicy, ManagedPolicy
from daemon.model.iampolicy import PolicyParseError, parse_policy

OPERATIONS = (
    Operation("iam", "GetRole", "iam:GetRole"),
    Operation("iam", "ListAttachedRolePolicies", "iam:ListAttachedRolePolicies"),
    Operation("iam", "ListRolePolicies", "iam:ListRolePolicies"),
    Operation("iam", "GetRolePolicy", "iam:GetRolePolicy"),
    Operation("iam", "GetPolicy", "iam:GetPolicy"),
    Operation("iam", "GetPolicyVersion", "iam:GetPolicyVersion"),
)


MAX_DOCUMENTS = 5000  # managed policy versions kept (immutable; AWS-managed ones are shared)


@dataclass(frozen=True, slots=True)
class RoleResult:
    role: ExecutionRole | None  # None: the role does not exist
    error: str | None = None  # an error code when the role could not be read
    fetched_at: float = 0.0  # unix time it was read


class RoleReader:
    def __init__(self, ttl_seconds: float, error_ttl_seconds: float | None = None) -> None:
        self.ttl = ttl_seconds
        self.error_ttl = ttl_seconds if error_ttl_seconds is None else error_ttl_seconds
        self._roles: dict[tuple[str, str], tuple[float, RoleResult]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[RoleResult]] = {}
        self._documents: dict[tuple[str, str, str], ManagedPolicy] = {}
        self._pruned_at = 64  # role entries after the last pruning

    async def role(self, api: AwsApi, role_arn: str, now: float | None = None) -> RoleResult:
        """The role, from the cache while fresh. `now`: unix time of the sweep (default: now)."""
        key = (api.account_id, role_arn)
        clock = time.time() if now is None else now
        cached = self._roles.get(key)
        if cached is not None and clock - cached[0] < self._ttl_of(role_arn, cached[1]):
            return cached[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._read(api, role_arn))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        result = await asyncio.shield(task)
        if not result.fetched_at:
            result = replace(result, fetched_at=clock)
        self._roles[key] = (clock, result)
        self._prune(clock)
        return result

    def _ttl_of(self, role_arn: str, result: RoleResult) -> float:
        if result.error:
            return min(self.ttl, self.error_ttl)
        return self.ttl * (0.5 + 0.5 * phase(role_arn))

    def _prune(self, now: float) -> None:
        """Forget roles that expired, and documents beyond a cap, so a long run with role and
        policy churn (every deployment a new role name) does not grow without bound."""
        if len(self._roles) > self._pruned_at * 2:
            for key in [k for k, (at, _) in self._roles.items() if now - at >= self.ttl]:
                del self._roles[key]
            self._pruned_at = max(64, len(self._roles))
        while len(self._documents) > MAX_DOCUMENTS:
            del self._documents[next(iter(self._documents))]  # oldest first

    async def _read(self, api: AwsApi, role_arn: str) -> RoleResult:
        name = role_arn.rsplit("/", 1)[-1]
        try:
            await api.call("iam", "get_role", RoleName=name)
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return RoleResult(None)
            if err.kind.retryable:
                raise
            return RoleResult(None, err.code)
        try:
            attached = await api.all_items(
                "iam", "list_attached_role_policies", "AttachedPolicies", RoleName=name
            )
            inline_names = await api.all_items(
                "iam", "list_role_policies", "PolicyNames", RoleName=name
            )
            managed = [
                await self._managed(api, p["PolicyArn"], str(p.get("PolicyName") or p["PolicyArn"]))
                for p in attached
                if p.get("PolicyArn")
            ]
            inline = [await self._inline(api, name, pname) for pname in inline_names]
        except AwsError as err:
            if err.kind.retryable:
                raise
            return RoleResult(None, err.code)
        return RoleResult(ExecutionRole(role_arn, name, tuple(managed), tuple(inline)))

    async def _managed(self, api: AwsApi, arn: str, name: str) -> ManagedPolicy:
        meta = await api.call("iam", "get_policy", PolicyArn=arn)
        version = (meta.get("Policy") or {}).get("DefaultVersionId")
        if not version:
            return ManagedPolicy(arn, name, None, "GetPolicy answered without a DefaultVersionId")
        key = (api.account_id if ":aws:policy/" not in arn else "aws", arn, version)
        cached = self._documents.get(key)
        if cached is not None:
            return cached
        resp = await api.call("iam", "get_policy_version", PolicyArn=arn, VersionId=version)
        document = (resp.get("PolicyVersion") or {}).get("Document") or ""
        try:
            policy = ManagedPolicy(arn, name, parse_policy(document))
        except PolicyParseError as exc:
            policy = ManagedPolicy(arn, name, None, str(exc))
        self._documents[key] = policy
        return policy

    async def _inline(self, api: AwsApi, role: str, name: str) -> InlinePolicy:
        resp = await api.call("iam", "get_role_policy", RoleName=role, PolicyName=name)
        try:
            return InlinePolicy(name, parse_policy(resp.get("PolicyDocument") or ""))
        except PolicyParseError as exc:
            return InlinePolicy(name, None, str(exc))
