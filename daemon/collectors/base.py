"""What every collector shares: its context, the call policy, and the operation catalogue.

The call policy, in one place:
- "not found" is an answer (no policy, no URL): the value is None;
- denied, unsupported or rejected calls make that *aspect* of the resource unknown: the error is
  recorded on the resource and the controls that need it report `error`;
- throttling, 5xx, timeouts and expired credentials fail the whole target, so the reconciler backs
  off and keeps the last known results instead of publishing a half-seen estate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from daemon.aws.api import AwsApi
from daemon.aws.errors import AwsError, ErrorKind
from daemon.collectors.cache import Lookups
from daemon.model import CollectionIssue, Snapshot, Target
from daemon.model.awslambda import ConcurrencyWindow
from daemon.model.operations import Operation

__all__ = [  # Operation is defined with the model (daemon/aws declares operations too)
    "AspectErrors",
    "CollectContext",
    "Collector",
    "Operation",
    "absent_if_not_found",
    "first_error",
    "parse_timestamp",
]

T = TypeVar("T")


@dataclass
class CollectContext:
    """One reconcile's view of AWS: the target's regional API and the account's global one."""

    target: Target
    api: AwsApi  # the target's account and region
    global_api: AwsApi  # the target's account, in the region used for global services (IAM)
    now: dt.datetime
    concurrency: int = 8
    # what to ask CloudWatch about Lambda concurrency (the policy's `concurrency` section)
    concurrency_window: ConcurrencyWindow = field(default_factory=ConcurrencyWindow)
    issues: list[CollectionIssue] = field(default_factory=list)
    # The configuration export is on: read every part of a function's configuration, even parts
    # no enabled control needs (the export's fingerprint covers them all).
    export: bool = False
    # unix time each evaluated resource's cached detail was read (daemon/collectors/cache.py)
    fetched_at: list[float] = field(default_factory=list)

    # Controls of the target's service that the policy may run (None: all). Collectors use it to
    # skip costly reads that only a disabled (opt-in) control would need.
    enabled_controls: frozenset[str] | None = None

    def issue(self, resource: str, aspect: str, message: str) -> None:
        """Odd data that did not stop the sweep; the reconciler logs each distinct one once."""
        self.issues.append(CollectionIssue(resource, aspect, message))

    def served(self, fetched_at: float) -> None:
        """A resource's detail was used; it was read from AWS at `fetched_at` (unix seconds)."""
        self.fetched_at.append(fetched_at)

    async def lookup(
        self,
        lookups: Lookups,
        name: str,
        fetch: Callable[[], Awaitable[T]],
        *,
        key: Hashable = None,
        ok: Callable[[T], bool] | None = None,
        usable: Callable[[T], bool] | None = None,
    ) -> T:
        """An account-region lookup of the target, cached in `lookups` (see Lookups.read); its
        age counts in the target's data age like a cached detail's."""
        t = self.target
        value, fetched_at = await lookups.read(
            (t.account_id, t.region),
            name,
            self.now.timestamp(),
            fetch,
            key=key,
            ok=ok or (lambda _: True),
            usable=usable or (lambda _: True),
        )
        self.served(fetched_at)
        return value

    def wants(self, control_id: str) -> bool:
        """Whether the policy may run this control on the target (so its data is worth reading)."""
        return self.enabled_controls is None or control_id in self.enabled_controls

    async def gather(self, items: Iterable[T], fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """Run fn over items, `concurrency` at a time; the first failure cancels the rest."""
        sem = asyncio.Semaphore(self.concurrency)

        async def one(item: T) -> Any:
            async with sem:
                return await fn(item)

        return await concurrently(*(one(item) for item in items))


async def concurrently(*calls: Awaitable[Any]) -> list[Any]:
    """Await independent calls at once, results in order; the first failure cancels the others
    and is raised as itself (an AwsError, not a group). For the account-region lookups of a
    target, which would otherwise each wait for the one before."""

    async def run(call: Awaitable[Any]) -> Any:
        return await call

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run(call)) for call in calls]
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return [t.result() for t in tasks]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group (so callers see an AwsError, not a group)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group


class AspectErrors:
    """Collects the per-aspect errors of one resource."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    async def fetch(self, aspect: str, call: Awaitable[T]) -> T | None:
        """Await an AWS call for one aspect; None for "not found" or for a recorded error."""
        try:
            return await call
        except AwsError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return None
            if err.kind.retryable:
                raise
            self.errors[aspect] = err.code
            return None

    def fail(self, aspect: str, code: str) -> None:
        self.errors[aspect] = code


async def absent_if_not_found(call: Awaitable[T]) -> T | None:
    """Await a call whose "not found" answer means the thing is absent; other errors propagate."""
    try:
        return await call
    except AwsError as err:
        if err.kind is ErrorKind.NOT_FOUND:
            return None
        raise


def parse_timestamp(value: Any) -> dt.datetime | None:
    """AWS timestamps come as datetimes or as ISO strings in several spellings."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).strip()
    try:
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # "2019-10-25T14:21:12.520+0000" -> "+00:00"; nanoseconds -> microseconds
        if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
            text = text[:-2] + ":" + text[-2:]
        if "." in text:
            head, _, rest = text.partition(".")
            digits = "".join(ch for ch in rest if ch.isdigit())
            tz = rest[len(digits) :]
            text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class Collector(Protocol):
    service: str
    operations: tuple[Operation, ...]

    async def collect(self, ctx: CollectContext) -> Snapshot: ...
