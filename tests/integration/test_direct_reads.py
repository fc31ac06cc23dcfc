"""Direct reads (daemon/aws/direct.py) answer what botocore's client answers, over HTTP to moto.

Each test compares a direct read with the same call made through the aiobotocore client, on the
same moto server: answers, errors, retries and metrics. The signature itself is compared with
botocore's signer in tests/unit/aws/test_sigv4.py (moto does not check Lambda's signatures).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.aws.api import AwsGateway
from daemon.aws.direct import eligible
from daemon.aws.errors import MALFORMED_RESPONSE, AwsError, ErrorKind
from daemon.config import AwsSettings
from daemon.demo.estate import PRIMARY, Seeder
from daemon.demo.moto_server import EmbeddedMoto
from daemon.metrics.health import HealthMetrics

from .faultproxy import FaultProxy, Malformed, Rewrite, ServerError, Throttle

ACCOUNT = "536363636363"  # this module's own account
ZIP = b"PK\x05\x06" + bytes(18)  # an empty zip archive


async def _seed() -> tuple[str, str]:
    """One function with every sub-resource the daemon reads, and one with none."""
    seeder = Seeder(ACCOUNT)
    creds = await seeder._credentials()
    async with seeder.client("iam", PRIMARY, **creds) as iam:
        try:
            role = (await iam.create_role(RoleName="direct", AssumeRolePolicyDocument="{}"))[
                "Role"
            ]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:
            role = (await iam.get_role(RoleName="direct"))["Role"]["Arn"]
    full, bare = "direct-full", "direct-bare"
    async with seeder.client("lambda", PRIMARY, **creds) as lam:
        try:
            await lam.get_function(FunctionName=full)
            return full, bare  # seeded by an earlier test of this module
        except lam.exceptions.ResourceNotFoundException:
            pass
        for name in (full, bare):
            await lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": ZIP},
                Tags={"team": "payments", "name with spaces": "a/b+c"},
                Publish=True,
            )
        await lam.add_permission(
            FunctionName=full,
            StatementId="public",
            Action="lambda:InvokeFunction",
            Principal="*",
        )
        await lam.create_function_url_config(FunctionName=full, AuthType="NONE")
        await lam.put_function_event_invoke_config(
            FunctionName=full, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=600
        )
        await lam.create_alias(FunctionName=full, Name="live", FunctionVersion="1")
        await lam.put_function_concurrency(FunctionName=full, ReservedConcurrentExecutions=3)
    return full, bare


@pytest.fixture
async def gateway(moto: EmbeddedMoto) -> AsyncIterator[AwsGateway]:
    gw = AwsGateway(AwsSettings(max_attempts=3), HealthMetrics(CollectorRegistry()))
    try:
        yield gw
    finally:
        await gw.close()


def _calls(full: str, bare: str) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in (
        full,
        bare,
        "no-such-function",
        f"arn:aws:lambda:{PRIMARY}:{ACCOUNT}:function:{full}",
    ):
        calls += [
            ("get_function", {"FunctionName": name}),
            ("get_function", {"FunctionName": name, "Qualifier": "1"}),
            ("get_policy", {"FunctionName": name}),
            ("get_function_url_config", {"FunctionName": name}),
            ("get_function_event_invoke_config", {"FunctionName": name}),
            ("list_aliases", {"FunctionName": name}),
            ("list_provisioned_concurrency_configs", {"FunctionName": name}),
            ("get_function_concurrency", {"FunctionName": name}),
        ]
    return [*calls, ("get_account_settings", {}), ("list_layers", {})]


async def _both(gateway: AwsGateway, method: str, params: dict[str, Any]) -> tuple[Any, Any]:
    """(direct, botocore): each an answer without ResponseMetadata, or (code, message, class)."""
    assert gateway.direct is not None
    out: list[Any] = []
    async with gateway.pool.client(ACCOUNT, PRIMARY, "lambda") as client:
        model = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[method])
        assert eligible(model), method
        for how in ("direct", "botocore"):
            try:
                if how == "direct":
                    answer = await gateway.direct.call(client, "lambda", model, dict(params))
                    assert answer is not None, "the direct path declined"
                else:
                    answer = await getattr(client, method)(**params)
            except client.exceptions.ClientError as exc:
                out.append((exc.response["Error"], type(exc).__name__))
            else:
                answer.pop("ResponseMetadata")
                code = answer.get("Code")
                if code and "Location" in code:
                    # a presigned URL, made anew for every request: the same kind of URL
                    location = code.pop("Location")
                    assert location.startswith("http") and "X-Amz-Signature=" in location
                out.append(answer)
    return out[0], out[1]


async def _retry_quota(gateway: AwsGateway) -> Any:
    """The retry quota of the pool's Lambda client (botocore's standard mode: one per client)."""
    async with gateway.pool.client(ACCOUNT, PRIMARY, "lambda") as client:
        handlers = client.meta.events._emitter._handlers.prefix_search(
            "after-call.lambda.GetPolicy"
        )
    (release,) = [h for h in handlers if getattr(h, "__name__", "") == "release_retry_quota"]
    return release.__self__._quota


async def test_direct_reads_answer_exactly_what_the_client_answers(gateway: AwsGateway) -> None:
    full, bare = await _seed()
    compared = 0
    for method, params in _calls(full, bare):
        direct, botocore = await _both(gateway, method, params)
        # moto stamps RevisionIds and timestamps when a resource changes, not when it is read
        assert direct == botocore, (method, params)
        compared += 1
    assert compared == 34
    # both kinds were compared: answers with every sub-resource, and modelled errors
    direct, _ = await _both(gateway, "get_function_url_config", {"FunctionName": full})
    assert direct["AuthType"] == "NONE"
    direct, _ = await _both(gateway, "get_function_event_invoke_config", {"FunctionName": full})
    assert type(direct["LastModified"]).__name__ == "datetime"  # parsed by botocore's parser
    missing, _ = await _both(gateway, "get_policy", {"FunctionName": bare})
    assert missing == (missing[0], "ResourceNotFoundException")
    assert missing[0]["Code"] == "ResourceNotFoundException"


async def test_api_calls_go_direct_and_count_every_attempt_as_the_client_does(
    moto: EmbeddedMoto, proxy: FaultProxy
) -> None:
    full, _ = await _seed()
    for direct_reads in (True, False):
        metrics = HealthMetrics(CollectorRegistry())
        gw = AwsGateway(AwsSettings(max_attempts=3, direct_reads=direct_reads), metrics)
        assert (gw.direct is not None) is direct_reads
        api = gw.api(ACCOUNT, PRIMARY)
        before = len(proxy.calls(account=ACCOUNT, operation="GetPolicy"))
        try:
            # two throttled answers, then the real one: botocore's retry handler decides, and the
            # attempt hook counts all three and tells the pacing (the bucket's rate halves)
            rule = proxy.add(Throttle(429), account=ACCOUNT, operation="GetPolicy", count=2)
            policy = await api.call("lambda", "get_policy", FunctionName=full)
            assert rule.hits == 2
            assert json.loads(policy["Policy"])["Statement"][0]["Sid"] == "public"
            assert "ResponseMetadata" not in policy
            assert metrics.api_requests.labels("lambda", "GetPolicy")._value.get() == 3
            assert (
                metrics.api_errors.labels(
                    "lambda", "GetPolicy", "TooManyRequestsException"
                )._value.get()
                == 2
            )
            assert metrics.api_throttles.labels(ACCOUNT, PRIMARY, "lambda")._value.get() == 2
            # botocore's retry quota: each retry borrowed 5, the answer gave back the last 5 (its
            # after-call handler), and every plain success gives back 1 until it is full again
            quota = await _retry_quota(gw)
            assert quota._available_capacity == quota._max_capacity - 5
            for _ in range(5):
                await api.call("lambda", "get_policy", FunctionName=full)
            assert quota._available_capacity == quota._max_capacity
            rates = {key[2]: b.rate for key, b in gw.pacer.buckets().items() if key[0] == ACCOUNT}
            assert rates["lambda-get-policy"] < 15 * 0.5, rates  # below its share of 15/s

            # a 500 on every attempt: the first and max_attempts retries (botocore's meaning),
            # then a transient AwsError
            rule = proxy.add(ServerError(500), account=ACCOUNT, operation="GetFunction", count=5)
            with pytest.raises(AwsError) as failed:
                await api.call("lambda", "get_function", FunctionName=full)
            assert rule.hits == 4
            assert failed.value.kind is ErrorKind.TRANSIENT
            assert metrics.api_requests.labels("lambda", "GetFunction")._value.get() == 4
            proxy.remove(rule)

            # a 200 whose body is not JSON is refused, counted once, never read as empty
            proxy.add(Malformed(), account=ACCOUNT, operation="ListAliases", count=1)
            with pytest.raises(AwsError) as malformed:
                await api.call("lambda", "list_aliases", FunctionName=full)
            assert malformed.value.code == MALFORMED_RESPONSE
            assert (
                metrics.api_errors.labels("lambda", "ListAliases", MALFORMED_RESPONSE)._value.get()
                == 1
            )

            # a modelled error: the same AwsError as through the client
            with pytest.raises(AwsError) as missing:
                await api.call("lambda", "get_function", FunctionName="no-such-function")
            assert missing.value.kind is ErrorKind.NOT_FOUND
            assert missing.value.code == "ResourceNotFoundException"
        finally:
            await gw.close()
        # on the wire: three GetPolicy requests (then the five above), each signed with the account's assumed-role
        # keys (the proxy tells the account from the signature's access key)
        seen = proxy.calls(account=ACCOUNT, operation="GetPolicy")[before:]
        outcomes = [r.outcome for r in seen]
        assert outcomes[:3] == [outcomes[0], outcomes[0], "forwarded"] != ["forwarded"] * 3
        assert outcomes[3:] == ["forwarded"] * 5


class Paging:
    """AWS's paging of ListFunctions in front of moto (which answers every function at once):
    each answer keeps `MaxItems` functions (50 by default) from the position its `Marker` says,
    and a `NextMarker` when more follow. Records the Marker of every request it answers."""

    def __init__(self) -> None:
        self.markers: list[str | None] = []

    def __call__(self, call: Any, document: Any) -> None:
        query = urllib.parse.parse_qs(call.query)
        marker = query.get("Marker", [None])[0]
        self.markers.append(marker)
        start, size = int(marker or 0), int(query.get("MaxItems", ["50"])[0])
        functions = sorted(document["Functions"], key=lambda f: f["FunctionName"])
        document["Functions"] = functions[start : start + size]
        document.pop("NextMarker", None)
        if start + size < len(functions):
            document["NextMarker"] = str(start + size)


async def _listing(
    gateway: AwsGateway, proxy: FaultProxy, **params: Any
) -> tuple[list[list[str]], list[str | None], int]:
    """Lists functions through `AwsApi.pages`: (names per page, the Marker of every ListFunctions
    request on the wire, the times botocore's `before-call` ran for it)."""
    paging = Paging()
    rule = proxy.add(Rewrite(paging), account=ACCOUNT, operation="ListFunctions")
    through_botocore = [0]

    def before_call(**_: Any) -> None:
        through_botocore[0] += 1

    async with gateway.pool.client(ACCOUNT, PRIMARY, "lambda") as client:
        client.meta.events.register("before-call.lambda.ListFunctions", before_call)
    api = gateway.api(ACCOUNT, PRIMARY)
    try:
        pages = [
            [f["FunctionName"] for f in page["Functions"]]
            async for page in api.pages("lambda", "list_functions", **params)
        ]
    finally:
        proxy.remove(rule)
    return pages, paging.markers, through_botocore[0]


def _flat(pages: list[list[str]]) -> list[str]:
    return [name for page in pages for name in page]


async def _seed_listing() -> None:
    """Five more functions, so a listing of two per page has four pages."""
    await _seed()
    seeder = Seeder(ACCOUNT)
    creds = await seeder._credentials()
    async with seeder.client("iam", PRIMARY, **creds) as iam:
        role = (await iam.get_role(RoleName="direct"))["Role"]["Arn"]
    async with seeder.client("lambda", PRIMARY, **creds) as lam:
        names = {f["FunctionName"] for f in (await lam.list_functions())["Functions"]}
        for i in range(5):
            if f"direct-page-{i}" not in names:
                await lam.create_function(
                    FunctionName=f"direct-page-{i}",
                    Runtime="python3.12",
                    Role=role,
                    Handler="app.handler",
                    Code={"ZipFile": ZIP},
                )


async def test_listings_page_directly_as_botocore_pages(
    moto: EmbeddedMoto, proxy: FaultProxy
) -> None:
    """The same pages, from the same requests on the wire (each page's Marker the previous
    page's NextMarker), with or without direct reads; only the direct one skips botocore's
    per-call pipeline. A PaginationConfig always goes through botocore's paginator."""
    await _seed_listing()
    seen: dict[bool, tuple[list[list[str]], list[str | None], int]] = {}
    for direct_reads in (True, False):
        gw = AwsGateway(AwsSettings(direct_reads=direct_reads), HealthMetrics(CollectorRegistry()))
        try:
            seen[direct_reads] = await _listing(gw, proxy, MaxItems=2)
            if direct_reads:
                # a page size for botocore's paginator: botocore's way, the same functions
                pages, markers, botocore_calls = await _listing(
                    gw, proxy, PaginationConfig={"PageSize": 3}
                )
                assert markers == [None, "3", "6"]
                assert botocore_calls == len(pages) == 3
                assert sorted(_flat(pages)) == sorted(_flat(seen[True][0]))
        finally:
            await gw.close()
    (pages, markers, botocore_calls), botocore = seen[True], seen[False]
    assert (pages, markers) == botocore[:2]
    assert botocore_calls == 0 and botocore[2] == 4
    assert markers == [None, "2", "4", "6"]
    names = _flat(pages)
    assert len(names) == len(set(names)) == 7 and [len(p) for p in pages] == [2, 2, 2, 1]


async def test_a_direct_listing_asks_again_for_the_page_whose_credentials_expired(
    moto: EmbeddedMoto, proxy: FaultProxy
) -> None:
    """The account's keys expire after the first page: AWS answers ExpiredToken, the role is
    assumed again, and the same page is asked for with the new keys; nothing is lost or listed
    twice."""
    await _seed_listing()
    gw = AwsGateway(AwsSettings(), HealthMetrics(CollectorRegistry()))
    assert gw.direct is not None
    paging = Paging()
    rule = proxy.add(Rewrite(paging), account=ACCOUNT, operation="ListFunctions")
    before = len(proxy.calls(account=ACCOUNT, operation="ListFunctions"))
    names: list[str] = []
    try:
        async for page in gw.api(ACCOUNT, PRIMARY).pages("lambda", "list_functions", MaxItems=2):
            names += [f["FunctionName"] for f in page["Functions"]]
            if len(paging.markers) == 1:
                assert proxy.expire_credentials(ACCOUNT) > 0
    finally:
        proxy.remove(rule)
        await gw.close()
    assert len(names) == len(set(names)) == 7
    outcomes = [r.outcome for r in proxy.calls(account=ACCOUNT, operation="ListFunctions")]
    assert outcomes[before:] == ["rewrite", "expired_token"] + ["rewrite"] * 3
    assert paging.markers == [None, "2", "4", "6"]  # the refused page, asked again


async def test_a_next_token_that_comes_back_unchanged_ends_the_listing_as_botocore_ends_it(
    moto: EmbeddedMoto, proxy: FaultProxy
) -> None:
    """Odd AWS data: every page says the same NextMarker. Both ways refuse the listing after the
    second page with the same error, instead of paging forever."""
    await _seed_listing()

    def same_marker(_call: Any, document: Any) -> None:
        document["NextMarker"] = "always-the-same"

    errors = {}
    for direct_reads in (True, False):
        gw = AwsGateway(AwsSettings(direct_reads=direct_reads), HealthMetrics(CollectorRegistry()))
        rule = proxy.add(Rewrite(same_marker), account=ACCOUNT, operation="ListFunctions")
        try:
            with pytest.raises(AwsError) as failed:
                async for _ in gw.api(ACCOUNT, PRIMARY).pages(
                    "lambda", "list_functions", MaxItems=2
                ):
                    pass
            assert rule.hits == 2
            errors[direct_reads] = (failed.value.kind, failed.value.code)
        finally:
            proxy.remove(rule)
            await gw.close()
    assert errors[True] == errors[False]
