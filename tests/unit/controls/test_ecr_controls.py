"""Every ECR control through the registry, on the frozen repositories the collector builds."""

from __future__ import annotations

import datetime as dt
import json
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.controls.registry import EvalContext, Outcome, get_control
from daemon.model import Status, Target
from daemon.model import ecr as m
from daemon.model.iampolicy import parse_policy
from daemon.model.kms import KmsKey

ACCOUNT, OTHER, REGION = "111111111111", "222222222222", "us-east-1"
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TARGET = Target(ACCOUNT, REGION, "ecr")
CMK = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1111-2222"
TD = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/api:3"


def make_repo(name: str = "api", **overrides: Any) -> m.Repository:
    fields: dict[str, Any] = {
        "arn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}",
        "name": name,
        "account_id": ACCOUNT,
        "region": REGION,
        "uri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}",
        "created_at": NOW,
        "tag_mutability": "IMMUTABLE",
        "scan_on_push": True,
        "registry_scanning": m.RegistryScanning("BASIC"),
        "encryption_type": "KMS",
        "kms_key_arn": CMK,
        "kms_key": KmsKey(CMK, key_manager="CUSTOMER", key_state="Enabled", key_arn=CMK),
        "lifecycle": m.LifecyclePolicy(2, expires=True),
    }
    fields.update(overrides)
    return m.Repository(**fields)


def run(control_id: str, repo: m.Repository, params: dict[str, Any] | None = None) -> Outcome:
    ctrl = get_control(control_id)
    snapshot = m.EcrSnapshot(TARGET, NOW, (repo,))
    ctx = EvalContext(now=NOW, target=TARGET, snapshot=snapshot)
    outcome = ctrl.evaluate(repo, ctrl.params_model.model_validate(params or {}), ctx)
    assert outcome is not None
    return outcome


def expect(outcome: Outcome, status: Status, *fragments: str) -> None:
    assert outcome.status is status, outcome.evidence
    for fragment in fragments:
        assert fragment in outcome.evidence, outcome.evidence


def policy(*statements: dict[str, Any]) -> Any:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def allow(
    principal: Any, condition: dict[str, Any] | None = None, sid: str = "S"
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
    }
    if condition:
        st["Condition"] = condition
    return st


class TestImageScanning:
    CID = "ecr-image-scanning"

    def test_basic_scan_on_push(self) -> None:
        expect(run(self.CID, make_repo()), Status.PASS, "scan on push")
        expect(run(self.CID, make_repo(scan_on_push=False)), Status.FAIL, "not scanned")

    def test_registry_rule_gives_scan_on_push(self) -> None:
        scanning = m.RegistryScanning("BASIC", (m.ScanRule("SCAN_ON_PUSH", ("ap*",)),))
        repo = make_repo(scan_on_push=False, registry_scanning=scanning)
        expect(run(self.CID, repo), Status.PASS, "registry rule")
        other = make_repo("web", scan_on_push=False, registry_scanning=scanning)
        expect(run(self.CID, other), Status.FAIL)
        # any matching rule counts, whatever other rules say
        both = m.RegistryScanning(
            "BASIC", (m.ScanRule("MANUAL", ("*",)), m.ScanRule("SCAN_ON_PUSH", ("api",)))
        )
        expect(run(self.CID, make_repo(scan_on_push=False, registry_scanning=both)), Status.PASS)

    def test_enhanced_scanning_uses_registry_rules_only(self) -> None:
        scanning = m.RegistryScanning("ENHANCED", (m.ScanRule("CONTINUOUS_SCAN", ("api",)),))
        expect(run(self.CID, make_repo(registry_scanning=scanning)), Status.PASS, "CONTINUOUS")
        unmatched = make_repo("web", scan_on_push=True, registry_scanning=scanning)
        expect(run(self.CID, unmatched), Status.FAIL, "no registry rule", "ignored")
        manual = m.RegistryScanning("ENHANCED", (m.ScanRule("MANUAL", ("*",)),))
        expect(run(self.CID, make_repo(registry_scanning=manual)), Status.FAIL)

    def test_require_enhanced(self) -> None:
        expect(run(self.CID, make_repo(), {"require_enhanced": True}), Status.FAIL, "basic")


