"""Daemon settings: environment variables (POSTURE_..., nested with __) and an optional YAML file.

Settings say how the daemon runs (ports, intervals, credentials); the policy file says what it
checks. Settings are frozen; a reload builds a new instance.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from daemon.aws.pacing import QUOTAS

ENV_PREFIX = "POSTURE_"
CONFIG_FILE_ENV = "POSTURE_CONFIG_FILE"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(Section):
    host: str = Field(
        default="0.0.0.0", description="Address to serve /metrics, /livez, /readyz on."
    )
    port: int = Field(default=9717, ge=0, le=65535, description="HTTP port (0: any free port).")
    web_config_file: Path | None = Field(
        default=None,
        description="TLS and basic auth for the endpoints, in the Prometheus exporter web config "
        "format (tls_server_config, basic_auth_users); off when unset. See README, Operations.",
    )


class ListenError(Exception):
    """The HTTP server cannot listen on its address: the port is taken, not permitted, or the host
    is not an address of this machine. One line, with the address and the system's reason. Raised
    by daemon/server.py; defined here, beside HttpSettings, so the CLI reports it without loading
    aiohttp."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        if error.errno and not isinstance(error, socket.gaierror):
            reason = os.strerror(error.errno)  # asyncio's message wraps it in its own words
        else:
            reason = error.strerror or str(error)
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise."
    )


def _quota_table() -> str:
    return "; ".join(f"{name} {q.rate:g}/s" for name, q in QUOTAS.items())


class PacingSettings(Section):
    """How fast the daemon may call AWS, per account, region and quota bucket."""

    enabled: bool = Field(
        default=True,
        description="Pace every AWS call with a token bucket per (account, region, quota "
        "bucket), lowered on throttling (AIMD). Off: only botocore's retries slow the daemon.",
    )
    share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of each AWS quota the daemon may use; the rest is left to the "
        "account's own deployments and tooling.",
    )
    quotas: dict[str, float] = Field(
        default_factory=dict,
        description="Quota overrides in requests/s per account and region, by bucket (e.g. "
        '{"ecr": 50}). Defaults: ' + _quota_table() + ". See docs/architecture.md, Pacing.",
    )
    quota_multiplier: float = Field(
        default=1,
        gt=0,
        description="Multiplies every quota. For simulated AWS only (the demo and the tests run "
        "moto with raised quotas); real Lambda quotas cannot be raised.",
    )

    @model_validator(mode="after")
    def _known_buckets(self) -> PacingSettings:
        unknown = sorted(set(self.quotas) - set(QUOTAS))
        if unknown:
            raise ValueError(
                f"unknown quota bucket(s) {', '.join(unknown)}; known: {', '.join(QUOTAS)}"
            )
        if any(v <= 0 for v in self.quotas.values()):
            raise ValueError("quotas must be positive")
        return self

    def rates(self) -> dict[str, float]:
        """The quota of every bucket (requests/s, before `share`)."""
        base = {name: q.rate for name, q in QUOTAS.items()} | self.quotas
        return {name: rate * self.quota_multiplier for name, rate in base.items()}


