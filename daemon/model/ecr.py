"""Snapshots of Amazon ECR private repositories and the registry settings that apply to them.

Each repository's data comes from several calls (DescribeRepositories, the registry scanning
configuration, GetLifecyclePolicy, GetRepositoryPolicy, ListTagsForResource, KMS DescribeKey and,
for the opt-in findings control, DescribeImageScanFindings). A call that failed for a reason other
than "not found" leaves its aspect in `errors`, and the controls that need it report `error`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from daemon.model import kms
from daemon.model.core import EMPTY_TAGS, Target
from daemon.model.iampolicy import PolicyDocument
from daemon.model.kms import KmsKey

REPOSITORY = "ecr-repository"

ASPECT_SCANNING = "registry_scanning"  # GetRegistryScanningConfiguration (one per registry)
ASPECT_LIFECYCLE = "lifecycle_policy"  # GetLifecyclePolicy
ASPECT_POLICY = "repository_policy"  # GetRepositoryPolicy
ASPECT_TAGS = "tags"  # ListTagsForResource
ASPECT_IMAGES_IN_USE = "images_in_use"  # ECS task definitions + DescribeImageScanFindings
ASPECT_KMS_KEY = kms.ASPECT_KMS_KEY  # kms:DescribeKey

SCAN_ON_PUSH = "SCAN_ON_PUSH"
CONTINUOUS_SCAN = "CONTINUOUS_SCAN"


@dataclass(frozen=True, slots=True)
class ScanRule:
    """A registry scanning rule: a frequency for the repositories its filters match."""

    frequency: str  # SCAN_ON_PUSH | CONTINUOUS_SCAN | MANUAL
    filters: tuple[str, ...]  # WILDCARD filters on the repository name

    def matches(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, f) for f in self.filters)


@dataclass(frozen=True, slots=True)
class RegistryScanning:
    """GetRegistryScanningConfiguration: BASIC or ENHANCED (Amazon Inspector) scanning."""

    scan_type: str  # BASIC | ENHANCED
    rules: tuple[ScanRule, ...] = ()

    def frequencies_for(self, repository: str) -> frozenset[str]:
        """The scan frequencies of every registry rule that matches the repository."""
        return frozenset(r.frequency for r in self.rules if r.matches(repository))

    def frequency_for(self, repository: str) -> str | None:
        """The most frequent scanning a registry rule gives the repository (None: no rule)."""
        found = self.frequencies_for(repository)
        for frequency in (CONTINUOUS_SCAN, SCAN_ON_PUSH):
            if frequency in found:
                return frequency
        return next(iter(sorted(found)), None)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    rule_count: int
    expires: bool  # at least one rule with action "expire"


@dataclass(frozen=True, slots=True)
class ImageScan:
    """DescribeImageScanFindings for one image, reduced to counts and a few finding names."""

    status: str  # COMPLETE, ACTIVE, FAILED, UNSUPPORTED_IMAGE, PENDING, ...
    severity_counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    top_findings: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # severity -> first few finding names (CVE ids)
    completed_at: datetime | None = None

    @property
    def has_results(self) -> bool:
        return self.status in ("COMPLETE", "ACTIVE")


@dataclass(frozen=True, slots=True)
class ImageInUse:
    """An image of the repository that the latest active ECS task definitions reference."""

    reference: str  # as the task definitions name it: "repo:tag" or "repo@sha256:..."
    tag: str | None
    digest: str | None
    used_by: tuple[str, ...]  # task definition ARNs
    found: bool = True  # False: the repository has no such image
    scan: ImageScan | None = None  # None: the image was never scanned (ScanNotFoundException)


@dataclass(frozen=True, slots=True)
class Repository:
    arn: str
    name: str
    account_id: str
    region: str
    uri: str
    created_at: datetime | None
    tag_mutability: str  # MUTABLE | IMMUTABLE | IMMUTABLE_WITH_EXCLUSION | MUTABLE_WITH_EXCLUSION
    tag_mutability_exclusions: tuple[str, ...] = ()
    scan_on_push: bool = False  # the repository-level (basic scanning) setting
    registry_scanning: RegistryScanning | None = None
    encryption_type: str = "AES256"  # AES256 | KMS | KMS_DSSE
    kms_key_arn: str | None = None
    kms_key: KmsKey | None = None  # from KMS DescribeKey
    lifecycle: LifecyclePolicy | None = None  # None: no lifecycle policy
    policy: PolicyDocument | None = None  # None: no repository policy
    images_in_use: tuple[ImageInUse, ...] | None = None  # None: not collected (control off)
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    errors: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    resource_type: str = REPOSITORY


@dataclass(frozen=True, slots=True)
class EcrSnapshot:
    target: Target
    collected_at: datetime
    repositories: tuple[Repository, ...]
    registry_scanning: RegistryScanning | None = None

    def resources(self, resource_type: str) -> Sequence[Repository]:
        if resource_type == REPOSITORY:
            return self.repositories
        return ()

    def resource_counts(self) -> Mapping[str, int]:
        return MappingProxyType({REPOSITORY: len(self.repositories)})
