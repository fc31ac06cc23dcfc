"""The execution-role cache stays bounded when roles churn (a new role name every deployment)."""

from __future__ import annotations

from typing import Any

from daemon.collectors import iam


class FakeApi:
    """What RoleReader uses of AwsApi: a role with no policies, for any name."""

    account_id = "111111111111"

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, service: str, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        return {"Role": {"RoleName": params["RoleName"]}}

    async def all_items(self, service: str, method: str, key: str, **params: Any) -> list[Any]:
        return []


async def test_expired_roles_are_forgotten_as_new_ones_arrive(monkeypatch: Any) -> None:
    clock = [1000.0]
    monkeypatch.setattr(iam.time, "time", lambda: clock[0])
    reader = iam.RoleReader(ttl_seconds=10)
    api: Any = FakeApi()
    for i in range(5000):
        await reader.role(api, f"arn:aws:iam::111111111111:role/deploy-{i}")
        clock[0] += 1  # one new role a second: each expires 5-10 s later (spread by ARN)
    assert len(reader._roles) <= 200
    # a cached role is served without a call while it is fresh, read again when it expired
    calls = api.calls
    await reader.role(api, "arn:aws:iam::111111111111:role/deploy-4999")
    assert api.calls == calls
    clock[0] += 11
    await reader.role(api, "arn:aws:iam::111111111111:role/deploy-4999")
    assert api.calls == calls + 1
