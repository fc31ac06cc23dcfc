"""KMS keys referenced by encrypted resources: one DescribeKey per distinct key per sweep."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.base import CollectContext, Operation
from daemon.collectors.cache import Lookups, digest
from daemon.model.kms import KmsKey

OPERATIONS = (Operation("kms", "DescribeKey", "kms:DescribeKey"),)


async def describe_keys(ctx: CollectContext, key_ids: Iterable[str]) -> dict[str, KmsKey | str]:
    """Each referenced key, or the error code when KMS would not say (denied, invalid).

    A key KMS does not know is an answer (`found=False`): a deleted key, or a placeholder.
    Throttling and 5xx propagate and fail the target, like every retryable error.
    """

    async def one(key_id: str) -> tuple[str, KmsKey | str]:
        try:
            resp = await ctx.api.call("kms", "describe_key", KeyId=key_id)
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return key_id, KmsKey(key_id, found=False)
            if err.kind.retryable:
                raise
            return key_id, err.code
        meta = resp.get("KeyMetadata") or {}
        return key_id, KmsKey(
            arn=key_id,
            key_manager=meta.get("KeyManager"),
            key_state=meta.get("KeyState"),
            key_arn=meta.get("Arn"),
        )

    wanted = sorted({k for k in key_ids if k})
    return dict(await ctx.gather(wanted, one))


async def cached_keys(
    ctx: CollectContext, lookups: Lookups, key_ids: Iterable[str]
) -> dict[str, KmsKey | str]:
    """`describe_keys` as an account-region lookup: read again when other keys are asked about,
    after a change event or on the rolling refresh; an answer with an error code is not cached."""
    wanted = sorted({k for k in key_ids if k})
    return await ctx.lookup(
        lookups,
        "kms-keys",
        lambda: describe_keys(ctx, wanted),
        key=digest(wanted),
        ok=lambda found: all(isinstance(k, KmsKey) for k in found.values()),
    )
