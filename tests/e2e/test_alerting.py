"""End to end: the daemon, a real Prometheus with the shipped rules, a real Alertmanager with the
example configuration, and a webhook receiver; then every dashboard query against that Prometheus.

    moto server (session fixture, demo shim)  <- posture-daemon run (a real process)
    Prometheus (Debian's, loopback, 1 s scrape and evaluation) scrapes it, evaluates
        deploy/prometheus/*.rules.yml and sends alerts to
    Alertmanager (Debian's, gossip off) with deploy/alertmanager/alertmanager.yml, whose receivers
        deliver to the webhook below (one path per receiver)

Two accounts of this module's own (seeded with a few demo resources) live through:

1. start: critical violations (plaintext secrets in a Lambda environment, a public ECR
   repository policy), backups too old and missing, Lambda concurrency headroom low, the
   unreserved pool low and throttling, and unevaluated checks (the demo shim denies B's
   ecr:GetLifecyclePolicy) alert and reach the receivers their severity and category route them
   to, grouped by account;
2. B's ECR calls are throttled: the target fails, PostureTargetDown and PostureAwsApiThrottling
   alert, and Alertmanager inhibits B's ECR violation alerts (A's stay);
3. the secrets are removed from A's function in moto: the alert resolves;
4. an invalid policy file fires PosturePolicyReloadFailed; a valid one resolves it;
5. every dashboard query returns data from this Prometheus;
6. the daemon is stopped: PostureDaemonDown pages;
7. its scrape target is removed from Prometheus: PostureDaemonAbsent pages.

Hold times. The shipped rules wait 5 minutes to hours before firing (`for:`); promtool's unit
tests (deploy/prometheus/tests) prove those durations. Here Prometheus loads a copy of the shipped
rule files in which every `for:` is 1s, and nothing else differs (test_e2e_rules_differ_only_in_hold_times
checks it). Likewise Alertmanager runs the example configuration with its receivers pointed at
the webhook and its group_wait/group_interval set to 1s; routes, grouping and inhibitions are the
example's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiobotocore.session import get_session
from aiohttp import web

from daemon import dashboards
from daemon.dashboards.grafana import render
from daemon.demo.estate import PRIMARY, function_arn, seed_estate
from daemon.demo.moto_server import EmbeddedMoto
from tests.e2e.test_alert_rules import RECEIVERS
from tests.integration.conftest import ALL_SERVICES, policy_for
from tests.integration.faults import deny, throttle_service
from tests.integration.harness import aws_client
from tests.promql import substitute

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager"

A, B = "616161616161", "626262626262"  # this module's accounts (tests/integration/test_hygiene.py)
ONLY = (
    "payments-webhook",  # lambda-env-no-plaintext-secrets (critical)
    "admin-tool",  # lambda-role-least-privilege (high)
    "unpublished",  # no published version: backup missing (kind version)
    "old-backup",  # its version is 9 days old, the limit 7: backup too old
    "orders-api",  # reservations, provisioned concurrency, throttles
    "partner-webhook",  # an exemption
    "public-images",  # ecr-repository-policy-restricted (critical)
    "no-backups-db",  # no automated backups: backup missing (kind restorable)
)
EXPORT_BUCKET = "posture-e2e-exports"
HOLD = "1s"
TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what the run saw ----------------------------------------------------------------------------


@dataclass
class Notification:
    receiver: str  # the webhook path: the Alertmanager receiver that delivered it
    payload: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Run:
    notifications: list[Notification] = field(default_factory=list)
    am_alerts_while_target_down: list[dict[str, Any]] = field(default_factory=list)
    # (selection, dashboard uid, panel or annotation, expr) -> label sets of the series returned
    query_results: dict[tuple[str, str, str, str], list[dict[str, str]]] = field(
        default_factory=dict
    )
    query_errors: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    # (selection, dashboard uid, variable) -> the values Grafana would offer
    variable_values: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    exposition: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    timeouts: list[str] = field(default_factory=list)
    daemon_stopped: float = float("inf")  # time.monotonic() when the daemon was told to stop

    def alerts(
        self, receiver: str | None = None, status: str | None = None, before: float = float("inf")
    ) -> list[dict[str, Any]]:
        return [
            a
            for n in self.notifications
            if receiver in (None, n.receiver) and n.at < before
            for a in n.payload["alerts"]
            if status in (None, a["status"])
        ]

    def arrived(self, receiver: str, status: str, alertname: str, **labels: str) -> bool:
        want = {"alertname": alertname, **labels}
        if alertname in {a for _, a, _ in PHASE_1}:
            want |= {"severity": "warning", "aws_region": PRIMARY}
        return any(want.items() <= a["labels"].items() for a in self.alerts(receiver, status))


# --- the parts -----------------------------------------------------------------------------------


def e2e_rule_files(directory: Path) -> list[Path]:
    """Copies of the shipped rule files with every `for:` set to HOLD (see the module doc)."""
    out = []
    for source in sorted(RULES.glob("*.rules.yml")):
        doc = yaml.safe_load(source.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = HOLD
        path = directory / source.name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(path)
    return out


def e2e_alertmanager_config(directory: Path, webhook: str) -> Path:
    """The example configuration: its receivers deliver to the webhook (keeping send_resolved),
    its group_wait and group_interval are 1s. Routes, grouping, inhibitions are untouched."""
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())

    def faster(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            faster(child)

    faster(config["route"])
    receivers = []
    for receiver in config["receivers"]:
        integrations = [c for key, cs in receiver.items() if key.endswith("_configs") for c in cs]
        send_resolved = all(c.get("send_resolved", True) for c in integrations)
        receivers.append(
            {
                "name": receiver["name"],
                "webhook_configs": [
                    {"url": f"{webhook}/{receiver['name']}", "send_resolved": send_resolved}
                ],
            }
        )
    config["receivers"] = receivers
    for template in config.get("templates", []):
        shutil.copy(ALERTMANAGER / template, directory / template)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@asynccontextmanager
async def webhook_receiver(run: Run) -> AsyncIterator[str]:
    async def receive(request: web.Request) -> web.Response:
        run.notifications.append(Notification(request.match_info["receiver"], await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{receiver}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        return await resp.json()


async def until(
    run: Run, what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT
) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            run.timeouts.append(what)
            return False
        await asyncio.sleep(0.2)
    return True


async def ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def wait_ready(
    run: Run,
    session: aiohttp.ClientSession,
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Until `url` answers 200; fails at once, with the log's end, if the process exits (e.g. its
    port, free a moment ago, was taken by another process on this machine)."""
    deadline = time.monotonic() + TIMEOUT
    while not await ready(session, url):
        if proc.poll() is not None or time.monotonic() > deadline:
            run.timeouts.append(log.stem)
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
            raise AssertionError(f"{log.stem} never became ready (exit {proc.poll()}):\n{tail}")
        await asyncio.sleep(0.2)


