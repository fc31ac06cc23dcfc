"""Clients share what is the same for every (account, region) of a service -- and nothing else."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref

import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.parsers import ResponseParser
from prometheus_client import CollectorRegistry

from daemon.aws.api import AwsGateway
from daemon.aws.clients import PARSERS, USER_AGENT
from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.registry import declared_operations
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


async def test_requests_name_the_daemon_in_their_user_agent(moto: EmbeddedMoto) -> None:
    # what goes on the wire (before-send sees the signed, final request): CloudTrail records this
    # string as the call's userAgent, so an account's owners can tell the daemon's calls apart
    gateway = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    sent: list[str] = []

    def capture(request: AWSPreparedRequest, **_: object) -> None:
        sent.append(request.headers["User-Agent"].decode())

    try:
        async with gateway.pool.client(ACCOUNTS[0], PRIMARY, "lambda") as client:
            client.meta.events.register("before-send.lambda", capture)
            try:
                await client.list_functions()
                await client.get_account_settings()
            finally:
                client.meta.events.unregister("before-send.lambda", capture)
    finally:
        await gateway.close()
    assert len(sent) == 2 and sent[0] == sent[1]
    assert re.fullmatch(r"posture-daemon/\S+ botocore/\d+\.\d+\.\d+", sent[0]), sent[0]
    assert sent[0].startswith(USER_AGENT + " ")
    assert gateway.sessions._sts_config.user_agent == USER_AGENT  # AssumeRole says it too


async def test_calls_share_one_parser_per_protocol_and_leave_no_cyclic_garbage(
    moto: EmbeddedMoto,
) -> None:
    """botocore made a parser per response, each referring to itself through bound methods:
    garbage only the cyclic collector frees, behind every call. The pool's clients share one
    parser per protocol (SharedParserFactory), answers and errors parse as before, and calls
    leave no parser for the collector."""
    gateway = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    api = gateway.api(ACCOUNTS[0], PRIMARY)
    try:
        await api.call("lambda", "get_account_settings")  # clients made, parsers made
        await api.call("ecr", "describe_repositories")
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                settings = await api.call("lambda", "get_account_settings")  # rest-json
                assert "AccountLimit" in settings and "ResponseMetadata" not in settings
                repos = await api.call("ecr", "describe_repositories")  # json
                assert isinstance(repos["repositories"], list)
                with pytest.raises(AwsError) as missing:  # an error answer, parsed
                    await api.call("lambda", "get_policy", FunctionName="no-such-function")
                assert missing.value.kind is ErrorKind.NOT_FOUND
            gc.collect()
            parsers = [o for o in gc.garbage if isinstance(o, ResponseParser)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert parsers == []
        async with gateway.pool.client(ACCOUNTS[0], PRIMARY, "lambda") as lam:
            factory = lam._endpoint._response_parser_factory
        assert factory is PARSERS
        assert factory.create_parser("rest-json") is factory.create_parser("rest-json")
        assert factory.create_parser("json") is not factory.create_parser("rest-json")
    finally:
        await gateway.close()


async def test_a_client_makes_each_paginator_once(moto: EmbeddedMoto) -> None:
    gateway = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    api = gateway.api(ACCOUNTS[1], PRIMARY)
    try:
        listed = [await api.all_items("lambda", "list_layers", "Layers") for _ in range(2)]
        assert listed[0] == listed[1]
        pool = gateway.pool
        async with pool.paginator(ACCOUNTS[1], PRIMARY, "lambda", "list_layers") as (_, first):
            pass
        async with pool.paginator(ACCOUNTS[1], PRIMARY, "lambda", "list_layers") as (_, again):
            pass
        async with pool.paginator(ACCOUNTS[1], PRIMARY, "lambda", "list_functions") as (_, other):
            pass
        assert first is again
        assert other is not first
    finally:
        await gateway.close()


async def test_a_small_pool_never_closes_a_client_under_its_caller(moto: EmbeddedMoto) -> None:
    """More clients in use than the cap: eviction closes only idle clients, including while a
    new client is being made and other clients are closing (each await lets another task evict).
    Before the fix, a just-made client could be evicted before its caller marked it in use, and
    the caller's call failed with the closed session's error."""
    gateway = AwsGateway(AwsSettings(max_open_clients=8), HealthMetrics(CollectorRegistry()))
    services = ("lambda", "ecr", "ecs", "rds", "logs", "kms")
    calls = {
        "lambda": "get_account_settings",
        "ecr": "describe_repositories",
        "ecs": "list_clusters",
        "rds": "describe_db_instances",
        "logs": "describe_log_groups",
        "kms": "list_keys",
    }

    async def one(account: str, region: str, service: str) -> str:
        await gateway.api(account, region).call(service, calls[service])
        return service

    try:
        for _ in range(3):
            done = await asyncio.gather(
                *(
                    one(account, region, service)
                    for account in ACCOUNTS
                    for region in REGIONS
                    for service in services
                ),
                return_exceptions=True,
            )
            failed = [d for d in done if isinstance(d, BaseException)]
            assert failed == [], failed[:3]
            assert len(done) == len(ACCOUNTS) * len(REGIONS) * len(services)
        assert gateway.pool.open_clients <= 8  # idle again: the cap holds
    finally:
        await gateway.close()


async def test_trimmed_models_serve_the_daemons_calls_and_leave_other_sessions_whole(
    moto: EmbeddedMoto,
) -> None:
    """The daemon's gateway loads models cut down to its declared operations; a call through
    them is serialised and parsed as before (answers, paging, errors). Clients of whole models
    in the same process (the demo's seeder, the restore command) keep every operation: the
    process-wide model and class caches tell the two apart."""
    trimmed = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()), declared_operations())
    whole = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    try:
        api = trimmed.api(ACCOUNTS[0], PRIMARY)
        functions = await api.all_items("lambda", "list_functions", "Functions")
        assert isinstance(functions, list)
        settings = await api.call("lambda", "get_account_settings")
        assert settings["AccountLimit"]["ConcurrentExecutions"] > 0
        with pytest.raises(AwsError) as missing:
            await api.call("lambda", "get_policy", FunctionName="no-such-function")
        assert missing.value.kind is ErrorKind.NOT_FOUND
        async with trimmed.pool.client(ACCOUNTS[0], PRIMARY, "lambda") as lam:
            assert hasattr(lam, "get_function") and not hasattr(lam, "create_function")
            trimmed_ops = set(lam.meta.service_model.operation_names)
        async with whole.pool.client(ACCOUNTS[0], PRIMARY, "lambda") as lam:
            assert hasattr(lam, "create_function")
            assert set(lam.meta.service_model.operation_names) > trimmed_ops
    finally:
        await trimmed.close()
        await whole.close()


async def test_a_gateways_service_models_go_with_it(moto: EmbeddedMoto) -> None:
    """The process-wide model cache is keyed by loader, one per gateway: it must not keep a
    dropped gateway's loader (its parsed files) and models alive."""
    gateway = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()), declared_operations())
    await gateway.api(ACCOUNTS[0], PRIMARY).call("lambda", "get_account_settings")
    loader = weakref.ref(gateway.sessions._loader)
    await gateway.close()
    del gateway
    gc.collect()
    assert loader() is None
