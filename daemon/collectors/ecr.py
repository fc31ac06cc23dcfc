"""Amazon ECR private repositories: scanning, tag mutability, lifecycle and repository policies,
encryption keys, tags and, when the opt-in findings control is enabled, the scan findings of the
images the account-region's ECS task definitions use.

"In use" means: referenced (by tag or digest) by the latest ACTIVE revision of an ECS
task-definition family in the same account and region. Those references come from the
`TaskDefinitionReader` the ECS collector shares, so the definitions are read once per sweep.
Images used elsewhere (other accounts, EKS, Lambda container images) are not seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from daemon.aws.errors import AwsError
from daemon.collectors import kms
from daemon.collectors.base import AspectErrors, CollectContext, Operation, parse_timestamp
from daemon.collectors.cache import DetailCache, Lookups
from daemon.collectors.ecs import TASK_DEFINITION_OPERATIONS, TaskDefinitionReader
from daemon.model import ecr as m
from daemon.model import frozen_errors, frozen_tags
from daemon.model.ecs import TaskDefinition
from daemon.model.iampolicy import PolicyDocument, PolicyParseError, parse_policy
from daemon.model.kms import KmsKey

SERVICE = "ecr"
IN_USE_CONTROL = "ecr-in-use-images-no-critical-findings"

OPERATIONS: tuple[Operation, ...] = (
    Operation("ecr", "DescribeRepositories", "ecr:DescribeRepositories"),
    Operation("ecr", "GetRegistryScanningConfiguration", "ecr:GetRegistryScanningConfiguration"),
    Operation("ecr", "GetLifecyclePolicy", "ecr:GetLifecyclePolicy"),
    Operation("ecr", "GetRepositoryPolicy", "ecr:GetRepositoryPolicy"),
    Operation("ecr", "ListTagsForResource", "ecr:ListTagsForResource"),
    # Read only while the opt-in findings control is enabled (CollectContext.wants), but granted
    # with the rest: turning the control on in the policy needs no IAM change.
    Operation("ecr", "DescribeImageScanFindings", "ecr:DescribeImageScanFindings"),
    *TASK_DEFINITION_OPERATIONS,
    *kms.OPERATIONS,
)

# ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]/REPO[:TAG][@sha256:DIGEST]
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_TOP_FINDINGS = 5


@dataclass(frozen=True, slots=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"


def parse_image(image: str, account_id: str, region: str) -> ImageRef | None:
    """An image of this account-region's registry, or None for any other image."""
    match = _ECR_IMAGE.match(image.strip())
    if match is None or match["account"] != account_id or match["region"] != region:
        return None
    digest = match["digest"]
    return ImageRef(match["repo"], None if digest else (match["tag"] or "latest"), digest)


def images_in_use(
    definitions: Iterable[TaskDefinition], account_id: str, region: str
) -> dict[str, dict[ImageRef, list[str]]]:
    """repository -> image -> ARNs of the task definitions that reference it."""
    out: dict[str, dict[ImageRef, list[str]]] = {}
    for td in definitions:
        for c in td.containers:
            ref = parse_image(c.image, account_id, region)
            if ref is not None:
                users = out.setdefault(ref.repository, {}).setdefault(ref, [])
                if td.arn not in users:
                    users.append(td.arn)
    return out


def registry_scanning(resp: Mapping[str, Any]) -> m.RegistryScanning:
    config = resp.get("scanningConfiguration") or {}
    return m.RegistryScanning(
        scan_type=str(config.get("scanType") or "BASIC"),
        rules=tuple(
            m.ScanRule(
                frequency=str(r.get("scanFrequency", "")),
                filters=tuple(
                    str(f.get("filter", ""))
                    for f in r.get("repositoryFilters") or []
                    if f.get("filterType", "WILDCARD") == "WILDCARD"
                ),
            )
            for r in config.get("rules") or []
        ),
    )


def lifecycle_policy(text: Any) -> m.LifecyclePolicy:
    """Raises ValueError when the text is not a lifecycle policy document."""
    try:
        doc = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise ValueError(f"lifecycle policy is not valid JSON: {exc.msg}") from None
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        raise ValueError("lifecycle policy has no rules list")
    expires = any(
        isinstance(r, dict) and (r.get("action") or {}).get("type") == "expire" for r in rules
    )
    return m.LifecyclePolicy(rule_count=len(rules), expires=expires)