# --- the dashboards' queries ---------------------------------------------------------------------

# The variable values a dashboard is viewed with: "All" everywhere, and one account and region
# (the account drilldown as an on-call engineer opens it from an alert).
SELECTIONS: dict[str, dict[str, str]] = {
    "all": {},
    "account A": {"account": A, "region": PRIMARY},
}
_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


async def dashboard_queries(
    run: Run,
    http: aiohttp.ClientSession,
    prom: str,
    selection: str,
    start: float,
    end: float,
) -> None:
    """Every panel, annotation and variable query of every dashboard, as Grafana would send it
    with the selection's variable values, against this Prometheus over the run so far."""
    values = SELECTIONS[selection]
    for dashboard in dashboards.DASHBOARDS:
        rendered = render(dashboard)
        for variable in rendered["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]
            match = _LABEL_VALUES.fullmatch(query if isinstance(query, str) else query["query"])
            assert match, query
            selector, label = match.groups()
            answer = await get_json(
                http,
                f"{prom}/api/v1/label/{label}/values",
                **{"match[]": substitute(selector, values)},
                start=str(start),
                end=str(end),
            )
            run.variable_values[(selection, dashboard.uid, variable["name"])] = answer["data"]
        queries = [
            (p["title"], t["expr"])
            for p in rendered["panels"]
            if p["type"] != "row"
            for t in p["targets"]
        ] + [
            (f"annotation {a['name']}", a["expr"])
            for a in rendered["annotations"]["list"]
            if "expr" in a
        ]
        for where, expr in queries:
            key = (selection, dashboard.uid, where, expr)
            answer = await get_json(
                http,
                f"{prom}/api/v1/query_range",
                query=substitute(expr, values),
                start=str(start),
                end=str(end),
                step="1",
            )
            if answer.get("status") != "success":
                run.query_errors[key] = str(answer.get("error"))
                continue
            run.query_results[key] = [s["metric"] for s in answer["data"]["result"] if s["values"]]


# --- the scenario --------------------------------------------------------------------------------

# (receiver, alert, labels it must carry); every one also carries severity="warning" and the
# region (both checked below)
PHASE_1 = (
    (
        "compliance-tickets",
        "PostureCriticalViolation",
        {"aws_account_id": A, "control": "lambda-env-no-plaintext-secrets"},
    ),
    (
        "compliance-tickets",
        "PostureCriticalViolation",
        {"aws_account_id": B, "aws_service": "ecr", "control": "ecr-repository-policy-restricted"},
    ),
    ("compliance-tickets", "PostureBackupTooOld", {"aws_account_id": A, "kind": "version"}),
    ("compliance-tickets", "PostureBackupMissing", {"aws_account_id": A, "kind": "restorable"}),
    (
        "compliance-tickets",
        "PostureControlEvaluationErrors",
        {"aws_account_id": B, "aws_service": "ecr", "control": "ecr-lifecycle-policy"},
    ),
    ("platform-tickets", "PostureLambdaConcurrencyHeadroomLow", {"aws_account_id": A}),
    ("platform-tickets", "PostureLambdaThrottling", {"aws_account_id": B}),
    ("platform-tickets", "PostureLambdaUnreservedConcurrencyLow", {"aws_account_id": B}),
)
UNRESERVED_B = 120  # B's unreserved pool: above AWS's floor (100), below the policy's 150


async def scenario(moto: EmbeddedMoto, tmp: Path) -> Run:
    run = Run()
    started = time.monotonic()
    assert moto.shim is not None
    await seed_estate([A, B], [PRIMARY], only=ONLY)
    async with get_session().create_client("s3", region_name=PRIMARY) as s3:
        await s3.create_bucket(Bucket=EXPORT_BUCKET)
    # B's limit leaves UNRESERVED_B of it unreserved (a quota lowered under its reservations)
    async with aws_client("lambda", B, PRIMARY) as lam:
        limits = (await lam.get_account_settings())["AccountLimit"]
    reserved = limits["ConcurrentExecutions"] - limits["UnreservedConcurrentExecutions"]
    moto.shim.set_concurrency_limit(B, PRIMARY, reserved + UNRESERVED_B)
    # B's reader role may not read ECR lifecycle policies: those checks are not evaluated
    moto.shim.add_fault(deny(B, "ecr", "GetLifecyclePolicy"))
    run.phases["seeded"] = time.monotonic() - started

    policy = policy_for([A, B], tmp, regions=[PRIMARY], services=ALL_SERVICES)
    daemon_port, prometheus_port, am_port = free_port(), free_port(), free_port()
    daemon_env = {
        **os.environ,
        "POSTURE_POLICY_FILE": str(policy),
        "POSTURE_HTTP__HOST": "127.0.0.1",
        "POSTURE_HTTP__PORT": str(daemon_port),
        "POSTURE_LOG__FORMAT": "json",
        "POSTURE_RECONCILER__INTERVAL_SECONDS": "2",
        "POSTURE_RECONCILER__JITTER_FRACTION": "0",
        "POSTURE_RECONCILER__BACKOFF_BASE_SECONDS": "0.5",
        "POSTURE_RECONCILER__BACKOFF_MAX_SECONDS": "2",
        "POSTURE_RECONCILER__POLICY_POLL_SECONDS": "0.2",
        "POSTURE_RECONCILER__SHUTDOWN_GRACE_SECONDS": "5",
        "POSTURE_AWS__MAX_ATTEMPTS": "2",
        "POSTURE_EXPORT__ENABLED": "true",
        "POSTURE_EXPORT__BUCKET": EXPORT_BUCKET,
    }
    rules = tmp / "rules"
    rules.mkdir()
    prometheus_config = tmp / "prometheus.yml"
    prometheus_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in e2e_rule_files(rules)],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "posture-daemon",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}],
                    }
                ],
            }
        )
    )
    prom = f"http://127.0.0.1:{prometheus_port}"
    am = f"http://127.0.0.1:{am_port}"

    async with (
        webhook_receiver(run) as webhook,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        am_config = e2e_alertmanager_config(tmp, webhook)
        (tmp / "am-data").mkdir()
        (tmp / "tsdb").mkdir()
        async with (
            process(
                [
                    "prometheus-alertmanager",
                    f"--config.file={am_config}",
                    f"--storage.path={tmp / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp / "alertmanager.log",
            ) as alertmanager,
            process(
                [
                    "prometheus",
                    f"--config.file={prometheus_config}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                tmp / "prometheus.log",
            ) as prometheus,
            process(
                [sys.executable, "-m", "daemon", "run"], tmp / "daemon.log", daemon_env
            ) as daemon,
        ):
            await wait_ready(run, http, f"{am}/-/ready", alertmanager, tmp / "alertmanager.log")
            await wait_ready(run, http, f"{prom}/-/ready", prometheus, tmp / "prometheus.log")
            await wait_ready(
                run, http, f"http://127.0.0.1:{daemon_port}/readyz", daemon, tmp / "daemon.log"
            )
            t0 = time.time()
            run.phases["ready"] = time.monotonic() - started

            # 1. the estate's problems reach their receivers
            for receiver, alertname, labels in PHASE_1:
                await until(
                    run,
                    f"{alertname} {labels}",
                    lambda r=receiver, n=alertname, lb=labels: run.arrived(r, "firing", n, **lb),
                )
            run.phases["phase 1"] = time.monotonic() - started

            # 2. B's ECR calls are throttled: the target fails; its violations are inhibited
            moto.shim.add_fault(throttle_service(B, "ecr"))
            target_b = {"aws_account_id": B, "aws_region": PRIMARY, "aws_service": "ecr"}
            for name in ("PostureTargetDown", "PostureAwsApiThrottling"):
                await until(
                    run,
                    name,
                    lambda n=name: run.arrived("platform-tickets", "firing", n, **target_b),
                )

            async def inhibited() -> bool:
                alerts = await get_json(http, f"{am}/api/v2/alerts")
                run.am_alerts_while_target_down = alerts
                return any(
                    a["labels"].get("alertname") == "PostureCriticalViolation"
                    and a["labels"].get("aws_account_id") == B
                    and a["status"]["inhibitedBy"]
                    for a in alerts
                )

            deadline = time.monotonic() + TIMEOUT
            while not await inhibited():
                if time.monotonic() > deadline:
                    run.timeouts.append("inhibition of B's ECR violations")
                    break
                await asyncio.sleep(0.3)
            run.phases["phase 2"] = time.monotonic() - started

            # 3. the secrets leave A's function: the critical violation resolves
            async with aws_client("lambda", A) as lam:
                await lam.update_function_configuration(
                    FunctionName="payments-webhook", Environment={"Variables": {"STAGE": "prod"}}
                )
            await until(
                run,
                "resolved PostureCriticalViolation",
                lambda: run.arrived(
                    "compliance-tickets",
                    "resolved",
                    "PostureCriticalViolation",
                    aws_account_id=A,
                    control="lambda-env-no-plaintext-secrets",
                ),
            )
            run.phases["phase 3"] = time.monotonic() - started

            # 4. an invalid policy file, then a valid change
            good = policy.read_text()
            policy.write_text(good.replace("version: 1", "version: 1\nscope: nonsense"))
            await until(
                run,
                "PosturePolicyReloadFailed",
                lambda: run.arrived("platform-tickets", "firing", "PosturePolicyReloadFailed"),
            )
            doc = yaml.safe_load(good)
            doc["controls"]["lambda-timeout-memory-bounds"]["params"]["max_timeout_seconds"] = 301
            policy.write_text(yaml.safe_dump(doc, sort_keys=False))
            await until(
                run,
                "resolved PosturePolicyReloadFailed",
                lambda: run.arrived("platform-tickets", "resolved", "PosturePolicyReloadFailed"),
            )
            run.phases["phase 4"] = time.monotonic() - started

            # 5. every dashboard query against this Prometheus
            await asyncio.sleep(3)  # a few more scrapes and sweeps after the reload
            async with http.get(f"http://127.0.0.1:{daemon_port}/metrics") as resp:
                run.exposition = await resp.text()
            end = time.time()
            for selection in SELECTIONS:
                await dashboard_queries(run, http, prom, selection, t0, end)
            run.phases["dashboards"] = time.monotonic() - started

            # 6. the daemon stops: the page goes out
            run.daemon_stopped = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.wait, 20)
            await until(
                run,
                "PostureDaemonDown",
                lambda: run.arrived("oncall-pager", "firing", "PostureDaemonDown"),
            )
            run.phases["stopped"] = time.monotonic() - started

            # 7. the scrape target disappears (a deployment deleted, service discovery empty):
            # Prometheus reloads a configuration without it; PostureDaemonAbsent pages
            # (the job stays, its target goes: Prometheus marks the target's series stale at once;
            # a removed job's series would linger for the 5-minute lookback)
            config = yaml.safe_load(prometheus_config.read_text())
            config["scrape_configs"][0]["static_configs"] = []
            prometheus_config.write_text(yaml.safe_dump(config))
            prometheus.send_signal(signal.SIGHUP)
            await until(
                run,
                "PostureDaemonAbsent",
                lambda: run.arrived("oncall-pager", "firing", "PostureDaemonAbsent"),
            )
            run.phases["absent"] = time.monotonic() - started
    moto.shim.clear_faults()
    return run


@pytest.fixture(scope="module")
def run(moto: EmbeddedMoto, tmp_path_factory: pytest.TempPathFactory) -> Run:
    for tool in ("prometheus", "prometheus-alertmanager"):
        assert shutil.which(tool), f"{tool} is required (Debian package; `make system-deps`)"
    tmp = tmp_path_factory.mktemp("alerting")
    try:
        return asyncio.run(scenario(moto, tmp))
    finally:
        assert moto.shim is not None
        moto.shim.clear_faults()


# --- what must hold ----------------------------------------------------------------------------


def test_the_run_reached_every_step(run: Run) -> None:
    assert run.timeouts == [], f"timed out waiting for {run.timeouts}; phases {run.phases}"


@pytest.mark.parametrize(("receiver", "alertname", "labels"), PHASE_1, ids=str)
def test_alerts_arrive_at_their_receiver_with_labels(
    run: Run, receiver: str, alertname: str, labels: dict[str, str]
) -> None:
    assert run.arrived(receiver, "firing", alertname, **labels), sorted(
        {
            (n.receiver, a["labels"]["alertname"])
            for n in run.notifications
            for a in n.payload["alerts"]
        }
    )


def test_every_notification_reached_the_receiver_of_its_severity_and_category(run: Run) -> None:
    assert run.notifications
    for n in run.notifications:
        for a in n.payload["alerts"]:
            labels = a["labels"]
            route = (labels["severity"], labels["category"])
            assert RECEIVERS.get(route, RECEIVERS.get((route[0], None))) == n.receiver, (
                n.receiver,
                labels,
            )
            assert a["annotations"]["summary"] and a["annotations"]["description"]
            assert a["annotations"]["runbook_url"].endswith(
                "/runbooks.md#" + labels["alertname"].lower()
            )


def test_alert_labels_name_account_region_resource_and_control(run: Run) -> None:
    payments = function_arn(A, PRIMARY, "payments-webhook")
    (critical,) = {
        json.dumps(a["labels"], sort_keys=True)
        for a in run.alerts("compliance-tickets", "firing")
        if a["labels"].get("resource") == payments
    }
    assert json.loads(critical) == {
        "alertname": "PostureCriticalViolation",
        "aws_account_id": A,
        "aws_region": PRIMARY,
        "aws_service": "lambda",
        "control": "lambda-env-no-plaintext-secrets",
        "resource": payments,
        "severity": "warning",
        "category": "compliance",
        "control_severity": "critical",
    }
    old = function_arn(A, PRIMARY, "old-backup")
    too_old = [a for a in run.alerts("compliance-tickets") if a["labels"].get("resource") == old]
    assert too_old and too_old[0]["labels"]["kind"] == "version"
    annotations = too_old[0]["annotations"]
    assert annotations["runbook_url"].endswith("/runbooks.md#posturebackuptooold")
    assert (
        old in annotations["description"]
        and "1.3 times the limit of 7d 0h 0m 0s" in annotations["description"]
    )
    headroom = [
        a
        for a in run.alerts("platform-tickets")
        if a["labels"]["alertname"] == "PostureLambdaConcurrencyHeadroomLow"
    ]
    assert {a["labels"]["aws_account_id"] for a in headroom} == {A, B}
    assert all(
        a["labels"]["aws_service"] == "lambda" and a["labels"]["aws_region"] == PRIMARY
        for a in headroom
    )
    headroom_a = next(
        a for a in headroom if a["labels"]["aws_account_id"] == A and a["status"] == "firing"
    )
    assert "left 12% of its concurrency limit of 400" in headroom_a["annotations"]["description"]
    # B's reservations leave 120 of its limit unreserved, below the policy's 150
    pool = [
        a
        for a in run.alerts("platform-tickets", "firing")
        if a["labels"]["alertname"] == "PostureLambdaUnreservedConcurrencyLow"
    ]
    assert {a["labels"]["aws_account_id"] for a in pool} == {B}
    assert "is 120, below the policy's minimum of 150" in " ".join(
        pool[0]["annotations"]["description"].split()
    )


def test_notifications_are_grouped_by_alert_and_account(run: Run) -> None:
    compliance = [n for n in run.notifications if n.receiver == "compliance-tickets"]
    assert compliance
    for n in compliance:
        group = n.payload["groupLabels"]
        assert set(group) == {"alertname", "aws_account_id"}
        assert {a["labels"]["aws_account_id"] for a in n.payload["alerts"]} == {
            group["aws_account_id"]
        }
        assert {a["labels"]["alertname"] for a in n.payload["alerts"]} == {group["alertname"]}
    # several resources of one account travel in one notification
    missing_a = [
        n
        for n in compliance
        if n.payload["groupLabels"] == {"alertname": "PostureBackupMissing", "aws_account_id": A}
    ]
    assert max(len(n.payload["alerts"]) for n in missing_a) >= 2
    # nothing that pages was sent before the daemon stopped, nothing compliance-related pages
    assert not run.alerts("oncall-pager", before=run.daemon_stopped)
    pages = run.alerts("oncall-pager")
    assert {a["labels"]["alertname"] for a in pages} == {"PostureDaemonDown", "PostureDaemonAbsent"}


def test_violations_of_a_failing_target_are_inhibited(run: Run) -> None:
    alerts = run.am_alerts_while_target_down
    by_fingerprint = {a["fingerprint"]: a for a in alerts}
    critical = {
        a["labels"]["aws_account_id"] + "/" + a["labels"]["aws_service"]: a
        for a in alerts
        if a["labels"]["alertname"] == "PostureCriticalViolation"
        and a["labels"]["control"] == "ecr-repository-policy-restricted"
    }
    suppressed = critical[f"{B}/ecr"]["status"]
    assert suppressed["state"] == "suppressed"
    (source,) = [by_fingerprint[f] for f in suppressed["inhibitedBy"]]
    assert source["labels"]["alertname"] == "PostureTargetDown"
    assert {k: source["labels"][k] for k in ("aws_account_id", "aws_region", "aws_service")} == {
        "aws_account_id": B,
        "aws_region": PRIMARY,
        "aws_service": "ecr",
    }
    # A's ECR target is fine: its violation is not muted
    assert critical[f"{A}/ecr"]["status"]["state"] == "active"


def test_fixing_the_violation_in_aws_resolves_its_alert(run: Run) -> None:
    payments = function_arn(A, PRIMARY, "payments-webhook")
    resolved = [
        a
        for a in run.alerts("compliance-tickets", "resolved")
        if a["labels"].get("resource") == payments
    ]
    assert resolved and resolved[0]["labels"]["control"] == "lambda-env-no-plaintext-secrets"
    # the repository's violation is untouched and not resolved while the daemon runs (once it
    # stops, its series go stale and Prometheus resolves every alert it fed: PostureDaemonDown
    # pages instead)
    assert not [
        a
        for a in run.alerts(status="resolved", before=run.daemon_stopped)
        if a["labels"].get("control") == "ecr-repository-policy-restricted"
        and a["labels"]["aws_account_id"] == A
    ]


def test_a_rejected_policy_file_alerts_until_a_valid_one_loads(run: Run) -> None:
    assert run.arrived(
        "platform-tickets", "firing", "PosturePolicyReloadFailed", job="posture-daemon"
    )
    assert run.arrived("platform-tickets", "resolved", "PosturePolicyReloadFailed")


def test_a_stopped_daemon_pages(run: Run) -> None:
    (page,) = {
        json.dumps(a["labels"], sort_keys=True)
        for a in run.alerts("oncall-pager", "firing")
        if a["labels"]["alertname"] == "PostureDaemonDown"
    }
    labels = json.loads(page)
    assert labels["severity"] == "critical" and labels["job"] == "posture-daemon"
    assert labels["instance"].startswith("127.0.0.1:")


def test_a_daemon_gone_from_prometheus_pages(run: Run) -> None:
    (page,) = [
        a["labels"]
        for a in run.alerts("oncall-pager", "firing")
        if a["labels"]["alertname"] == "PostureDaemonAbsent"
    ]
    assert page == {
        "alertname": "PostureDaemonAbsent",
        "job": "posture-daemon",
        "severity": "critical",
        "category": "daemon",
    }


def _tables() -> dict[tuple[str, str], set[str]]:
    """(dashboard uid, table title) -> the label columns it shows."""
    out = {}
    for d in dashboards.DASHBOARDS:
        for p in d.panels():
            if p.type == "table":
                legends = {q.legend for q in p.queries}
                out[(d.uid, p.title)] = {c.name for c in p.columns} - legends
    return out


def test_every_dashboard_query_returns_data(run: Run) -> None:
    assert run.query_errors == {}
    assert {k[0] for k in run.query_results} == set(SELECTIONS), "no dashboard query ran"
    empty = sorted(
        f"{selection}: {uid} / {where}: {expr}"
        for (selection, uid, where, expr), r in run.query_results.items()
        if not r
    )
    assert empty == [], "\n".join(empty)
    # table columns name labels the queries really return
    for (uid, title), columns in _tables().items():
        labels = {
            name
            for (_, u, where, _), series in run.query_results.items()
            if (u, where) == (uid, title)
            for s in series
            for name in s
        }
        assert columns <= labels, (uid, title, columns - labels)
    # one account selected: the dashboards with an account variable show only its series
    with_account = {
        d.uid for d in dashboards.DASHBOARDS if "account" in {v.name for v in d.variables}
    }
    assert with_account == {"posture-account", "posture-backup", "posture-concurrency"}
    selected = [
        s
        for (selection, uid, *_), series in run.query_results.items()
        if selection == "account A" and uid in with_account
        for s in series
    ]
    assert {s["aws_account_id"] for s in selected if "aws_account_id" in s} == {A}


def test_every_dashboard_variable_offers_what_the_run_exported(run: Run) -> None:
    offered = run.variable_values
    assert offered and all(offered.values()), {k: v for k, v in offered.items() if not v}
    for uid in ("posture-account", "posture-backup", "posture-concurrency"):
        assert set(offered[("all", uid, "account")]) == {A, B}
        assert offered[("account A", uid, "region")] == [PRIMARY]
    assert offered[("all", "posture-overview", "job")] == ["posture-daemon"]
    assert set(offered[("all", "posture-account", "service")]) == set(ALL_SERVICES)
    # every kind the policy requires, backed up or missing (restorable: no-backups-db has none)
    assert {"version", "restorable", "export"} <= set(offered[("all", "posture-backup", "kind")])


def test_exposition_passes_promtool_check_metrics(run: Run) -> None:
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=run.exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )
    assert "posture_reconcile_interval_seconds 2.0" in run.exposition


def test_e2e_rules_differ_only_in_hold_times(tmp_path: Path) -> None:
    for copy in e2e_rule_files(tmp_path):
        shipped = yaml.safe_load((RULES / copy.name).read_text())
        ours = yaml.safe_load(copy.read_text())
        for group_s, group_o in zip(shipped["groups"], ours["groups"], strict=True):
            for rule_s, rule_o in zip(group_s["rules"], group_o["rules"], strict=True):
                assert {k: v for k, v in rule_o.items() if k != "for"} == {
                    k: v for k, v in rule_s.items() if k != "for"
                }
                assert ("for" in rule_o) == ("for" in rule_s)


def test_e2e_alertmanager_config_keeps_routes_and_inhibitions(tmp_path: Path) -> None:
    example = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    ours = yaml.safe_load(e2e_alertmanager_config(tmp_path, "http://127.0.0.1:1").read_text())
    assert ours["inhibit_rules"] == example["inhibit_rules"]
    assert [r["name"] for r in ours["receivers"]] == [r["name"] for r in example["receivers"]]

    def shape(route: dict[str, Any]) -> Any:
        kept = {
            k: v for k, v in route.items() if k not in ("group_wait", "group_interval", "routes")
        }
        return kept, [shape(r) for r in route.get("routes", [])]

    assert shape(ours["route"]) == shape(example["route"])
    proc = subprocess.run(
        ["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
