"""The running policy, and its reload on SIGHUP or when the file changes.

Kubernetes updates a mounted ConfigMap by swapping a symlink, so the file is polled by content
digest rather than watched by inode. A valid new policy replaces the old one atomically and applies
from the next reconcile; an invalid one is logged, counted, and the old one stays.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.metrics.health import HealthMetrics
from daemon.policy.compiled import Policy
from daemon.policy.loader import LocatedProblem, PolicyError, load_policy

log = structlog.get_logger("posture.policy")


class PolicyHolder:
    def __init__(
        self,
        path: Path,
        policy: Policy,
        metrics: HealthMetrics | None = None,
        on_change: Callable[[Policy, Policy], None] | None = None,
    ) -> None:
        self.path = path
        self._policy = policy
        self._metrics = metrics
        self._digest = self._file_digest()
        self.on_change = on_change
        self._mark_loaded(policy)

    @property
    def current(self) -> Policy:
        return self._policy

    def _mark_loaded(self, policy: Policy) -> None:
        if self._metrics is not None:
            self._metrics.policy_last_reload.set(time.time())
            self._metrics.policy_reload_ok.set(1)
            self._metrics.policy_info.info({"source": policy.source, "digest": policy.digest})

    def _file_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def reload(self, reason: str) -> bool:
        """Try the file now. True if a new policy was applied."""
        digest = self._file_digest()
        try:
            new = load_policy(self.path)
        except Exception as exc:  # a reload must never take the watcher down
            if not isinstance(exc, PolicyError):
                exc = PolicyError(
                    str(self.path),
                    [LocatedProblem("(document)", None, f"{type(exc).__name__}: {exc}")],
                )
            self._digest = digest  # do not retry the same broken content on every poll
            if self._metrics is not None:
                self._metrics.policy_reload_failures.inc()
                self._metrics.policy_reload_ok.set(0)
            log.error(
                "policy reload rejected; keeping the running policy",
                reason=reason,
                source=exc.source,
                problems=[str(p) for p in exc.problems],
                running_digest=self._policy.digest,
            )
            return False
        self._digest = digest
        if new.digest == self._policy.digest:
            # back to the running policy (e.g. a rejected change reverted): the file is good again
            if self._metrics is not None:
                self._metrics.policy_reload_ok.set(1)
            return False
        old, self._policy = self._policy, new
        if self._metrics is not None:
            self._metrics.policy_reloads.inc()
        self._mark_loaded(new)
        log.info("policy reloaded", reason=reason, digest=new.digest, previous=old.digest)
        if self.on_change is not None:
            self.on_change(old, new)
        return True

    async def watch(self, interval: float, stop: asyncio.Event) -> None:
        """Poll the file for changes until stop is set (interval 0: only explicit reloads)."""
        if interval <= 0:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                if self._file_digest() != self._digest:
                    self.reload("file changed")