def image_scan(resp: Mapping[str, Any]) -> m.ImageScan:
    """DescribeImageScanFindings (basic or enhanced) reduced to counts and a few finding names."""
    status = str((resp.get("imageScanStatus") or {}).get("status") or "")
    findings = resp.get("imageScanFindings") or {}
    counts = {
        str(k).upper(): int(v)
        for k, v in (findings.get("findingSeverityCounts") or {}).items()
        if isinstance(v, int)
    }
    names: dict[str, list[str]] = {}
    for f in findings.get("findings") or []:
        names.setdefault(str(f.get("severity", "")).upper(), []).append(str(f.get("name", "")))
    for f in findings.get("enhancedFindings") or []:
        vuln = (f.get("packageVulnerabilityDetails") or {}).get("vulnerabilityId")
        names.setdefault(str(f.get("severity", "")).upper(), []).append(
            str(vuln or f.get("title") or "")
        )
    return m.ImageScan(
        status=status,
        severity_counts=MappingProxyType(counts),
        top_findings=MappingProxyType({k: tuple(v[:_TOP_FINDINGS]) for k, v in names.items() if k}),
        completed_at=parse_timestamp(findings.get("imageScanCompletedAt")),
    )


def _parse_policy_text(text: Any) -> tuple[PolicyDocument | None, str | None]:
    if text is None:
        return None, None
    try:
        return parse_policy(text), None
    except PolicyParseError as exc:
        return None, str(exc)


@dataclass
class _Shared:
    scanning: m.RegistryScanning | None
    scanning_error: str | None
    keys: Mapping[str, KmsKey | str]  # key ARN -> key, or the error code of DescribeKey
    in_use: dict[str, dict[ImageRef, list[str]]] | None  # None: not collected
    in_use_error: str | None = None


@dataclass(frozen=True, slots=True)
class _RepoDetails:
    """GetLifecyclePolicy, GetRepositoryPolicy and ListTagsForResource answers (None: absent)."""

    lifecycle: dict[str, Any] | None
    policy: dict[str, Any] | None
    tags: dict[str, Any] | None


