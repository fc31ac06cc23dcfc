"""The seeded estate (3 accounts reached by AssumeRole x 2 regions x 4 services) through the real
daemon.

One module fixture runs the daemon once (HTTP server, reconciler, moto over HTTP) and the `check`
command once, and keeps everything they produced; the tests below assert on it.

What moto 5.2 cannot represent, and where it is proven instead:
- ECS services with a capacity provider strategy come back as launchType EC2, and enhanced (Amazon
  Inspector) scan findings and AWS-managed KMS keys (KeyManager AWS) do not exist in moto
  (tests/unit/collectors/ on recorded API responses, tests/unit/controls/).
Filled by the shim or moto's own API instead (so proven here): the ECS deploymentConfiguration
that moto drops (daemon/demo/ecs_shim.py), ECR scan findings registered through moto's
scan-finding-results API (daemon/demo/containers.py), layers of another account (moto swaps them
for the caller's own; the shim keeps them and answers GetLayerVersionByArn), AWS Backup's protected
resources and old backups (daemon/demo/backup_shim.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.cli import main as cli_main
from daemon.demo import containers, databases
from daemon.demo.estate import (
    DEMO_REGIONS,
    PRIMARY,
    SEEDED_SECRETS,
    VENDOR_LAYERS,
    Violation,
    expected_concurrency,
    expected_violations,
    functions_in,
)
from daemon.logging import setup_logging
from daemon.metrics import names
from daemon.model import Status
from daemon.policy import load_policy

from .conftest import ALL_SERVICES, policy_for
from .harness import Sample, get, parse_exposition, running_daemon, select, settings_for, value

CONTROLS_MOTO_CANNOT_SEED: set[str] = set()  # every control has a seeded violation
SERVICES = tuple(ALL_SERVICES)
TARGETS = 3 * len(DEMO_REGIONS) * len(SERVICES)
# Controls of opt-in daemon features this run leaves off: not applicable here, proven where the
# feature is on (lambda-config-export-current: tests/integration/test_export.py).
CONTROLS_OF_OPT_IN_FEATURES = {"lambda-config-export-current"}


@dataclass
class EstateRun:
    accounts: tuple[str, ...]
    exposition: str
    samples: list[Sample]
    readyz: tuple[int, str]
    livez: tuple[int, str]
    logs: str
    check_exit: int
    report: dict[str, Any]
    controls: set[str]


@pytest.fixture(scope="module")
def run(estate: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> EstateRun:
    policy = policy_for(estate, tmp_path_factory.mktemp("estate"), services=ALL_SERVICES)
    logs = io.StringIO()
    setup_logging("debug", "json", stream=logs)
    settings = settings_for(policy, reconciler={"interval_seconds": 300})

    async def daemon_run() -> tuple[str, tuple[int, str], tuple[int, str], set[str]]:
        async with running_daemon(settings) as daemon:
            _, text = await get(daemon, "/metrics")
            return (
                text,
                await get(daemon, "/readyz"),
                await get(daemon, "/livez"),
                set(daemon.policy.current.controls),
            )

    text, readyz, livez, controls = asyncio.run(daemon_run())
    out = io.StringIO()
    code = cli_main(["check", "--policy", str(policy), "--output", "json"], out)
    setup_logging("info", "json")
    return EstateRun(
        estate,
        text,
        parse_exposition(text),
        readyz,
        livez,
        logs.getvalue(),
        code,
        json.loads(out.getvalue()),
        controls,
    )


def test_check_finds_exactly_the_seeded_violations(run: EstateRun) -> None:
    report = run.report
    assert run.check_exit == 1  # violations at or above the default --fail-on low
    assert {(t["aws_account_id"], t["aws_region"], t["status"]) for t in report["targets"]} == {
        (a, r, "ok") for a in run.accounts for r in DEMO_REGIONS
    }
    findings = report["findings"]
    got = {
        Violation(f["aws_account_id"], f["aws_region"], f["control"], f["resource"])
        for f in findings
        if f["status"] == "fail" and not f["exempted"]
    }
    assert got == expected_violations(run.accounts)
    assert report["summary"]["errors"] == 0
    required = {
        "resource",
        "resource_type",
        "aws_account_id",
        "aws_region",
        "control",
        "severity",
        "status",
        "exempted",
        "evidence",
    }
    assert all(required <= set(f) for f in findings)
    # the tag exemption applies (a failure, not a violation) ...
    partner = [
        f
        for f in findings
        if f["resource"].endswith(":function:partner-webhook") and f["control"] == "lambda-url-auth"
    ]
    assert len(partner) == len(run.accounts)
    assert all(
        f["status"] == "fail" and f["exempted"] and f["exemption_reason"] == "SEC-101"
        for f in partner
    )
    # ... and the expired one is reported without applying
    old = [
        f for f in findings if f["control"] == "lambda-runtime-supported" and f["status"] == "fail"
    ]
    assert old and all(f["exemption_expired"] and not f["exempted"] for f in old)


def test_metrics_show_every_seedable_control_violated(run: EstateRun) -> None:
    # every control the demo policy runs, of every service (the opt-in ECR findings and RDS port
    # controls are enabled by the demo policy)
    assert {c.split("-", 1)[0] for c in run.controls} == set(SERVICES)
    assert {"ecr-in-use-images-no-critical-findings", "rds-non-default-port"} <= run.controls
    violated = {s[1]["control"] for s in select(run.samples, "posture_violations") if s[2] > 0}
    expected = run.controls - CONTROLS_MOTO_CANNOT_SEED - CONTROLS_OF_OPT_IN_FEATURES
    assert violated == expected
    # ... in every account, and each new service's controls in both regions together
    for account in run.accounts:
        per_account = {
            s[1]["control"]
            for s in select(run.samples, "posture_violations", aws_account_id=account)
            if s[2] > 0
        }
        assert per_account == expected
    # not applicable with the export off: evaluated on no function, never an error
    for control in CONTROLS_OF_OPT_IN_FEATURES:
        assert {
            s[2] for s in select(run.samples, "posture_evaluated_resources", control=control)
        } == {0}
    assert not select(run.samples, "posture_backup_missing", kind="export")


@pytest.mark.parametrize("region", DEMO_REGIONS)
def test_violation_counts_and_series_match_the_estate(run: EstateRun, region: str) -> None:
    account = run.accounts[0]
    expected = expected_violations([account], [region])
    for control in run.controls:
        rows = select(
            run.samples,
            "posture_violations",
            aws_account_id=account,
            aws_region=region,
            control=control,
        )
        assert rows, f"no zero-initialised series for {control}"
        assert sum(r[2] for r in rows) == sum(1 for v in expected if v.control == control), control
    per_resource = {
        (s[1]["control"], s[1]["resource"])
        for s in select(
            run.samples, "posture_resource_violation", aws_account_id=account, aws_region=region
        )
    }
    assert per_resource == {(v.control, v.resource) for v in expected}
    assert value(run.samples, "posture_resource_series_dropped") == 0


def test_denominators_exemptions_and_inventory(run: EstateRun) -> None:
    s, account, region = run.samples, run.accounts[0], DEMO_REGIONS[0]
    target = {"aws_account_id": account, "aws_region": region, "aws_service": "lambda"}
    functions = len(functions_in(region))
    assert functions == 36
    assert value(s, "posture_evaluated_resources", **target, control="lambda-xray-active") == (
        functions
    )
    assert (
        value(s, "posture_control_evaluation_errors", **target, control="lambda-xray-active") == 0
    )
    assert value(s, "posture_exemptions", **target, control="lambda-url-auth", state="active") == 1
    assert (
        value(
            s, "posture_exemptions", **target, control="lambda-runtime-supported", state="expired"
        )
        == 1
    )
    rds = {**target, "aws_service": "rds"}
    assert (
        value(s, "posture_exemptions", **rds, control="rds-enhanced-monitoring", state="active")
        == 1
    )
    assert value(s, "posture_violations", **rds, control="rds-enhanced-monitoring") == 1
    assert value(s, "posture_resources", **target, resource_type="lambda-function") == functions
    assert value(s, "posture_resources", **target, resource_type="lambda-layer-version") == 2
    for region in DEMO_REGIONS:
        where = {"aws_account_id": account, "aws_region": region}
        repos = len(containers.repositories_in(region))
        families = len([t for t in containers.task_definitions_in(region) if not t.retired])
        instances, db_clusters = databases.db_count(region)
        inventory = {
            ("ecr", "ecr-repository"): repos,
            ("ecs", "ecs-task-definition"): families,
            ("ecs", "ecs-service"): len(containers.services_in(region)),
            ("ecs", "ecs-cluster"): len(containers.clusters_in(region)),
            ("rds", "rds-db-instance"): instances,
            ("rds", "rds-db-cluster"): db_clusters,
        }
        for (service, kind), count in inventory.items():
            assert count > 0
            got = value(s, "posture_resources", **where, aws_service=service, resource_type=kind)
            assert got == count, (region, kind)
        # denominators: every repository; every family's latest active revision (the retired
        # family has none); standalone instances plus clusters for storage-level RDS controls;
        # only the production-tagged databases for Multi-AZ; only awsvpc services for public IPs
        evaluated = {
            ("ecr", "ecr-tag-immutability"): repos,
            ("ecs", "ecs-task-non-root-user"): families,
            ("rds", "rds-instance-not-public"): instances,
            ("rds", "rds-storage-encrypted"): len(databases.instances_in(region)) + db_clusters,
            ("rds", "rds-multi-az"): len(
                [d for d in databases.instances_in(region) if d.env == "prod"]
            )
            + db_clusters,
            ("ecs", "ecs-service-no-public-ip"): len(
                [x for x in containers.services_in(region) if x.launch_type == "FARGATE"]
            ),
        }
        for (service, control), count in evaluated.items():
            got = value(
                s, "posture_evaluated_resources", **where, aws_service=service, control=control
            )
            assert got == count, (region, control)
            errors = value(
                s,
                "posture_control_evaluation_errors",
                **where,
                aws_service=service,
                control=control,
            )
            assert errors == 0
    info = select(s, "posture_account_info", aws_account_id=account)
    assert [i[1]["account_name"] for i in info] == ["acct-111"]
    titles = {i[1]["control"]: i[1]["title"] for i in select(s, "posture_control_info")}
    assert titles["lambda-xray-active"] == "X-Ray active tracing is on"


def test_daemon_health_metrics(run: EstateRun) -> None:
    s = run.samples
    for a in run.accounts:
        assert value(s, "posture_account_up", aws_account_id=a) == 1
        for r in DEMO_REGIONS:
            for service in SERVICES:
                labels = {"aws_account_id": a, "aws_region": r, "aws_service": service}
                assert value(s, "posture_target_up", **labels) == 1
                assert value(s, "posture_target_last_success_timestamp_seconds", **labels) > 1.7e9
                assert value(s, "posture_target_consecutive_failures", **labels) == 0
    assert value(s, "posture_build_info") == 1
    assert value(s, "posture_total_shards") == 1 and value(s, "posture_shard_ordinal") == 0
    per_service = TARGETS // len(SERVICES)
    for service in SERVICES:
        assert value(s, "posture_reconciles_total", aws_service=service, result="success") == (
            per_service
        )
        assert value(s, "posture_reconciles_total", aws_service=service, result="failure") == 0
        assert value(s, "posture_reconcile_duration_seconds_count", aws_service=service) == (
            per_service
        )
        assert value(s, "posture_targets", aws_service=service) == per_service
    assert value(s, "posture_policy_reload_failures_total") == 0
    assert run.readyz[0] == 200 and run.livez[0] == 200


def test_concurrency_headroom_of_every_account_region(run: EstateRun) -> None:
    for a in run.accounts:
        for r in DEMO_REGIONS:
            expected = expected_concurrency(r)
            where = {"aws_account_id": a, "aws_region": r}
            assert (
                value(run.samples, "posture_lambda_concurrency_limit", **where) == expected["limit"]
            )
            assert (
                value(run.samples, "posture_lambda_concurrency_headroom", **where)
                == expected["headroom"]
            )
            assert value(run.samples, "posture_lambda_throttles", **where) == expected["throttles"]


def _calls(s: list[Sample], service: str) -> dict[str, float]:
    return {
        x[1]["operation"]: x[2]
        for x in select(s, "posture_aws_api_requests_total", aws_service=service)
    }


def test_api_calls_per_resource_are_exact(run: EstateRun) -> None:
    s, accounts = run.samples, len(run.accounts)
    targets = accounts * len(DEMO_REGIONS)  # per service
    functions = sum(len(functions_in(r)) for r in DEMO_REGIONS) * accounts
    lam = _calls(s, "lambda")
    assert lam["ListFunctions"] == targets  # one page per target
    assert lam["GetFunction"] == functions  # one per function
    assert lam["GetAccountSettings"] == targets  # one per account-region
    published = sum(1 for r in DEMO_REGIONS for f in functions_in(r) if f.publish)
    assert lam["ListProvisionedConcurrencyConfigs"] == published * accounts
    assert _calls(s, "cloudwatch")["GetMetricData"] == targets  # one batched request each

    repos = sum(len(containers.repositories_in(r)) for r in DEMO_REGIONS) * accounts
    ecr = _calls(s, "ecr")
    assert ecr["DescribeRepositories"] == targets
    assert ecr["GetRegistryScanningConfiguration"] == targets  # once per registry
    for per_repository in ("GetLifecyclePolicy", "GetRepositoryPolicy", "ListTagsForResource"):
        assert ecr[per_repository] == repos, per_repository
    # findings are read only for images in use (orders in both regions, vulnerable-app and
    # unscanned-app in the primary one), never for every image of every repository
    in_use = sum(1 for r in DEMO_REGIONS for repo in containers.repositories_in(r) if repo.used_by)
    assert ecr["DescribeImageScanFindings"] == in_use * accounts

    # the ECS and ECR targets of an account-region share one read of the task definitions
    families = sum(len(containers.task_definitions_in(r)) for r in DEMO_REGIONS) * accounts
    retired = sum(1 for t in containers.TASK_DEFINITIONS if t.retired) * accounts
    ecs = _calls(s, "ecs")
    assert ecs["ListTaskDefinitionFamilies"] == targets
    # one describe per family, and one more lookup for a family with no ACTIVE revision
    assert ecs["DescribeTaskDefinition"] == families
    assert ecs["ListTaskDefinitions"] == retired
    assert ecs["ListClusters"] == targets
    clusters = sum(len(containers.clusters_in(r)) for r in DEMO_REGIONS) * accounts
    assert ecs["ListServices"] == clusters
    assert ecs["DescribeClusters"] == targets  # up to 100 per call
    assert ecs["DescribeServices"] == clusters  # up to 10 per call

    rds = _calls(s, "rds")
    assert rds["DescribeDBInstances"] == targets
    assert rds["DescribeDBClusters"] == targets
    # backups: one walk of each snapshot listing per target, the restore attribute of each manual
    # snapshot (automated ones cannot be shared), AWS Backup once per target (the demo turns
    # rds-backup-plan on), and AWS Config's recorders for the Lambda and the RDS target
    assert rds["DescribeDBSnapshots"] == targets
    assert rds["DescribeDBClusterSnapshots"] == targets
    manual = {
        cluster: sum(
            len(d.snapshots)
            for r in DEMO_REGIONS
            for d in (databases.clusters_in(r) if cluster else databases.instances_in(r))
        )
        * accounts
        for cluster in (False, True)
    }
    assert rds["DescribeDBSnapshotAttributes"] == manual[False]
    assert rds["DescribeDBClusterSnapshotAttributes"] == manual[True]
    assert _calls(s, "backup")["ListProtectedResources"] == targets
    config = _calls(s, "config")
    assert config["DescribeConfigurationRecorders"] == 2 * targets
    assert config["DescribeConfigurationRecorderStatus"] == 2 * targets
    # Lambda logs: one export-task walk per target, one subscription lookup per log group (the
    # demo turns lambda-log-export on); another account's layer versions once per distinct ARN
    logs = _calls(s, "logs")
    assert logs["DescribeExportTasks"] == targets
    log_groups = sum(1 for r in DEMO_REGIONS for f in functions_in(r) if f.log_group) * accounts
    assert logs["DescribeSubscriptionFilters"] == log_groups
    vendor = {layer for r in DEMO_REGIONS for f in functions_in(r) for layer in f.layers}
    assert lam["GetLayerVersionByArn"] == len(vendor & set(VENDOR_LAYERS)) * accounts
    # security groups and KMS keys: one call per target for the groups, one per distinct key
    assert _calls(s, "ec2")["DescribeSecurityGroups"] == targets
    assert _calls(s, "kms")["DescribeKey"] == 2 * targets  # the demo key, for ECR and for RDS


def test_every_exposed_family_is_in_the_contract(run: EstateRun) -> None:
    assert {s[0] for s in run.samples} <= names.exposed_names()


def test_exposition_passes_promtool(run: EstateRun) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; .ci/run installs it)"
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=run.exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )


def test_logs_are_json_lines_with_target_context(run: EstateRun) -> None:
    lines = [json.loads(line) for line in run.logs.splitlines() if line.strip()]
    reconciled = [e for e in lines if e.get("event") == "reconciled"]
    assert len(reconciled) == TARGETS
    assert all(
        {"aws_account_id", "aws_region", "aws_service", "target", "timestamp", "level"} <= set(e)
        for e in reconciled
    )


def test_seeded_secret_values_never_leave(run: EstateRun) -> None:
    """Here for a clean run of the whole estate; test_secrets.py scans a run with faults (error
    paths, renewed credentials) for credentials and the ExternalId as well."""
    everything = run.exposition + run.logs + json.dumps(run.report)
    assert "payments-webhook" in everything  # the function is reported ...
    assert any(
        f["control"] == "lambda-env-no-plaintext-secrets" and "DB_PASSWORD" in f["evidence"]
        for f in run.report["findings"]
    )
    # ... and so is the task definition with a secret in a container's environment ...
    assert any(
        f["control"] == "ecs-task-no-environment-secrets"
        and f["resource"].endswith(":task-definition/env-secrets:1")
        and "DB_PASSWORD" in f["evidence"]
        for f in run.report["findings"]
    )
    for secret in SEEDED_SECRETS:  # ... their secret values never are
        assert secret not in everything


def test_latest_active_revisions_and_images_in_use(run: EstateRun) -> None:
    account = run.accounts[0]
    findings = [
        f
        for f in run.report["findings"]
        if f["aws_account_id"] == account and f["aws_region"] == PRIMARY
    ]
    judged = {f["resource"] for f in findings if f["resource_type"] == "ecs-task-definition"}
    prefix = f"arn:aws:ecs:{PRIMARY}:{account}:task-definition/"
    # revision 1 of web (privileged) is superseded by revision 2; "retired" has no ACTIVE revision
    assert prefix + "web:2" in judged and prefix + "web:1" not in judged
    assert not [r for r in judged if r.startswith(prefix + "retired")]
    in_use = {
        f["resource"].rsplit("/", 1)[-1]: f
        for f in findings
        if f["control"] == "ecr-in-use-images-no-critical-findings"
    }
    assert in_use["vulnerable-app"]["status"] == "fail"
    assert "CVE-2023-45853" in in_use["vulnerable-app"]["evidence"]
    assert "never scanned" in in_use["unscanned-app"]["evidence"]
    assert in_use["orders"]["status"] == "pass"  # in use by web:2, only a LOW finding
    assert in_use["legacy-builds"]["evidence"].startswith("no image of this repository is used")
    # the ECS shim keeps moto's dropped deploymentConfiguration: compliant services pass
    breakers = {
        f["resource"].rsplit("/", 1)[-1]: f["status"]
        for f in findings
        if f["control"] == "ecs-service-circuit-breaker"
    }
    assert breakers["web"] == "pass" and breakers["no-rollback"] == "fail"


async def test_the_sweep_returns_every_finding_and_the_store_keeps_all_but_the_passes(
    estate: tuple[str, ...], tmp_path: Path
) -> None:
    """One account-region of the estate, every service, through the real reconciler: the outcome
    (what `check` prints) has the passes, the long-lived store's copy of the same sweep has not,
    and has every aggregate (which count the passes) as built."""
    policy = policy_for(estate[:1], tmp_path, regions=[PRIMARY], services=ALL_SERVICES)
    daemon = Daemon(settings_for(policy), load_policy(policy))
    outcomes = await daemon.check()
    assert len(outcomes) == len(SERVICES) and all(o.error is None for o in outcomes), outcomes
    view = daemon.store.view()
    kinds: Counter[str] = Counter()
    for o in outcomes:
        assert o.result is not None
        full, kept = o.result.findings, view.results[o.target]
        passes = [f for f in full if f.status is Status.PASS]
        assert passes, o.target  # every service of the estate has compliant resources
        assert kept.findings == tuple(f for f in full if f.status is not Status.PASS), o.target
        assert kept == replace(o.result, findings=kept.findings)  # aggregates, samples untouched
        fails = [f for f in kept.findings if f.status is Status.FAIL]
        assert sum(kept.evaluated.values()) == len(passes) + len(fails)  # passes still counted
        kinds.update(f.status.value for f in kept.findings)
        kinds.update("exempted" for f in kept.findings if f.exempted)
    assert kinds["fail"] and kinds["exempted"]  # violations and exempted failures are kept