class TestTagImmutability:
    CID = "ecr-tag-immutability"

    @pytest.mark.parametrize(
        ("mutability", "status"),
        [
            ("IMMUTABLE", Status.PASS),
            ("MUTABLE", Status.FAIL),
            ("MUTABLE_WITH_EXCLUSION", Status.FAIL),
            ("IMMUTABLE_WITH_EXCLUSION", Status.PASS),
        ],
    )
    def test_modes(self, mutability: str, status: Status) -> None:
        repo = make_repo(tag_mutability=mutability, tag_mutability_exclusions=("dev-*",))
        expect(run(self.CID, repo), status)

    def test_exclusions_can_be_refused(self) -> None:
        repo = make_repo(
            tag_mutability="IMMUTABLE_WITH_EXCLUSION", tag_mutability_exclusions=("latest",)
        )
        expect(run(self.CID, repo, {"allow_exclusions": False}), Status.FAIL, "latest")


class TestLifecycle:
    CID = "ecr-lifecycle-policy"

    def test_cases(self) -> None:
        expect(run(self.CID, make_repo()), Status.PASS, "2 rule(s)")
        expect(run(self.CID, make_repo(lifecycle=None)), Status.FAIL, "no lifecycle")
        no_expiry = make_repo(lifecycle=m.LifecyclePolicy(1, expires=False))
        expect(run(self.CID, no_expiry), Status.FAIL, "none expires")


