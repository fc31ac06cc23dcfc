"""The ECR collector on recorded answers (botocore-checked).

Covers what moto cannot produce: enhanced (Amazon Inspector) scan findings, scan statuses other
than COMPLETE, the AWS-managed aws/ecr key, repositories with tag-mutability exclusions, malformed
policies, and denied reads; and shows that the opt-in findings control costs no API calls while
it is disabled.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from daemon.collectors.ecr import IN_USE_CONTROL, EcrCollector, image_scan, parse_image
from daemon.collectors.ecs import TaskDefinitionReader
from daemon.controls.registry import EvalContext, get_control
from daemon.model import Status
from daemon.model import ecr as m

from .recorded import FakeApi, checked, context, error

ACCOUNT, REGION = "111122223333", "eu-central-1"
CMK = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
AWS_ECR_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32


def repository(name: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "repositoryArn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}",
        "registryId": ACCOUNT,
        "repositoryName": name,
        "repositoryUri": f"{REGISTRY}/{name}",
        "createdAt": dt.datetime(2025, 5, 1, tzinfo=dt.UTC),
        "imageTagMutability": "IMMUTABLE",
        "imageScanningConfiguration": {"scanOnPush": False},
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": CMK},
    }
    raw.update(overrides)
    return raw


ENHANCED_FINDINGS = {
    "registryId": ACCOUNT,
    "repositoryName": "api",
    "imageId": {"imageDigest": DIGEST},
    "imageScanStatus": {"status": "ACTIVE", "description": "Continuous scan is selected."},
    "imageScanFindings": {
        "imageScanCompletedAt": dt.datetime(2026, 2, 27, tzinfo=dt.UTC),
        "vulnerabilitySourceUpdatedAt": dt.datetime(2026, 2, 28, tzinfo=dt.UTC),
        "findingSeverityCounts": {"CRITICAL": 2, "HIGH": 5, "INFORMATIONAL": 1},
        "enhancedFindings": [
            {
                "awsAccountId": ACCOUNT,
                "description": "A heap overflow in libexpat.",
                "findingArn": f"arn:aws:inspector2:{REGION}:{ACCOUNT}:finding/abc",
                "severity": "CRITICAL",
                "status": "ACTIVE",
                "title": "CVE-2024-45492 - libexpat",
                "type": "PACKAGE_VULNERABILITY",
                "packageVulnerabilityDetails": {
                    "vulnerabilityId": "CVE-2024-45492",
                    "source": "NVD",
                    "vulnerablePackages": [{"name": "libexpat", "version": "2.5.0"}],
                },
            },
            {
                "awsAccountId": ACCOUNT,
                "severity": "HIGH",
                "title": "GHSA-xxxx - urllib3",
                "type": "PACKAGE_VULNERABILITY",
            },
        ],
    },
}


def task_definitions(*images: str) -> dict[tuple[str, str], Any]:
    return {
        ("ecs", "list_task_definition_families"): {"families": ["api"]},
        ("ecs", "describe_task_definition"): {
            "taskDefinition": {
                "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/api:7",
                "family": "api",
                "revision": 7,
                "status": "ACTIVE",
                "containerDefinitions": [
                    {"name": f"c{i}", "image": image} for i, image in enumerate(images)
                ],
            }
        },
    }


def answers(**overrides: Any) -> dict[tuple[str, str], Any]:
    base: dict[tuple[str, str], Any] = {
        ("ecr", "describe_repositories"): {
            "repositories": [
                repository("api"),
                repository(
                    "web",
                    imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                    imageTagMutabilityExclusionFilters=[
                        {"filterType": "WILDCARD", "filter": "latest"}
                    ],
                    encryptionConfiguration={"encryptionType": "KMS", "kmsKey": AWS_ECR_KEY},
                ),
                repository("legacy", encryptionConfiguration={"encryptionType": "AES256"}),
            ]
        },
        ("ecr", "get_registry_scanning_configuration"): {
            "registryId": ACCOUNT,
            "scanningConfiguration": {
                "scanType": "ENHANCED",
                "rules": [
                    {
                        "scanFrequency": "CONTINUOUS_SCAN",
                        "repositoryFilters": [{"filter": "api*", "filterType": "WILDCARD"}],
                    },
                    {
                        "scanFrequency": "SCAN_ON_PUSH",
                        "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}],
                    },
                ],
            },
        },
        ("ecr", "get_lifecycle_policy"): lambda p: (
            error("LifecyclePolicyNotFoundException")
            if p["repositoryName"] == "legacy"
            else {
                "registryId": ACCOUNT,
                "repositoryName": p["repositoryName"],
                "lifecyclePolicyText": '{"rules":[{"rulePriority":1,"selection":{"tagStatus":'
                '"any","countType":"imageCountMoreThan","countNumber":30},"action":{"type":'
                '"expire"}}]}',
            }
        ),
        ("ecr", "get_repository_policy"): error("RepositoryPolicyNotFoundException"),
        ("ecr", "list_tags_for_resource"): {"tags": [{"Key": "team", "Value": "platform"}]},
        ("kms", "describe_key"): lambda p: {
            "KeyMetadata": {
                "KeyId": p["KeyId"].rsplit("/", 1)[-1],
                "Arn": p["KeyId"],
                "KeyState": "Enabled",
                "KeyManager": "CUSTOMER" if p["KeyId"] == CMK else "AWS",
            }
        },
        ("ecr", "describe_image_scan_findings"): ENHANCED_FINDINGS,
        **task_definitions(f"{REGISTRY}/api@{DIGEST}", "public.ecr.aws/nginx/nginx:1.27"),
    }
    base.update({tuple(k.split(".", 1)): v for k, v in overrides.items()})  # type: ignore[misc]
    return base


async def collect(api: FakeApi, enabled: frozenset[str] | None = None) -> tuple[Any, Any]:
    ctx = context(api, "ecr", enabled)
    snapshot = await EcrCollector(TaskDefinitionReader(0)).collect(ctx)
    return snapshot, ctx


def evaluate(control_id: str, resource: Any, snapshot: Any, **params: Any) -> Any:
    ctrl = get_control(control_id)
    ctx = EvalContext(
        now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), target=snapshot.target, snapshot=snapshot
    )
    return ctrl.evaluate(resource, ctrl.params_model.model_validate(params), ctx)


def repo(snapshot: Any, name: str) -> m.Repository:
    return next(r for r in snapshot.repositories if r.name == name)


async def test_repositories_with_registry_scanning_keys_and_lifecycle() -> None:
    snapshot, ctx = await collect(FakeApi(answers(), ACCOUNT, REGION))
    api, web, legacy = (repo(snapshot, n) for n in ("api", "web", "legacy"))
    assert web.tag_mutability_exclusions == ("latest",)
    assert evaluate("ecr-tag-immutability", web, snapshot).status is Status.PASS
    outcome = evaluate("ecr-tag-immutability", web, snapshot, allow_exclusions=False)
    assert outcome.status is Status.FAIL and "latest" in outcome.evidence
    # enhanced scanning: the most frequent matching rule wins
    assert snapshot.registry_scanning.frequency_for("api") == "CONTINUOUS_SCAN"
    outcome = evaluate("ecr-image-scanning", legacy, snapshot)
    assert outcome.status is Status.PASS and "SCAN_ON_PUSH" in outcome.evidence
    # the AWS-managed aws/ecr key is not a customer-managed key
    outcome = evaluate("ecr-cmk-encryption", web, snapshot)
    assert outcome.status is Status.FAIL and "AWS-managed" in outcome.evidence
    assert evaluate("ecr-cmk-encryption", api, snapshot).status is Status.PASS
    assert evaluate("ecr-cmk-encryption", legacy, snapshot).status is Status.FAIL
    assert legacy.lifecycle is None and api.lifecycle == m.LifecyclePolicy(1, expires=True)
    assert dict(api.tags) == {"team": "platform"} and not api.errors and not ctx.issues


async def test_findings_are_read_only_while_the_control_is_enabled() -> None:
    off = FakeApi(answers(), ACCOUNT, REGION)
    snapshot, _ = await collect(off, enabled=frozenset({"ecr-image-scanning"}))
    assert all(r.images_in_use is None for r in snapshot.repositories)
    assert off.count("ecr", "describe_image_scan_findings") == 0
    assert not [c for c in off.calls if c[0] == "ecs"]

    on = FakeApi(answers(), ACCOUNT, REGION)
    snapshot, _ = await collect(on, enabled=frozenset({IN_USE_CONTROL}))
    # one image in use (by digest); the public image and the other repositories cost nothing
    assert on.count("ecr", "describe_image_scan_findings") == 1
    image = repo(snapshot, "api").images_in_use[0]  # type: ignore[index]
    assert image.digest == DIGEST and image.tag is None
    assert image.used_by == (f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/api:7",)
    assert image.scan is not None and image.scan.status == "ACTIVE"
    assert repo(snapshot, "web").images_in_use == ()


async def test_enhanced_findings_fail_the_in_use_control() -> None:
    snapshot, _ = await collect(FakeApi(answers(), ACCOUNT, REGION))
    api = repo(snapshot, "api")
    outcome = evaluate(IN_USE_CONTROL, api, snapshot)
    assert outcome.status is Status.FAIL
    assert "2 CRITICAL" in outcome.evidence and "CVE-2024-45492" in outcome.evidence
    outcome = evaluate(IN_USE_CONTROL, api, snapshot, severities=["CRITICAL", "HIGH"])
    assert "5 HIGH" in outcome.evidence and "GHSA-xxxx - urllib3" in outcome.evidence


@pytest.mark.parametrize(
    ("answer", "fragment", "status"),
    [
        (error("ScanNotFoundException"), "never scanned", Status.FAIL),
        (
            {**ENHANCED_FINDINGS, "imageScanStatus": {"status": "UNSUPPORTED_IMAGE"}},
            "scan UNSUPPORTED_IMAGE",
            Status.FAIL,
        ),
        (error("ImageNotFoundException"), "no image of this repository is used", Status.PASS),
    ],
)
async def test_unscanned_and_missing_images(answer: Any, fragment: str, status: Status) -> None:
    api = FakeApi(answers(**{"ecr.describe_image_scan_findings": answer}), ACCOUNT, REGION)
    snapshot, _ = await collect(api)
    outcome = evaluate(IN_USE_CONTROL, repo(snapshot, "api"), snapshot)
    assert outcome.status is status and fragment in outcome.evidence


async def test_unknown_usage_is_an_error_never_a_pass() -> None:
    # ECS denies DescribeTaskDefinition: a family that cannot be read may use any image
    api = FakeApi(
        answers(**{"ecs.describe_task_definition": error("AccessDeniedException")}),
        ACCOUNT,
        REGION,
    )
    snapshot, _ = await collect(api)
    for r in snapshot.repositories:
        assert r.errors[m.ASPECT_IMAGES_IN_USE] == "AccessDeniedException"
    assert get_control(IN_USE_CONTROL).requires == (m.ASPECT_IMAGES_IN_USE,)
    # findings themselves denied: that repository's usage is unknown
    api = FakeApi(
        answers(**{"ecr.describe_image_scan_findings": error("AccessDeniedException")}),
        ACCOUNT,
        REGION,
    )
    snapshot, _ = await collect(api)
    assert repo(snapshot, "api").errors == {m.ASPECT_IMAGES_IN_USE: "AccessDeniedException"}
    assert not repo(snapshot, "web").errors


async def test_odd_policies_and_denied_reads() -> None:
    api = FakeApi(
        answers(
            **{
                "ecr.get_lifecycle_policy": {"lifecyclePolicyText": "{not json"},
                "ecr.get_repository_policy": {"policyText": '{"Statement": "nope"}'},
                "ecr.get_registry_scanning_configuration": error("AccessDeniedException"),
                "ecr.list_tags_for_resource": error("AccessDeniedException"),
            }
        ),
        ACCOUNT,
        REGION,
    )
    snapshot, ctx = await collect(api)
    api_repo = repo(snapshot, "api")
    assert dict(api_repo.errors) == {
        m.ASPECT_SCANNING: "AccessDeniedException",
        m.ASPECT_LIFECYCLE: "MalformedPolicy",
        m.ASPECT_POLICY: "MalformedPolicy",
        m.ASPECT_TAGS: "AccessDeniedException",
    }
    assert {i.aspect for i in ctx.issues} == {m.ASPECT_LIFECYCLE, m.ASPECT_POLICY}
    for control in (
        "ecr-image-scanning",
        "ecr-lifecycle-policy",
        "ecr-repository-policy-restricted",
    ):
        assert set(get_control(control).requires) & set(api_repo.errors)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"{REGISTRY}/api:1.2", ("api", "1.2", None)),
        (f"{REGISTRY}/team/api", ("team/api", "latest", None)),
        (f"{REGISTRY}/api:1.2@{DIGEST}", ("api", None, DIGEST)),
        (f"{ACCOUNT}.dkr.ecr-fips.{REGION}.amazonaws.com/api:v1", ("api", "v1", None)),
        (f"222233334444.dkr.ecr.{REGION}.amazonaws.com/api:1", None),  # another account
        (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/api:1", None),  # another region
        ("public.ecr.aws/nginx/nginx:1.27", None),
        ("nginx", None),
    ],
)
def test_image_references(image: str, expected: tuple[str, str | None, str | None] | None) -> None:
    ref = parse_image(image, ACCOUNT, REGION)
    assert (None if ref is None else (ref.repository, ref.tag, ref.digest)) == expected


def test_basic_scan_findings_shape() -> None:
    scan = image_scan(
        checked(
            "ecr",
            "DescribeImageScanFindings",
            {
                "imageScanStatus": {"status": "COMPLETE"},
                "imageScanFindings": {
                    "findingSeverityCounts": {"MEDIUM": 3, "CRITICAL": 1},
                    "findings": [
                        {"name": "CVE-2023-4911", "severity": "CRITICAL"},
                        {"name": "CVE-2023-1", "severity": "MEDIUM"},
                    ],
                },
            },
        )
    )
    assert scan.has_results and dict(scan.severity_counts) == {"MEDIUM": 3, "CRITICAL": 1}
    assert scan.top_findings["CRITICAL"] == ("CVE-2023-4911",)
