"""Clients share what is the same for every (account, region) of a service -- and nothing else."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from daemon.aws.api import AwsGateway
from daemon.config import AwsSettings
from daemon.demo.estate import PRIMARY, SECONDARY, Seeder
from daemon.demo.moto_server import EmbeddedMoto
from daemon.metrics.health import HealthMetrics


def _tls_context(client: object) -> object:
    # aiobotocore keeps one aiohttp session per proxy URL (None: no proxy) inside the client's
    # HTTP session; its connector holds the TLS context every connection is wrapped with.
    sessions = client._endpoint.http_session._sessions  # type: ignore[attr-defined]
    return sessions[None].connector._ssl


ACCOUNTS = ("515151515151", "525252525252")  # this test's own accounts
REGIONS = (PRIMARY, SECONDARY)


async def test_clients_share_class_and_tls_context_but_not_identity(moto: EmbeddedMoto) -> None:
    for account in ACCOUNTS:
        seeder = Seeder(account)
        creds = await seeder._credentials()
        for region in REGIONS:
            async with seeder.client("lambda", region, **creds) as lam:
                await lam.publish_layer_version(
                    LayerName=f"own-{account}-{region}",
                    Content={"ZipFile": b"PK\x05\x06" + bytes(18)},
                )
    gateway = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    try:
        seen: dict[tuple[str, str], tuple[object, object, set[str]]] = {}
        models: set[int] = set()
        for account in ACCOUNTS:
            for region in REGIONS:
                async with gateway.pool.client(account, region, "lambda") as client:
                    page = await client.list_layers()
                    names = {layer["LayerName"] for layer in page["Layers"]}
                    seen[(account, region)] = (type(client), _tls_context(client), names)
                    models.add(id(client.meta.service_model))
        classes = {cls for cls, _, _ in seen.values()}
        contexts = {id(ctx) for _, ctx, _ in seen.values()}
        assert len(classes) == 1, "one client class per service"
        assert len(contexts) == 1, "one TLS context for every client"
        assert len(models) == 1, "one service model per service"
        # ... while every client still answers for its own account and region
        for (account, region), (_, _, names) in seen.items():
            assert names == {f"own-{account}-{region}"}
        async with gateway.pool.client(ACCOUNTS[0], PRIMARY, "ecr") as ecr:
            assert type(ecr) not in classes  # another service, another class
            assert id(ecr.meta.service_model) not in models
            assert hasattr(ecr, "describe_repositories")
            assert not hasattr(ecr, "list_functions")
    finally:
        await gateway.close()
