"""A full read of one Lambda function: everything a snapshot holds (or restore compares).

Used by the exporter (with the target account's reader credentials) and by restore (to see what a
function looks like now, before and after). "Not found" answers mean "absent"; any other error
propagates: a snapshot is never written from a partial read.

The presigned code locations GetFunction returns are kept apart from the parts, never logged, and
used only to download the packages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.aws.api import AwsApi
from daemon.aws.errors import AwsError, ErrorKind
from daemon.export.document import referenced_versions
from daemon.model import lambdaconfig as lc

T = TypeVar("T")


@dataclass
class FunctionRead:
    parts: lc.FunctionParts
    # CodeSha256 -> presigned URL of the package (GetFunction Code.Location); secret-bearing
    code_locations: dict[str, str] = field(default_factory=dict, repr=False)
    image_uri: str | None = None
    resolved_image_uri: str | None = None
    last_modified: str | None = None


async def _absent(call: Awaitable[T]) -> T | None:
    try:
        return await call
    except AwsError as err:
        if err.kind is ErrorKind.NOT_FOUND:
            return None
        raise


async def region_mappings(api: AwsApi) -> list[dict[str, Any]]:
    """Every event source mapping of the account-region (one paginated listing)."""
    return await api.all_items("lambda", "list_event_source_mappings", "EventSourceMappings")


async def read_function(
    api: AwsApi,
    name: str,
    mappings: Sequence[dict[str, Any]],
    *,
    code_for: Sequence[str] | None = None,
) -> FunctionRead | None:
    """Read a function in full; None when it does not exist.

    `mappings` is the account-region's event source mapping listing. `code_for`: the qualifiers
    whose package locations to fetch ("$LATEST" and version numbers); None: $LATEST and every
    version the snapshot refers to.
    """
    got = await _absent(api.call("lambda", "get_function", FunctionName=name))
    if got is None:
        return None
    config = dict(got.get("Configuration") or {})
    code = got.get("Code") or {}
    versions = [
        v
        for v in await api.all_items(
            "lambda", "list_versions_by_function", "Versions", FunctionName=name
        )
        if str(v.get("Version")) != lc.LATEST
    ]
    policy = await _absent(api.call("lambda", "get_policy", FunctionName=name))
    aliases = await api.all_items("lambda", "list_aliases", "Aliases", FunctionName=name)
    url = await _absent(api.call("lambda", "get_function_url_config", FunctionName=name))
    csc = await _absent(api.call("lambda", "get_function_code_signing_config", FunctionName=name))
    invoke = await _absent(
        api.call("lambda", "get_function_event_invoke_config", FunctionName=name)
    )
    invoke_all = await api.all_items(
        "lambda",
        "list_function_event_invoke_configs",
        "FunctionEventInvokeConfigs",
        FunctionName=name,
    )
    provisioned: list[dict[str, Any]] = []
    if versions:  # $LATEST cannot have provisioned concurrency (as the collector reads it)
        provisioned = await api.all_items(
            "lambda",
            "list_provisioned_concurrency_configs",
            "ProvisionedConcurrencyConfigs",
            FunctionName=name,
        )
    alias_policies: dict[str, str | None] = {}
    alias_urls: dict[str, dict[str, Any] | None] = {}
    for alias in aliases:
        alias_name = str(alias.get("Name"))
        p = await _absent(api.call("lambda", "get_policy", FunctionName=name, Qualifier=alias_name))
        alias_policies[alias_name] = (p or {}).get("Policy")
        u = await _absent(
            api.call("lambda", "get_function_url_config", FunctionName=name, Qualifier=alias_name)
        )
        alias_urls[alias_name] = _same_url(u, url)
    parts = lc.FunctionParts(
        configuration=config,
        versions=tuple(versions),
        tags=got.get("Tags") or {},
        reserved_concurrency=(got.get("Concurrency") or {}).get("ReservedConcurrentExecutions"),
        policy=(policy or {}).get("Policy"),
        aliases=tuple(aliases),
        url=url,
        invoke_config=invoke,
        provisioned=tuple(provisioned),
        code_signing_config_arn=(csc or {}).get("CodeSigningConfigArn") or None,
        event_source_mappings=tuple(lc.mappings_of(mappings, name)),
        alias_policies=alias_policies,
        alias_urls=alias_urls,
        invoke_configs=tuple(invoke_all),
    )
    read = FunctionRead(
        parts,
        image_uri=code.get("ImageUri"),
        resolved_image_uri=code.get("ResolvedImageUri"),
        last_modified=config.get("LastModified"),
    )
    if code.get("Location") and config.get("CodeSha256"):
        read.code_locations[str(config["CodeSha256"])] = str(code["Location"])
    wanted = code_for
    if wanted is None:
        wanted = referenced_versions(lc.full_view(parts))
    by_version = {str(v.get("Version")): v for v in versions}
    for qualifier in wanted:
        v = by_version.get(qualifier)
        if v is None or str(v.get("CodeSha256")) in read.code_locations:
            continue
        got_v = await _absent(
            api.call("lambda", "get_function", FunctionName=name, Qualifier=qualifier)
        )
        location = ((got_v or {}).get("Code") or {}).get("Location")
        if location:
            read.code_locations[str(v.get("CodeSha256"))] = str(location)
    return read


def _same_url(
    alias_url: dict[str, Any] | None, unqualified: dict[str, Any] | None
) -> dict[str, Any] | None:
    """An alias's URL config, or None when the answer is the function's own (moto ignores the
    qualifier and returns the unqualified URL for every alias)."""
    if alias_url is None:
        return None
    if unqualified is not None and alias_url.get("FunctionArn") == unqualified.get("FunctionArn"):
        return None
    return alias_url
