"""Shared fixtures. Integration and end-to-end tests talk to a real moto server over HTTP (never
in-process mocks): one server, with the demo shim, for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from daemon.demo.moto_server import EmbeddedMoto

# Fake credentials for simulated AWS; set before anything creates a botocore session.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)
for _var in [k for k in os.environ if k.startswith("POSTURE_")]:
    os.environ.pop(_var)
# moto is one local process, not AWS: the tests pace against raised quotas (x100) so sweeps are not
# slowed to Lambda's real 15/s. The pacing tests set their own rates (tests/unit/aws/test_pacing.py,
# tests/integration/test_scale.py). Daemons started as subprocesses inherit it.
os.environ["POSTURE_AWS__PACING__QUOTA_MULTIPLIER"] = "100"


@pytest.fixture(scope="session")
def moto() -> Iterator[EmbeddedMoto]:
    from daemon.demo.moto_server import EmbeddedMoto

    server = EmbeddedMoto()
    url = server.start()
    os.environ["AWS_ENDPOINT_URL"] = url
    yield server
    os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()