class EcrCollector:
    service = SERVICE
    operations = OPERATIONS

    def __init__(
        self,
        task_definitions: TaskDefinitionReader,
        details: DetailCache[_RepoDetails] | None = None,
    ) -> None:
        self.task_definitions = task_definitions
        # lifecycle policy, repository policy and tags per repository: DescribeRepositories shows
        # no change of them, so they are re-read on the rolling refresh (or a change event)
        self.details: DetailCache[_RepoDetails] = details or DetailCache(0)
        # KMS keys of the repositories: read again when they name others, after a change event,
        # or on the rolling refresh
        self.lookups = Lookups(self.details.max_age, self.details.lookahead)

    def invalidate(self, account_id: str, region: str, resource: str | None = None) -> None:
        """Forget cached details (a change event): one repository by ARN or name, or all."""
        if resource is not None and not resource.startswith("arn:"):
            resource = f"arn:aws:ecr:{region}:{account_id}:repository/{resource}"
        self.details.invalidate((account_id, region), resource)
        self.lookups.invalidate((account_id, region))

    async def collect(self, ctx: CollectContext) -> m.EcrSnapshot:
        api = ctx.api
        raw = await api.all_items("ecr", "describe_repositories", "repositories")
        self.details.retain(
            (ctx.target.account_id, ctx.target.region),
            (str(r.get("repositoryArn", "")) for r in raw),
        )
        errors = AspectErrors()
        resp = await errors.fetch(
            m.ASPECT_SCANNING, api.call("ecr", "get_registry_scanning_configuration")
        )
        scanning = registry_scanning(resp) if resp is not None else None
        keys = await kms.cached_keys(
            ctx,
            self.lookups,
            (
                (r.get("encryptionConfiguration") or {}).get("kmsKey") or ""
                for r in raw
                if (r.get("encryptionConfiguration") or {}).get("encryptionType", "AES256")
                != "AES256"
            ),
        )
        shared = _Shared(scanning, errors.errors.get(m.ASPECT_SCANNING), keys, None)
        if ctx.wants(IN_USE_CONTROL) and raw:
            await self._in_use(ctx, shared)
        repositories = await ctx.gather(raw, lambda r: self._repository(ctx, r, shared))
        return m.EcrSnapshot(
            target=ctx.target,
            collected_at=ctx.now,
            repositories=tuple(sorted(repositories, key=lambda r: r.arn)),
            registry_scanning=scanning,
        )

    async def _in_use(self, ctx: CollectContext, shared: _Shared) -> None:
        t = ctx.target
        try:
            definitions = await self.task_definitions.latest(ctx)
        except AwsError as err:
            if err.kind.retryable:
                raise
            shared.in_use_error = err.code
            return
        unreadable = next((td for td in definitions if td.errors), None)
        if unreadable is not None:
            # a family that cannot be read might use any image: "not in use" cannot be claimed
            shared.in_use_error = next(iter(unreadable.errors.values()))
            return
        shared.in_use = images_in_use(definitions, t.account_id, t.region)

    async def _scan(self, ctx: CollectContext, ref: ImageRef, used_by: list[str]) -> m.ImageInUse:
        image_id = {"imageDigest": ref.digest} if ref.digest else {"imageTag": ref.tag}
        base = m.ImageInUse(ref.reference, ref.tag, ref.digest, tuple(sorted(used_by)))
        # One page is enough: findingSeverityCounts covers every finding; the page's findings
        # only name a few of them in the evidence.
        try:
            resp = await ctx.api.call(
                "ecr",
                "describe_image_scan_findings",
                repositoryName=ref.repository,
                imageId=image_id,
            )
        except AwsError as err:
            if err.code == "ImageNotFoundException":
                return replace(base, found=False)
            if err.code == "ScanNotFoundException":
                return base  # never scanned
            raise
        return replace(base, scan=image_scan(resp))

    async def _details(
        self,
        ctx: CollectContext,
        raw: dict[str, Any],
        name: str,
        arn: str,
        errors: AspectErrors,
    ) -> _RepoDetails:
        """The repository's per-repository answers, from the cache when still valid."""
        scope = (ctx.target.account_id, ctx.target.region)
        now = ctx.now.timestamp()
        key = (str(raw.get("createdAt")), str(raw.get("registryId")))  # a re-created repository
        entry = self.details.get(scope, arn, key, now)
        if entry is not None:
            ctx.served(entry.fetched_at)
            return entry.value
        api = ctx.api
        before = set(errors.errors)
        details = _RepoDetails(
            lifecycle=await errors.fetch(
                m.ASPECT_LIFECYCLE, api.call("ecr", "get_lifecycle_policy", repositoryName=name)
            ),
            policy=await errors.fetch(
                m.ASPECT_POLICY, api.call("ecr", "get_repository_policy", repositoryName=name)
            ),
            tags=await errors.fetch(
                m.ASPECT_TAGS, api.call("ecr", "list_tags_for_resource", resourceArn=arn)
            ),
        )
        if set(errors.errors) == before:  # unknown is never cached
            self.details.put(scope, arn, key, details, now)
        else:
            self.details.discard(scope, arn)
        ctx.served(now)
        return details

    async def _repository(
        self, ctx: CollectContext, raw: dict[str, Any], shared: _Shared
    ) -> m.Repository:
        name = str(raw.get("repositoryName", ""))
        arn = str(raw.get("repositoryArn", ""))
        errors = AspectErrors()
        if shared.scanning_error:
            errors.fail(m.ASPECT_SCANNING, shared.scanning_error)

        details = await self._details(ctx, raw, name, arn, errors)
        lifecycle: m.LifecyclePolicy | None = None
        if details.lifecycle is not None:
            try:
                lifecycle = lifecycle_policy(details.lifecycle.get("lifecyclePolicyText") or "")
            except ValueError as exc:
                errors.fail(m.ASPECT_LIFECYCLE, "MalformedPolicy")
                ctx.issue(arn, m.ASPECT_LIFECYCLE, str(exc))

        resp = details.policy
        policy, problem = _parse_policy_text(resp.get("policyText") if resp else None)
        if problem:
            errors.fail(m.ASPECT_POLICY, "MalformedPolicy")
            ctx.issue(arn, m.ASPECT_POLICY, problem)

        resp = details.tags
        tags = {str(t.get("Key")): str(t.get("Value", "")) for t in (resp or {}).get("tags") or []}

        encryption = raw.get("encryptionConfiguration") or {}
        encryption_type = str(encryption.get("encryptionType") or "AES256")
        key_arn = encryption.get("kmsKey") or None
        key = None
        if encryption_type != "AES256" and key_arn:
            found = shared.keys.get(key_arn)
            if isinstance(found, str):
                errors.fail(m.ASPECT_KMS_KEY, found)
            else:
                key = found

        in_use: tuple[m.ImageInUse, ...] | None = None
        if shared.in_use_error:
            errors.fail(m.ASPECT_IMAGES_IN_USE, shared.in_use_error)
        elif shared.in_use is not None:
            refs = shared.in_use.get(name, {})
            try:
                found_images = [
                    await self._scan(ctx, ref, users)
                    for ref, users in sorted(refs.items(), key=lambda kv: kv[0].reference)
                ]
                in_use = tuple(found_images)
            except AwsError as err:
                if err.kind.retryable:
                    raise
                errors.fail(m.ASPECT_IMAGES_IN_USE, err.code)

        mutability = raw.get("imageTagMutabilityExclusionFilters") or []
        return m.Repository(
            arn=arn,
            name=name,
            account_id=ctx.target.account_id,
            region=ctx.target.region,
            uri=str(raw.get("repositoryUri", "")),
            created_at=parse_timestamp(raw.get("createdAt")),
            tag_mutability=str(raw.get("imageTagMutability") or "MUTABLE"),
            tag_mutability_exclusions=tuple(str(f.get("filter", "")) for f in mutability),
            scan_on_push=bool((raw.get("imageScanningConfiguration") or {}).get("scanOnPush")),
            registry_scanning=shared.scanning,
            encryption_type=encryption_type,
            kms_key_arn=key_arn,
            kms_key=key,
            lifecycle=lifecycle,
            policy=policy,
            images_in_use=in_use,
            tags=frozen_tags(tags),
            errors=frozen_errors(errors.errors),
        )
