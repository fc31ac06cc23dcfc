"""The direct path signs with the credentials botocore would sign with, asking botocore's refresh
check only when the answer can have changed (daemon/aws/direct.py, `Frozen`)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from aiobotocore.credentials import AioCredentials, AioRefreshableCredentials

from daemon.aws import direct
from daemon.aws.direct import Frozen

ADVISORY = AioRefreshableCredentials._advisory_refresh_timeout  # botocore: 15 minutes


class Counted(AioRefreshableCredentials):  # type: ignore[misc]
    """botocore's refreshable credentials, counting its own refresh checks."""

    checks = 0

    async def get_frozen_credentials(self) -> Any:
        self.checks += 1
        return await super().get_frozen_credentials()


def _credentials(expires_in: float, renewals: list[int]) -> Counted:
    """Credentials expiring in `expires_in` s; each renewal (counted) is valid for an hour."""

    def metadata(n: int, seconds: float) -> dict[str, str]:
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        return {
            "access_key": f"AKIA{n}",
            "secret_key": f"secret{n}",
            "token": f"token{n}",
            "expiry_time": expiry.isoformat(),
        }

    async def renew() -> dict[str, str]:
        renewals.append(1)
        return metadata(len(renewals), 3600)

    return Counted.create_from_metadata(metadata(0, expires_in), renew, "test")  # type: ignore[no-any-return]


async def test_far_from_expiry_botocore_is_asked_once() -> None:
    renewals: list[int] = []
    creds = _credentials(3600, renewals)
    frozen = Frozen()
    answers = [await frozen.get(creds) for _ in range(50)]
    assert creds.checks == 1
    assert renewals == []
    assert {(a.access_key, a.secret_key, a.token) for a in answers} == {
        ("AKIA0", "secret0", "token0")
    }


async def test_an_invalidated_expiry_is_seen_at_the_next_call() -> None:
    """`Sessions.invalidate` puts an expiry in the past after an ExpiredToken answer: the next
    signature uses renewed credentials."""
    renewals: list[int] = []
    creds = _credentials(3600, renewals)
    frozen = Frozen()
    assert (await frozen.get(creds)).access_key == "AKIA0"
    creds._expiry_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # as invalidate does
    assert (await frozen.get(creds)).access_key == "AKIA1"
    assert renewals == [1]
    assert (await frozen.get(creds)).access_key == "AKIA1"
    assert creds.checks == 2  # the renewed ones are again far from expiry


async def test_a_renewal_by_another_caller_is_seen() -> None:
    """botocore's own path (paginated calls on the same client) may renew the credentials: a
    new expiry object sends the next call to botocore's check."""
    renewals: list[int] = []
    creds = _credentials(3600, renewals)
    frozen = Frozen()
    await frozen.get(creds)
    creds._expiry_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await creds.get_frozen_credentials()  # botocore's path renews
    assert renewals == [1] and creds.checks == 2
    assert (await frozen.get(creds)).access_key == "AKIA1"
    assert creds.checks == 3  # a new expiry: botocore's check once more
    await frozen.get(creds)
    assert creds.checks == 3


async def test_within_the_refresh_time_every_call_asks_botocore() -> None:
    """Credentials that already are within botocore's advisory refresh time: botocore decides
    (here it renews on the first call, after which they are far from expiry again)."""
    renewals: list[int] = []
    creds = _credentials(ADVISORY - 60, renewals)
    frozen = Frozen()
    assert (await frozen.get(creds)).access_key == "AKIA1"
    assert renewals == [1]
    await frozen.get(creds)
    assert creds.checks == 1


async def test_botocore_is_asked_again_when_the_time_left_runs_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A minute before the advisory refresh time: served from what botocore returned for that
    minute (on the monotonic clock), then botocore's check again, which renews."""
    renewals: list[int] = []
    creds = _credentials(ADVISORY + 60, renewals)
    clock = [1_000.0]  # the direct path's monotonic clock
    monkeypatch.setattr(direct, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    wall = dt.datetime.now(dt.UTC)
    creds._time_fetcher = lambda: wall + dt.timedelta(seconds=clock[0] - 1_000.0)
    frozen = Frozen()
    await frozen.get(creds)
    clock[0] += 55
    await frozen.get(creds)
    assert creds.checks == 1 and renewals == []
    clock[0] += 10  # past the advisory refresh time: botocore renews
    assert (await frozen.get(creds)).access_key == "AKIA1"
    assert creds.checks == 2 and renewals == [1]


async def test_static_credentials_always_go_through_botocore() -> None:
    creds = AioCredentials("AKIAS", "static-secret")
    frozen = Frozen()
    for _ in range(3):
        answer = await frozen.get(creds)
        assert (answer.access_key, answer.secret_key, answer.token) == (
            "AKIAS",
            "static-secret",
            None,
        )
    assert len(frozen._seen) == 0
