"""Target discovery against moto: AWS Organizations, `regions: all`, and sharding."""

from __future__ import annotations

from pathlib import Path

import yaml
from aiobotocore.session import get_session

from daemon.app import Daemon
from daemon.demo.estate import PRIMARY
from daemon.demo.moto_server import EmbeddedMoto
from daemon.policy import load_policy
from daemon.reconciler.sharding import shard_of

from .conftest import organization, policy_for
from .harness import settings_for


async def test_organizations_discovery_with_include_exclude(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    accounts = await organization()
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "scope": {
                    "accounts": {
                        "organizations": {"enabled": True, "exclude": ["gamma", "master"]}
                    },
                    "regions": [PRIMARY],
                },
            }
        )
    )
    daemon = Daemon(settings_for(path), load_policy(path))
    outcomes = await daemon.check()
    assert {o.target.account_id for o in outcomes} == {accounts["alpha"], accounts["beta"]}
    assert all(o.result is not None for o in outcomes)
    view = daemon.store.view()
    assert view.account_names == {accounts["alpha"]: "alpha", accounts["beta"]: "beta"}
    # empty accounts still get the region-wide controls evaluated (and failing: no trail)
    findings = [f for o in outcomes if o.result for f in o.result.findings]
    assert {f.control for f in findings if f.status.value == "fail"} == {
        "lambda-config-recording",
        "lambda-cloudtrail-management-events",
    }
    # an idle account-region at AWS's default limit has its whole limit as headroom; with no
    # functions, the size of the unreserved pool does not apply
    assert {f.control for f in findings if f.status.value == "pass"} == {
        "lambda-concurrency-headroom",
        "lambda-reserved-concurrency-fraction",
    }


async def test_regions_all_uses_the_regions_enabled_for_the_account(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "999999999991"
    async with get_session().create_client("ec2", region_name=PRIMARY) as ec2:
        enabled = {
            r["RegionName"]
            for r in (await ec2.describe_regions())["Regions"]
            if r.get("OptInStatus") != "not-opted-in"
        }
    path = policy_for([account], tmp_path, regions="all")
    daemon = Daemon(settings_for(path), load_policy(path))
    try:
        await daemon.reconciler.refresh_targets()
    finally:
        await daemon.gateway.close()
    assert {t.region for t in daemon.reconciler.targets} == enabled
    assert len(enabled) > 10


async def test_shards_split_accounts_without_overlap_or_loss(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    accounts = [f"10000000{i:04d}" for i in range(40)]
    path = policy_for(accounts, tmp_path, regions=[PRIMARY])
    policy = load_policy(path)
    owned: list[set[str]] = []
    for index in range(3):
        daemon = Daemon(settings_for(path, shard={"count": 3, "index": index}), policy)
        await daemon.reconciler.refresh_targets()  # static accounts, explicit regions: no AWS calls
        owned.append({t.account_id for t in daemon.reconciler.targets})
        assert owned[-1] == {a for a in accounts if shard_of(a, 3) == index}
        assert daemon.registry.get_sample_value("posture_shard_ordinal") == index
    assert set().union(*owned) == set(accounts)
    assert sum(len(o) for o in owned) == len(accounts)
    assert all(len(o) >= 6 for o in owned)  # each replica does a share

    pod = Daemon(settings_for(path, shard={"count": 3, "pod_name": "posture-daemon-2"}), policy)
    await pod.reconciler.refresh_targets()
    assert {t.account_id for t in pod.reconciler.targets} == owned[2]
