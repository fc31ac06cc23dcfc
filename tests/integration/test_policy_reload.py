"""Policy reload on a running daemon: a valid file applies, an invalid one is rejected."""

from __future__ import annotations

from pathlib import Path

import yaml

from daemon.demo.estate import PRIMARY, seed_estate
from daemon.demo.moto_server import EmbeddedMoto

from .conftest import policy_for
from .harness import running_daemon, scrape, select, settings_for, value, wait_for, wait_for_sweeps


async def test_valid_reload_applies_and_invalid_reload_keeps_the_running_policy(
    moto: EmbeddedMoto, tmp_path: Path
) -> None:
    account = "888888888881"
    await seed_estate([account], [PRIMARY], only=["orders-api", "untraced"])
    path = policy_for([account], tmp_path, regions=[PRIMARY])
    settings = settings_for(path, reconciler={"interval_seconds": 1, "policy_poll_seconds": 0.1})
    target = {"aws_account_id": account, "aws_region": PRIMARY, "aws_service": "lambda"}
    async with running_daemon(settings) as daemon:
        first = await scrape(daemon)
        # the staleness alert measures in intervals: the configured one is exported
        assert value(first, "posture_reconcile_interval_seconds") == 1
        assert value(first, "posture_policy_last_reload_successful") == 1
        assert value(first, "posture_violations", **target, control="lambda-xray-active") == 1
        digest = daemon.policy.current.digest

        # a valid change (ConfigMap update): X-Ray tracing no longer required
        doc = yaml.safe_load(path.read_text())
        doc["controls"]["lambda-xray-active"] = {"enabled": False}
        path.write_text(yaml.safe_dump(doc))
        await wait_for(lambda: daemon.policy.current.digest != digest, 10, "reload")
        await wait_for_sweeps(daemon, 1)
        applied = await scrape(daemon)
        assert not select(applied, "posture_violations", **target, control="lambda-xray-active")
        assert value(applied, "posture_policy_reloads_total") == 1
        assert value(applied, "posture_policy_last_reload_successful") == 1
        new_digest = daemon.policy.current.digest
        assert select(applied, "posture_policy_info")[0][1]["digest"] == new_digest

        # an invalid change: rejected, counted, and the running policy stays
        good = path.read_text()
        path.write_text(path.read_text().replace("version: 1", "version: 1\nscope: nonsense"))
        await wait_for(
            lambda: daemon.registry.get_sample_value("posture_policy_reload_failures_total") == 1,
            10,
            "rejection",
        )
        await wait_for_sweeps(daemon, 1)
        rejected = await scrape(daemon)
        assert daemon.policy.current.digest == new_digest
        assert value(rejected, "posture_policy_reload_failures_total") == 1
        assert value(rejected, "posture_policy_reloads_total") == 1
        assert not select(rejected, "posture_violations", **target, control="lambda-xray-active")
        assert value(rejected, "posture_target_up", **target) == 1
        # the alert PosturePolicyReloadFailed reads this gauge: 0 while the file is rejected ...
        assert value(rejected, "posture_policy_last_reload_successful") == 0

        # ... and 1 again once the file is good, also when it is reverted to the running policy
        # (nothing new to apply, so neither counter nor load timestamp moves)
        path.write_text(good)
        await wait_for(
            lambda: daemon.registry.get_sample_value("posture_policy_last_reload_successful") == 1,
            10,
            "the reverted file",
        )
        assert daemon.policy.current.digest == new_digest
        assert daemon.registry.get_sample_value("posture_policy_reloads_total") == 1