class AwsSettings(Section):
    role_name: str = Field(
        default="PostureDaemonReader",
        pattern=r"^[A-Za-z0-9_+=,.@/-]+$",
        max_length=512,
        description="Role assumed in each member account.",
    )
    external_id: SecretStr | None = Field(default=None, description="ExternalId for AssumeRole.")
    assume_role_duration_seconds: int = Field(
        default=3600, ge=900, le=43200, description="Lifetime of assumed-role credentials."
    )
    organizations_role_arn: str | None = Field(
        default=None,
        description="Role to assume for organizations:ListAccounts when the daemon does not run in "
        "the management or delegated administrator account.",
    )
    region: str = Field(
        default_factory=lambda: (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        ),
        description="Region for global calls (STS, IAM, Organizations, region discovery).",
    )
    max_inflight_per_account: int = Field(
        default=10, ge=1, le=200, description="AWS calls in flight at once per account."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Retries per call after its first attempt (botocore's `max_attempts`: 5 "
        "means up to 6 requests), in botocore's standard retry mode: exponential backoff with "
        "jitter; the pacing's buckets own the rate.",
    )
    connect_timeout_seconds: float = Field(default=5, gt=0, description="TCP connect timeout.")
    read_timeout_seconds: float = Field(default=20, gt=0, description="Socket read timeout.")
    call_timeout_seconds: float = Field(
        default=90, gt=0, description="Deadline for one call including its retries."
    )
    max_pool_connections: int = Field(
        default=20, ge=1, description="HTTP connections per AWS client."
    )
    max_open_clients: int = Field(
        default=1024,
        ge=8,
        description="Idle AWS clients beyond this are closed (LRU). A client holds ~130 Python "
        "objects (~25 KB) and its keep-alive connections; re-creating one costs ~1 ms of CPU and "
        "new connections. The daemon uses one per (account, region, service) it reads: about "
        "11 per account-region plus one IAM client per account.",
    )
    direct_reads: bool = Field(
        default=True,
        description="Send REST-JSON GETs (Lambda's reads) without botocore's per-call pipeline: "
        "the same request, signature, transport, parser and retries, about a quarter less CPU "
        "per call (daemon/aws/direct.py). false sends every call through botocore's client.",
    )
    pacing: PacingSettings = PacingSettings()


class ReconcilerSettings(Section):
    interval_seconds: float = Field(
        default=60,
        ge=1,
        description="Time between sweeps of a target. A sweep reads the listings (a change they "
        "show is a metric within one interval) and GetAccountSettings; per-resource details and "
        "account-region lookups come from the cache until a change or max_data_age, so a shorter "
        "interval adds list calls, not detail calls.",
    )
    jitter_fraction: float = Field(
        default=0.1, ge=0, le=0.5, description="Random spread of the interval (0.1: +/-10%)."
    )
    workers: int = Field(
        default=32,
        ge=1,
        le=256,
        description="Targets reconciled at once. Each waits mostly on AWS (and its pacing), so "
        "workers bound how many targets one interval can cover: ~0.3 s for an empty region, "
        "seconds for a large one; watch posture_workqueue_longest_wait_seconds against the "
        "interval.",
    )
    per_target_concurrency: int = Field(
        default=8, ge=1, le=64, description="Per-resource detail fetches in flight per target."
    )
    backoff_base_seconds: float = Field(
        default=5, gt=0, description="First retry delay after a failed reconcile (doubles)."
    )
    backoff_max_seconds: float = Field(default=600, gt=0, description="Longest retry delay.")
    max_data_age_seconds: float = Field(
        default=3600,
        ge=0,
        description="Per-resource details (policies, URLs, aliases, repository policies...) are "
        "cached and re-read when the list calls show a change, and at the latest after this "
        "long (spread evenly over the sweeps); 0: re-read everything every sweep.",
    )
    cloudwatch_interval_seconds: float = Field(
        default=300,
        ge=0,
        description="CloudWatch GetMetricData (Lambda concurrency peaks and throttles) is billed "
        "per metric requested: asked at most this often per account-region, the last answer "
        "served in between (its age counts in the data age); 0: every sweep.",
    )
    target_timeout_seconds: float = Field(
        default=600, gt=0, description="Deadline for one reconcile."
    )
    discovery_interval_seconds: float = Field(
        default=600, ge=5, description="How often accounts and regions are rediscovered."
    )
    policy_poll_seconds: float = Field(
        default=5,
        ge=0,
        description="How often to check the policy file for changes (0: only SIGHUP).",
    )
    shutdown_grace_seconds: float = Field(
        default=20, ge=0, description="Time in-flight reconciles get to finish on SIGTERM."
    )


class ShardSettings(Section):
    count: int = Field(default=1, ge=1, le=1024, description="Replicas sharing the accounts.")
    index: int | None = Field(default=None, ge=0, description="This replica's shard (0-based).")
    pod_name: str | None = Field(
        default=None,
        description="StatefulSet pod name; its ordinal suffix (-N) is the shard index when index "
        "is not set.",
    )

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardSettings:
        idx = self.resolved_index
        if not 0 <= idx < self.count:
            raise ValueError(f"shard index {idx} is outside 0..{self.count - 1}")
        return self

    @property
    def resolved_index(self) -> int:
        if self.index is not None:
            return self.index
        if self.pod_name:
            m = re.search(r"-(\d+)$", self.pod_name)
            if m is None:
                raise ValueError(f"pod name {self.pod_name!r} has no ordinal suffix")
            return int(m.group(1))
        return 0


class MetricsSettings(Section):
    resource_series: bool = Field(
        default=True, description="Export posture_resource_violation (one series per resource)."
    )
    resource_series_limit: int = Field(
        default=10000, ge=0, description="Most posture_resource_violation series per scrape."
    )


_BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]+$"


