"""Amazon ECR controls: pure functions of an EcrSnapshot's repositories and the parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from daemon.controls.common import RESTRICTING_KEYS, foreign_accounts, glob_any, short
from daemon.controls.registry import (
    EvalContext,
    NoParams,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.model import Severity
from daemon.model import ecr as m

SERVICE = "ecr"


class ScanningParams(Params):
    require_enhanced: bool = Field(
        default=False,
        description="Require enhanced scanning (Amazon Inspector) rather than basic scan on push.",
    )


@control(
    id="ecr-image-scanning",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="Images are scanned for vulnerabilities on push",
    severity=Severity.HIGH,
    rationale="""An image that is never scanned can ship known-vulnerable packages to production
    unnoticed. Scan on push (basic scanning) or enhanced scanning with Amazon Inspector reports
    CVEs as soon as an image lands in the registry.""",
    remediation="""Turn on scan on push for the repository, or add a registry scanning rule whose
    filter matches it (PutRegistryScanningConfiguration). With enhanced scanning on, only the
    registry rules count: add a SCAN_ON_PUSH or CONTINUOUS_SCAN rule matching the repository.""",
    params=ScanningParams,
    requires=(m.ASPECT_SCANNING,),
    security_hub="ECR.1",
    aws_config_rule="ecr-private-image-scanning-enabled",
)
def image_scanning(repo: m.Repository, p: ScanningParams, ctx: EvalContext) -> Outcome | None:
    registry = repo.registry_scanning or m.RegistryScanning("BASIC")
    frequency = registry.frequency_for(repo.name)
    if registry.scan_type == "ENHANCED":
        if frequency in (m.SCAN_ON_PUSH, m.CONTINUOUS_SCAN):
            return passed(f"enhanced scanning ({frequency})")
        return failed(
            "enhanced scanning is on but no registry rule scans this repository"
            + (" (its own scan-on-push setting is ignored)" if repo.scan_on_push else "")
        )
    if p.require_enhanced:
        return failed("basic scanning only; enhanced scanning is required")
    if repo.scan_on_push:
        return passed("scan on push")
    if m.SCAN_ON_PUSH in registry.frequencies_for(repo.name):
        return passed("scan on push by a registry rule")
    return failed("images are not scanned on push")


class ImmutabilityParams(Params):
    allow_exclusions: bool = Field(
        default=True,
        description="Accept IMMUTABLE_WITH_EXCLUSION (a few tag filters, e.g. 'latest', stay "
        "mutable).",
    )


@control(
    id="ecr-tag-immutability",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="Image tags are immutable",
    severity=Severity.MEDIUM,
    rationale="""With mutable tags, anyone who can push can silently replace what a tag such as
    v1.4.2 points to, so a deployment that pins a tag can run code nobody reviewed.""",
    remediation="""Set imageTagMutability to IMMUTABLE (PutImageTagMutability) and deploy by
    unique tags or digests.""",
    params=ImmutabilityParams,
    security_hub="ECR.2",
    aws_config_rule="ecr-private-tag-immutability-enabled",
)
def tag_immutability(repo: m.Repository, p: ImmutabilityParams, ctx: EvalContext) -> Outcome | None:
    if repo.tag_mutability == "IMMUTABLE":
        return passed("tags are immutable")
    if repo.tag_mutability == "IMMUTABLE_WITH_EXCLUSION":
        excluded = short(list(repo.tag_mutability_exclusions)) or "none listed"
        if p.allow_exclusions:
            return passed(f"tags are immutable except {excluded}")
        return failed(f"tags matching {excluded} stay mutable")
    return failed(f"tags are mutable ({repo.tag_mutability})")


@control(
    id="ecr-lifecycle-policy",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="A lifecycle policy expires old images",
    severity=Severity.MEDIUM,
    rationale="""Without a lifecycle policy, old and untagged images pile up: they cost storage
    and keep vulnerable software available to be pulled and run.""",
    remediation="""Add a lifecycle policy (PutLifecyclePolicy) that expires untagged images after a
    few days and keeps only the most recent tagged images.""",
    params=NoParams,
    requires=(m.ASPECT_LIFECYCLE,),
    security_hub="ECR.3",
    aws_config_rule="ecr-private-lifecycle-policy-configured",
)
def lifecycle(repo: m.Repository, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if repo.lifecycle is None:
        return failed("no lifecycle policy")
    if not repo.lifecycle.expires:
        return failed(f"lifecycle policy with {repo.lifecycle.rule_count} rule(s), none expires")
    return passed(f"lifecycle policy with {repo.lifecycle.rule_count} rule(s)")


class RepositoryPolicyParams(Params):
    allowed_accounts: list[str] = Field(
        default=[],
        description="Accounts besides the repository's own that a repository policy may grant "
        "access to (e.g. the accounts that deploy these images).",
    )


@control(
    id="ecr-repository-policy-restricted",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="Repository policy grants no public or unlisted cross-account access",
    severity=Severity.CRITICAL,
    rationale="""A statement with a public principal and no narrowing condition lets every AWS
    account pull (or push) the repository's images, exposing code and any secrets baked into
    them. Access for other accounts should be a deliberate, listed decision.""",
    remediation="""Remove public statements (SetRepositoryPolicy) or narrow them with
    aws:PrincipalOrgID; grant named accounts only, and list them in allowed_accounts.""",
    params=RepositoryPolicyParams,
    requires=(m.ASPECT_POLICY,),
    references=("prowler:ecr_repositories_not_publicly_accessible",),
)
def repository_policy(
    repo: m.Repository, p: RepositoryPolicyParams, ctx: EvalContext
) -> Outcome | None:
    if repo.policy is None:
        return passed("no repository policy")
    problems: list[str] = []
    for st in repo.policy.statements:
        if not st.allow:
            continue
        sid = st.sid or "(no sid)"
        if st.is_public and not st.has_restricting_condition(RESTRICTING_KEYS):
            problems.append(f"{sid}: public principal without a restricting condition")
            continue
        foreign = foreign_accounts(st, repo.account_id, p.allowed_accounts)
        if foreign:
            problems.append(f"{sid}: account(s) {short(foreign)} not in allowed_accounts")
    if problems:
        return failed(short(problems))
    return passed(f"{len(repo.policy.statements)} statement(s), none public or unlisted")


class CmkParams(Params):
    allowed_key_arns: list[str] = Field(
        default=[], description="If set, the customer-managed key must be one of these (globs)."
    )


@control(
    id="ecr-cmk-encryption",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="Images are encrypted with a customer-managed KMS key",
    severity=Severity.MEDIUM,
    rationale="""With AES256 or the AWS-managed aws/ecr key, access to the images is governed by
    ECR permissions alone. A customer-managed key adds a key policy you control, the ability to
    revoke access by disabling the key, and an audit trail of every use.""",
    remediation="""Encryption is fixed when a repository is created: create a new repository with
    encryptionType KMS and your key, push the images there and delete the old repository.
    Re-enable a disabled key, or cancel its deletion, before images become unreadable.""",
    params=CmkParams,
    requires=(m.ASPECT_KMS_KEY,),
    security_hub="ECR.5",
    aws_config_rule="ecr-repository-cmk-encryption-enabled",
)
def cmk_encryption(repo: m.Repository, p: CmkParams, ctx: EvalContext) -> Outcome | None:
    if repo.encryption_type == "AES256":
        return failed("encrypted with AES256 (Amazon S3-managed keys)")
    key = repo.kms_key
    if repo.kms_key_arn is None or key is None:
        return failed(f"{repo.encryption_type} with the AWS-managed key aws/ecr")
    if not key.found:
        return failed(f"KMS key {repo.kms_key_arn} does not exist")
    if key.unusable:
        return failed(f"KMS key {key.key_arn or key.arn} is {key.key_state}: images cannot be read")
    if key.key_manager != "CUSTOMER":
        return failed(f"KMS key {repo.kms_key_arn} is AWS-managed")
    if p.allowed_key_arns and not glob_any(key.key_arn or key.arn, p.allowed_key_arns):
        return failed(f"KMS key {key.key_arn or key.arn} is not an allowed key")
    return passed(f"{repo.encryption_type} with customer-managed key {key.key_arn or key.arn}")


Severities = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED"]


class InUseFindingsParams(Params):
    severities: list[Severities] = Field(
        default=["CRITICAL"],
        description="Finding severities that make an image in use a violation.",
    )
    fail_when_not_scanned: bool = Field(
        default=True,
        description="An image in use without scan results (never scanned, scan failed or "
        "unsupported) is a violation: its findings are unknown.",
    )


@control(
    id="ecr-in-use-images-no-critical-findings",
    service=SERVICE,
    resource_type=m.REPOSITORY,
    title="Images in use have no critical vulnerability findings",
    severity=Severity.HIGH,
    rationale="""A scan only helps if its results are acted on. An image with critical findings
    that the latest active ECS task definitions still reference is what production runs on the
    next deployment or task restart. "In use" means referenced by tag or digest by the latest
    ACTIVE revision of an ECS task-definition family in the same account and region; images
    used elsewhere (other accounts, EKS, Lambda) are not seen.""",
    remediation="""Rebuild the image on patched base images and packages, push it, and point the
    task definitions at the new tag or digest; exempt a finding deliberately accepted with a
    reason and an expiry.""",
    params=InUseFindingsParams,
    requires=(m.ASPECT_IMAGES_IN_USE,),
    references=("prowler:ecr_repositories_scan_vulnerabilities_in_latest_image",),
    default_enabled=False,
)
def in_use_findings(repo: m.Repository, p: InUseFindingsParams, ctx: EvalContext) -> Outcome | None:
    if repo.images_in_use is None:
        return errored("images in use were not collected")
    images = [i for i in repo.images_in_use if i.found]
    if not images:
        return passed("no image of this repository is used by an active task definition")
    wanted = list(dict.fromkeys(p.severities))
    problems: list[str] = []
    for image in images:
        scan = image.scan
        if scan is None or not scan.has_results:
            if p.fail_when_not_scanned:
                state = "never scanned" if scan is None else f"scan {scan.status}"
                problems.append(f"{image.reference} ({state})")
            continue
        counts = [f"{scan.severity_counts[s]} {s}" for s in wanted if scan.severity_counts.get(s)]
        if counts:
            names = [n for s in wanted for n in scan.top_findings.get(s, ())]
            detail = f": {short(names)}" if names else ""
            problems.append(f"{image.reference} ({', '.join(counts)}{detail})")
    if problems:
        return failed(f"images in use: {short(problems, 2)}")
    return passed(f"{len(images)} image(s) in use, none with {'/'.join(wanted)} findings")