class TestRepositoryPolicy:
    CID = "ecr-repository-policy-restricted"

    def test_no_policy_and_own_account(self) -> None:
        expect(run(self.CID, make_repo()), Status.PASS, "no repository policy")
        own = make_repo(policy=policy(allow({"AWS": f"arn:aws:iam::{ACCOUNT}:root"})))
        expect(run(self.CID, own), Status.PASS)

    def test_public_principal(self) -> None:
        repo = make_repo(policy=policy(allow("*", sid="Anyone")))
        expect(run(self.CID, repo), Status.FAIL, "Anyone: public principal")
        repo = make_repo(policy=policy(allow({"AWS": "*"})))
        expect(run(self.CID, repo), Status.FAIL, "public principal")

    def test_public_principal_narrowed_to_the_organization(self) -> None:
        org = {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
        expect(run(self.CID, make_repo(policy=policy(allow("*", org)))), Status.PASS)
        # a negated or IfExists condition does not narrow anything
        loose = {"StringNotEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
        expect(run(self.CID, make_repo(policy=policy(allow("*", loose)))), Status.FAIL)
        if_exists = {"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
        expect(run(self.CID, make_repo(policy=policy(allow("*", if_exists)))), Status.FAIL)

    def test_cross_account_needs_the_allowlist(self) -> None:
        repo = make_repo(policy=policy(allow({"AWS": [f"arn:aws:iam::{OTHER}:root", ACCOUNT]})))
        expect(run(self.CID, repo), Status.FAIL, OTHER)
        expect(run(self.CID, repo, {"allowed_accounts": [OTHER]}), Status.PASS)

    def test_public_principal_limited_to_a_foreign_account(self) -> None:
        repo = make_repo(
            policy=policy(allow("*", {"StringEquals": {"aws:PrincipalAccount": OTHER}}))
        )
        expect(run(self.CID, repo), Status.FAIL, OTHER)
        expect(run(self.CID, repo, {"allowed_accounts": [OTHER]}), Status.PASS)

    def test_deny_statements_and_service_principals_are_fine(self) -> None:
        deny = {"Effect": "Deny", "Principal": "*", "Action": "ecr:*"}
        lam = allow({"Service": "lambda.amazonaws.com"})
        expect(run(self.CID, make_repo(policy=policy(deny, lam))), Status.PASS)


class TestCmkEncryption:
    CID = "ecr-cmk-encryption"

    def test_cases(self) -> None:
        expect(run(self.CID, make_repo()), Status.PASS, "customer-managed")
        aes = make_repo(encryption_type="AES256", kms_key_arn=None, kms_key=None)
        expect(run(self.CID, aes), Status.FAIL, "AES256")
        aws_key = make_repo(kms_key=KmsKey(CMK, key_manager="AWS"))
        expect(run(self.CID, aws_key), Status.FAIL, "AWS-managed")
        gone = make_repo(kms_key=KmsKey(CMK, found=False))
        expect(run(self.CID, gone), Status.FAIL, "does not exist")
        pending = make_repo(
            kms_key=KmsKey(CMK, key_manager="CUSTOMER", key_state="PendingDeletion")
        )
        expect(run(self.CID, pending), Status.FAIL, "PendingDeletion")
        dsse = make_repo(encryption_type="KMS_DSSE")
        expect(run(self.CID, dsse), Status.PASS, "KMS_DSSE")

    def test_allowed_keys(self) -> None:
        expect(run(self.CID, make_repo(), {"allowed_key_arns": ["*:key/9999-*"]}), Status.FAIL)
        expect(run(self.CID, make_repo(), {"allowed_key_arns": ["*:key/1111-*"]}), Status.PASS)


def image(
    reference: str = "api:v1",
    counts: dict[str, int] | None = None,
    status: str | None = "COMPLETE",
    found: bool = True,
) -> m.ImageInUse:
    scan = None
    if status is not None:
        top = {"CRITICAL": ("CVE-2024-0001", "CVE-2024-0002")} if counts else {}
        scan = m.ImageScan(
            status, MappingProxyType(counts or {}), MappingProxyType(top), completed_at=NOW
        )
    return m.ImageInUse(reference, "v1", None, (TD,), found=found, scan=scan)


class TestInUseFindings:
    CID = "ecr-in-use-images-no-critical-findings"

    def test_off_by_default(self) -> None:
        assert get_control(self.CID).default_enabled is False

    def test_no_image_in_use(self) -> None:
        expect(run(self.CID, make_repo(images_in_use=())), Status.PASS, "no image")
        missing = make_repo(images_in_use=(image(found=False),))
        expect(run(self.CID, missing), Status.PASS, "no image")

    def test_clean_and_critical(self) -> None:
        clean = make_repo(images_in_use=(image(counts={"HIGH": 3, "LOW": 9}),))
        expect(run(self.CID, clean), Status.PASS, "none with CRITICAL")
        expect(run(self.CID, clean, {"severities": ["HIGH"]}), Status.FAIL, "3 HIGH")
        bad = make_repo(images_in_use=(image(counts={"CRITICAL": 2}), image("api:v2")))
        expect(run(self.CID, bad), Status.FAIL, "api:v1 (2 CRITICAL: CVE-2024-0001")

    def test_unscanned_images(self) -> None:
        never = make_repo(images_in_use=(image(status=None),))
        expect(run(self.CID, never), Status.FAIL, "never scanned")
        expect(run(self.CID, never, {"fail_when_not_scanned": False}), Status.PASS)
        failed_scan = make_repo(images_in_use=(image(status="FAILED"),))
        expect(run(self.CID, failed_scan), Status.FAIL, "scan FAILED")

    def test_not_collected_is_an_error(self) -> None:
        expect(run(self.CID, make_repo(images_in_use=None)), Status.ERROR)

    def test_unknown_severity_is_rejected(self) -> None:
        with pytest.raises(ValidationError):
            get_control(self.CID).params_model.model_validate({"severities": ["SEVERE"]})