class ExportSettings(Section):
    """Configuration backup of Lambda functions to S3 (the daemon's only writer; off by default)."""

    enabled: bool = Field(
        default=False,
        description="Export a snapshot of every Lambda function in scope to S3 when it changes. "
        "Off: the daemon makes no write call at all.",
    )
    bucket: str | None = Field(
        default=None, pattern=_BUCKET_NAME, description="S3 bucket for the snapshots."
    )
    prefix: str = Field(
        default="posture-daemon/lambda",
        pattern=r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
        max_length=256,
        description="Key prefix in the bucket (no leading or trailing slash; may be empty).",
    )
    bucket_region: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$",
        description="Region of the bucket (default: POSTURE_AWS__REGION).",
    )
    role_arn: str | None = Field(
        default=None,
        pattern=_ROLE_ARN,
        description="Role to assume for the bucket and KMS (e.g. in a backup account); unset: the "
        "daemon's own credentials.",
    )
    kms_key_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="KMS key (ARN, alias ARN or id in the bucket's account and region) that "
        "encrypts environment variable values; required with include_env_values.",
    )
    include_env_values: bool = Field(
        default=False,
        description="Export environment variable values, each encrypted with kms_key_id (never in "
        "plaintext). Off: names only.",
    )
    include_code: bool = Field(
        default=True,
        description="Export the deployment package of $LATEST and of every version an alias, "
        "provisioned concurrency, invoke config or trigger refers to.",
    )
    max_code_bytes: int = Field(
        default=262_144_000,
        ge=0,
        description="Largest deployment package exported; a larger one is recorded as missing.",
    )
    keep_last: int | None = Field(
        default=30,
        ge=1,
        description="Retention: keep at least the newest N snapshots per function (unset: no "
        "count rule).",
    )
    max_age_days: float | None = Field(
        default=None,
        gt=0,
        description="Retention: keep snapshots newer than this (unset: no age rule). A snapshot is "
        "kept when any rule keeps it; the newest valid one of a function is never deleted.",
    )
    full_check_hours: float = Field(
        default=24,
        ge=0,
        description="Re-read every function in full this often (staggered) to catch changes that "
        "do not alter what a sweep reads (alias permissions, URLs, invoke configs); 0: never.",
    )
    claim_timeout_seconds: float = Field(
        default=900,
        ge=30,
        description="After this, an unfinished snapshot (a writer died) may be taken over, and "
        "retention may delete objects no manifest refers to.",
    )
    restore_role_name: str = Field(
        default="PostureDaemonRestore",
        pattern=r"^[A-Za-z0-9_+=,.@/-]+$",
        max_length=512,
        description="Role `restore` assumes in a target account other than its own.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExportSettings:
        if self.enabled and not self.bucket:
            raise ValueError("export is enabled without a bucket (set POSTURE_EXPORT__BUCKET)")
        if self.include_env_values and not self.kms_key_id:
            raise ValueError(
                "include_env_values needs kms_key_id: values are only ever exported encrypted"
            )
        return self


class EventsSettings(Section):
    """The event-driven fast path: change events from SQS trigger an immediate reconcile."""

    enabled: bool = Field(
        default=False,
        description="Read change events (CloudTrail management events of Lambda, ECR, ECS and RDS, "
        "forwarded by EventBridge; deploy/events/) from queue_url and reconcile the target of "
        "each at once, its cached details of that resource forgotten.",
    )
    queue_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$",
        description="The SQS queue URL (read with the daemon's own credentials).",
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$",
        description="Region of the queue (default: POSTURE_AWS__REGION).",
    )
    wait_seconds: int = Field(
        default=10,
        ge=0,
        le=20,
        description="SQS long-poll wait; kept below POSTURE_AWS__READ_TIMEOUT_SECONDS.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> EventsSettings:
        if self.enabled and not self.queue_url:
            raise ValueError("events are enabled without a queue (set POSTURE_EVENTS__QUEUE_URL)")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    policy_file: Path = Field(
        default=Path("/etc/posture-daemon/policy.yaml"), description="The policy (desired state)."
    )
    config_file: Path | None = Field(
        default=None, description="Optional YAML file with these settings (env vars win)."
    )
    build_revision: str = Field(
        default="unknown", description="Source revision, set by the image build (build info)."
    )
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    aws: AwsSettings = AwsSettings()
    reconciler: ReconcilerSettings = ReconcilerSettings()
    shard: ShardSettings = ShardSettings()
    metrics: MetricsSettings = MetricsSettings()
    export: ExportSettings = ExportSettings()
    events: EventsSettings = EventsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


class SettingsError(Exception):
    """Settings cannot be used; the message names each bad setting (never its value)."""


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def unknown_env_settings(environ: dict[str, str] | None = None) -> list[str]:
    """POSTURE_* variables that name no setting: a typo would otherwise be ignored silently."""
    env = os.environ if environ is None else environ
    known = {name.upper() for name in Settings.model_fields}
    out = []
    for key in env:
        if key.upper().startswith(ENV_PREFIX):
            first = key[len(ENV_PREFIX) :].split("__", 1)[0].upper()
            if first not in known:
                out.append(key)
    return sorted(out)


def load_settings(**overrides: Any) -> Settings:
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file:
        path = Path(config_file)
        try:
            path.read_bytes()
        except OSError as exc:
            raise SettingsError(
                f"{CONFIG_FILE_ENV}={config_file}: cannot read: {exc.strerror}"
            ) from None
    unknown = unknown_env_settings()
    if unknown:
        raise SettingsError("unknown setting(s): " + ", ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{_env_name(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except Exception as exc:  # e.g. a YAML settings file that does not parse
        raise SettingsError(f"invalid settings: {type(exc).__name__}: {exc}") from None
