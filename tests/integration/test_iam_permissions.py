"""The shipped IAM policies grant exactly what the daemon calls: nothing missing, nothing extra.

The daemon counts every AWS request it sends in posture_aws_api_requests_total{aws_service,
operation} (AssumeRole and GetCallerIdentity included). This test runs a full sweep of the demo
estate the way `posture-daemon demo` does (AWS Organizations discovery from the management
account, AssumeRole into each member, every service the policy file accepts) plus a target
discovery with `regions: all`, reads the operations from those metrics, and compares them with
the declared operations and with the policy files shipped in deploy/iam.

Features that change AWS are opt-in (`Operation(optional=True)`) and their actions live in the
separate *-optional-policy.json files; such a feature turns itself on in SWEEP_OVERRIDES below so
this sweep exercises it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import yaml
from prometheus_client import generate_latest

from daemon.app import Daemon
from daemon.collectors.registry import declared_operations
from daemon.demo.estate import DEMO_REGIONS
from daemon.demo.moto_server import EmbeddedMoto
from daemon.demo.runner import demo_policy_text
from daemon.model.operations import PRINCIPALS, Operation
from daemon.policy import load_policy
from daemon.policy.models import ServiceName

from .conftest import organization
from .harness import parse_exposition, settings_for

IAM = Path(__file__).resolve().parents[2] / "deploy" / "iam"

# Settings that switch on opt-in features (none yet), so the sweep calls their operations too.
SWEEP_OVERRIDES: dict[str, Any] = {}

Op = tuple[str, str]


def _observed(daemon: Daemon) -> set[Op]:
    samples = parse_exposition(generate_latest(daemon.registry).decode())
    return {
        (labels["aws_service"], labels["operation"])
        for name, labels, value in samples
        if name == "posture_aws_api_requests_total" and value > 0
    }


def _policy_actions(name: str) -> set[str]:
    path = IAM / name
    if not path.exists():
        return set()
    doc = json.loads(path.read_text())
    out: set[str] = set()
    for stmt in doc["Statement"]:
        assert stmt["Effect"] == "Allow"
        out.update([stmt["Action"]] if isinstance(stmt["Action"], str) else stmt["Action"])
    return out


def _write_policy(tmp: Path, name: str, scope: dict[str, Any]) -> Path:
    doc = yaml.safe_load(demo_policy_text())
    doc["scope"].update(scope)
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _sweep(policy: Path) -> set[Op]:
    daemon = Daemon(settings_for(policy, **SWEEP_OVERRIDES), load_policy(policy))
    outcomes = await daemon.check()
    assert outcomes, "the sweep found no targets"
    failed = [str(o.target) for o in outcomes if o.result is None]
    assert not failed, f"targets failed: {failed}"
    return _observed(daemon)


async def _discover(policy: Path) -> set[Op]:
    daemon = Daemon(settings_for(policy, **SWEEP_OVERRIDES), load_policy(policy))
    try:
        await daemon.reconciler.refresh_targets()
        assert daemon.reconciler.targets
    finally:
        await daemon.gateway.close()
    return _observed(daemon)


async def test_shipped_policies_grant_exactly_the_operations_of_a_demo_sweep(
    moto: EmbeddedMoto, estate: tuple[str, ...], tmp_path: Path
) -> None:
    org = await organization()
    services = list(get_args(ServiceName))
    # The demo policy (Organizations discovery) plus the seeded estate accounts, every service.
    sweep_policy = _write_policy(
        tmp_path,
        "sweep.yaml",
        {
            "accounts": {
                "static": [{"id": a} for a in estate],
                "organizations": {"enabled": True, "exclude": ["master"]},
            },
            "regions": list(DEMO_REGIONS),
            "services": services,
        },
    )
    # `regions: all` asks every account for its enabled regions (discovery only, no sweep).
    regions_policy = _write_policy(
        tmp_path,
        "regions.yaml",
        {
            "accounts": {"organizations": {"enabled": True, "include": ["alpha"]}},
            "regions": "all",
            "services": services,
        },
    )
    observed = await _sweep(sweep_policy) | await _discover(regions_policy)
    assert org["alpha"]  # the organization's members were part of the sweep

    declared = {(op.service, op.operation): op for op in declared_operations()}
    undeclared = sorted(observed - declared.keys())
    assert not undeclared, (
        f"the daemon called operations no module declares in its OPERATIONS: {undeclared}"
    )

    never_called = sorted(
        key for key, op in declared.items() if not op.optional and key not in observed
    )
    assert not never_called, (
        "declared operations the demo sweep never called (seed the demo estate so they are "
        f"called, or drop the declaration): {never_called}"
    )

    for principal in PRINCIPALS:
        for optional in (False, True):
            name = f"{principal}{'-optional' if optional else ''}-policy.json"
            shipped = _policy_actions(name)
            ops: list[Operation] = [
                op
                for op in declared.values()
                if op.principal == principal and op.optional == optional
            ]
            needed = {op.iam_action for op in ops if (op.service, op.operation) in observed}
            missing = sorted(needed - shipped)
            assert not missing, f"{name} lacks actions the daemon calls: {missing}"
            if optional:
                # opt-in features this sweep did not switch on may hold more actions
                extra = sorted(shipped - {op.iam_action for op in ops})
            else:
                extra = sorted(shipped - needed)
            assert not extra, f"{name} grants actions the daemon never called: {extra}"


def test_base_policies_hold_no_write_actions() -> None:
    """Only opt-in features may change AWS; the reader and organizations roles only read."""
    read = ("Get", "List", "Describe", "BatchGet", "Search", "Lookup")
    for name in ("reader-policy.json", "organizations-policy.json"):
        for action in _policy_actions(name):
            verb = action.split(":", 1)[1]
            assert action == "apigateway:GET" or verb.startswith(read), f"{name}: {action}"
    # the hub only assumes roles and asks who it is
    assert _policy_actions("hub-policy.json") <= {"sts:AssumeRole", "sts:GetCallerIdentity"}
