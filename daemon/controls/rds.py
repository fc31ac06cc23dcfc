"""Amazon RDS controls: DB instances and DB clusters (Aurora and Multi-AZ DB clusters).

Controls on `rds-database` judge settings that belong to the storage (encryption, deletion
protection, IAM authentication, logs, network exposure, port, Multi-AZ): they see every DB cluster
and every DB instance that is not a cluster member. Controls on `rds-db-instance` judge what each
instance sets for itself, cluster members included. Backup controls live with the backup posture.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field

from daemon.controls.common import glob_any, short, tags_match
from daemon.controls.registry import (
    EvalContext,
    NoParams,
    Outcome,
    Params,
    control,
    errored,
    failed,
    passed,
)
from daemon.model import Severity
from daemon.model import rds as m
from daemon.model.ec2 import WORLD_V4, WORLD_V6

SERVICE = "rds"

V = TypeVar("V")


def _kind(db: m.Database) -> str:
    return "cluster" if isinstance(db, m.DbCluster) else "instance"


def _engine_value(engine: str, table: dict[str, V]) -> V | None:
    """The value of the first key (an engine glob) that matches the engine."""
    return next((v for k, v in table.items() if glob_any(engine, [k])), None)


# --- storage ---------------------------------------------------------------------------------


class EncryptionParams(Params):
    require_customer_managed_key: bool = Field(
        default=False,
        description="The key must be customer-managed (not the AWS-managed aws/rds key).",
    )
    allowed_key_arns: list[str] = Field(
        default=[],
        description="If set, the key must be one of these (globs); implies a customer-managed key.",
    )


@control(
    id="rds-storage-encrypted",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="Storage is encrypted at rest",
    severity=Severity.MEDIUM,
    rationale="""Unencrypted storage exposes the data, its automated backups, snapshots and read
    replicas to anyone who gets the underlying volumes or a shared snapshot. A customer-managed
    key adds a key policy you control and the ability to revoke access.""",
    remediation="""Encryption is fixed at creation: snapshot the database, copy the snapshot with
    encryption (your KMS key), restore from it, switch clients over and delete the unencrypted
    database. A key that is disabled or pending deletion must be re-enabled (or its deletion
    cancelled) before the database loses access to its data.""",
    params=EncryptionParams,
    security_hub="RDS.3, RDS.27",
    aws_config_rule="rds-storage-encrypted, rds-cluster-encrypted-at-rest",
)
def storage_encrypted(db: m.Database, p: EncryptionParams, ctx: EvalContext) -> Outcome | None:
    if not db.storage_encrypted:
        return failed(f"{_kind(db)} storage is not encrypted")
    current = db.kms_key
    if current is not None and current.unusable:
        return failed(
            f"KMS key {current.key_arn or current.arn} is {current.key_state}: the data, its "
            "snapshots and backups become unreadable"
        )
    if not (p.require_customer_managed_key or p.allowed_key_arns):
        return passed(f"encrypted with {db.kms_key_id or 'a KMS key'}")
    if m.ASPECT_KMS_KEY in db.errors:
        return errored(
            f"could not describe KMS key {db.kms_key_id} ({db.errors[m.ASPECT_KMS_KEY]})"
        )
    key = db.kms_key
    if key is None or not key.found:
        return failed(f"KMS key {db.kms_key_id} does not exist")
    if key.key_manager != "CUSTOMER":
        return failed(f"encrypted with the AWS-managed key {key.key_arn or key.arn}")
    arn = key.key_arn or key.arn
    if p.allowed_key_arns and not glob_any(arn, p.allowed_key_arns):
        return failed(f"KMS key {arn} is not an allowed key")
    return passed(f"encrypted with customer-managed key {arn}")


class MultiAzParams(Params):
    apply_to: Literal["production", "all"] = Field(
        default="production",
        description="'production': only databases carrying production_tags; 'all': every one.",
    )
    production_tags: dict[str, str] = Field(
        default={"env": "prod*"},
        description="Tags that mark a production database (all must match; values are globs).",
    )


@control(
    id="rds-multi-az",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="Production databases are Multi-AZ",
    severity=Severity.MEDIUM,
    rationale="""A Single-AZ database is down for as long as its Availability Zone or host is,
    and restores lose the changes since the last backup. Multi-AZ keeps a synchronous standby
    (or, for Aurora, a replica in another zone) and fails over in minutes.""",
    remediation="""Modify the instance with MultiAZ true, or add an Aurora replica in another
    Availability Zone to the cluster.""",
    params=MultiAzParams,
    security_hub="RDS.5, RDS.15",
    aws_config_rule="rds-multi-az-support, rds-cluster-multi-az-enabled",
)
def multi_az(db: m.Database, p: MultiAzParams, ctx: EvalContext) -> Outcome | None:
    if p.apply_to == "production" and not (
        p.production_tags and tags_match(p.production_tags, db.tags)
    ):
        return None
    if db.multi_az:
        return passed(f"Multi-AZ {_kind(db)}")
    if isinstance(db, m.DbCluster):
        return failed(f"all {len(db.members)} cluster member(s) in one Availability Zone")
    return failed(f"Single-AZ instance in {db.availability_zone or 'one zone'}")


@control(
    id="rds-deletion-protection",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="Deletion protection is on",
    severity=Severity.LOW,
    rationale="""Deletion protection stops a database from being deleted by a mistaken call, a
    stack teardown or compromised credentials until someone deliberately turns it off.""",
    remediation="Modify the instance or cluster with DeletionProtection true.",
    params=NoParams,
    security_hub="RDS.7, RDS.8",
    aws_config_rule=(
        "rds-cluster-deletion-protection-enabled, rds-instance-deletion-protection-enabled"
    ),
)
def deletion_protection(db: m.Database, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if db.deletion_protection:
        return passed("deletion protection on")
    return failed("deletion protection off")


class IamAuthParams(Params):
    engines: list[str] = Field(
        default=["mysql", "mariadb", "postgres", "aurora", "aurora-mysql", "aurora-postgresql"],
        description="Engines (globs) the control applies to: those that support IAM "
        "database authentication.",
    )


@control(
    id="rds-iam-authentication",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="IAM database authentication is on",
    severity=Severity.MEDIUM,
    rationale="""With IAM authentication, database logins use short-lived tokens tied to IAM
    identities, so access is granted, revoked and audited in IAM and CloudTrail instead of with
    long-lived passwords shared in configuration.""",
    remediation="""Modify the instance or cluster with EnableIAMDatabaseAuthentication true, create
    database users mapped to IAM (rds_iam / AWSAuthenticationPlugin) and grant rds-db:connect.""",
    params=IamAuthParams,
    security_hub="RDS.10, RDS.12",
    aws_config_rule=(
        "rds-instance-iam-authentication-enabled, rds-cluster-iam-authentication-enabled"
    ),
)
def iam_authentication(db: m.Database, p: IamAuthParams, ctx: EvalContext) -> Outcome | None:
    if not glob_any(db.engine, p.engines):
        return None
    if db.iam_auth:
        return passed("IAM database authentication on")
    return failed("IAM database authentication off")


class LogExportsParams(Params):
    required_log_types: dict[str, list[str]] = Field(
        default={
            "postgres": ["postgresql"],
            "aurora-postgresql": ["postgresql"],
            "mysql": ["error"],
            "mariadb": ["error"],
            "aurora-mysql": ["error"],
            "aurora": ["error"],
            "sqlserver-*": ["error"],
            "oracle-*": ["alert"],
        },
        description="Log types that must be exported, by engine glob (first match wins). An "
        "engine not listed must export at least one log type.",
    )


@control(
    id="rds-log-exports",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="Database logs are exported to CloudWatch Logs",
    severity=Severity.MEDIUM,
    rationale="""Database logs (errors, slow queries, audit) stay on the instance and rotate
    away unless exported. In CloudWatch Logs they are retained, searchable and can raise alarms
    on failed logins or errors.""",
    remediation="""Modify the instance or cluster with EnableCloudwatchLogsExports for the
    engine's log types (for MySQL audit logs, also the audit plugin in the option group).""",
    params=LogExportsParams,
    security_hub="RDS.9",
    aws_config_rule="rds-logging-enabled",
)
def log_exports(db: m.Database, p: LogExportsParams, ctx: EvalContext) -> Outcome | None:
    required = _engine_value(db.engine, p.required_log_types)
    exported = set(db.log_exports)
    if required is None:
        if exported:
            return passed(f"exports {', '.join(sorted(exported))}")
        return failed("no logs exported to CloudWatch Logs")
    missing = [t for t in required if t not in exported]
    if missing:
        have = ", ".join(sorted(exported)) or "nothing"
        return failed(f"exports {have}; missing {', '.join(missing)}")
    return passed(f"exports {', '.join(sorted(exported))}")


class SecurityGroupParams(Params):
    forbidden_cidrs: list[str] = Field(
        default=[WORLD_V4, WORLD_V6],
        description="Sources that must not reach the database port.",
    )


@control(
    id="rds-security-group-no-public-ingress",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="Security groups do not open the database port to the internet",
    severity=Severity.HIGH,
    rationale="""A security group rule from 0.0.0.0/0 or ::/0 to the database port lets anything
    that can route to the database try to log in: from the internet when the database is
    publicly accessible, and from every peered or connected network otherwise.""",
    remediation="""Replace the rule with one whose source is the application's security group (or
    a narrow CIDR range).""",
    params=SecurityGroupParams,
    requires=(m.ASPECT_SECURITY_GROUPS,),
    references=("prowler:rds_instance_no_public_access",),
)
def security_groups(db: m.Database, p: SecurityGroupParams, ctx: EvalContext) -> Outcome | None:
    forbidden = frozenset(p.forbidden_cidrs)
    open_rules = [
        f"{sg.group_id} {rule.ports} from {'/'.join(sorted(forbidden & set(rule.cidrs)))}"
        for sg in db.security_groups
        for rule in sg.open_to(forbidden, db.port)
    ]
    port = f"port {db.port}" if db.port else "the database"
    if open_rules:
        return failed(f"{port} open to the internet: {short(open_rules)}")
    return passed(f"{len(db.security_groups)} security group(s); {port} not open to the internet")


class DefaultPortParams(Params):
    default_ports: dict[str, int] = Field(
        default={
            "mysql": 3306,
            "mariadb": 3306,
            "aurora": 3306,
            "aurora-mysql": 3306,
            "postgres": 5432,
            "aurora-postgresql": 5432,
            "oracle-*": 1521,
            "sqlserver-*": 1433,
            "db2-*": 50000,
        },
        description="Each engine's default port, by engine glob (first match wins).",
    )


@control(
    id="rds-non-default-port",
    service=SERVICE,
    resource_type=m.DATABASE,
    title="The database does not listen on its engine's default port",
    severity=Severity.LOW,
    rationale="""Scanners and worms probe the well-known database ports first. A non-default port
    is no substitute for network controls, but it keeps a database out of the cheapest
    automated attacks; hence this control is off by default.""",
    remediation="""Modify the instance (DBPortNumber) or cluster (Port) to a non-default port and
    update the security groups and clients.""",
    params=DefaultPortParams,
    security_hub="RDS.23",
    aws_config_rule="rds-no-default-ports",
    default_enabled=False,
)
def non_default_port(db: m.Database, p: DefaultPortParams, ctx: EvalContext) -> Outcome | None:
    default = _engine_value(db.engine, p.default_ports)
    if default is None or db.port is None:
        return None
    if db.port == default:
        return failed(f"listens on {db.engine}'s default port {default}")
    return passed(f"listens on port {db.port}")


# --- instances -------------------------------------------------------------------------------


@control(
    id="rds-instance-not-public",
    service=SERVICE,
    resource_type=m.DB_INSTANCE,
    title="DB instances are not publicly accessible",
    severity=Severity.CRITICAL,
    rationale="""A publicly accessible instance gets a public DNS name and address: with a
    permissive security group, anyone on the internet can try to log in.""",
    remediation="""Modify the instance with PubliclyAccessible false and reach it from inside the
    VPC (or through a bastion, VPN or RDS Proxy).""",
    params=NoParams,
    security_hub="RDS.2",
    aws_config_rule="rds-instance-public-access-check",
)
def not_public(db: m.DbInstance, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if db.publicly_accessible:
        return failed("PubliclyAccessible true")
    return passed("not publicly accessible")


class MonitoringParams(Params):
    max_interval_seconds: Literal[1, 5, 10, 15, 30, 60] = Field(
        default=60, description="Longest enhanced monitoring interval accepted."
    )


@control(
    id="rds-enhanced-monitoring",
    service=SERVICE,
    resource_type=m.DB_INSTANCE,
    title="Enhanced monitoring is on",
    severity=Severity.LOW,
    rationale="""Enhanced monitoring reports the operating system's view (processes, memory,
    I/O) every few seconds: what is needed to tell a runaway query from a starving host.""",
    remediation="""Modify the instance with a MonitoringInterval (1-60 seconds) and a monitoring
    role (rds-monitoring-role).""",
    params=MonitoringParams,
    security_hub="RDS.6",
    aws_config_rule="rds-enhanced-monitoring-enabled",
)
def enhanced_monitoring(db: m.DbInstance, p: MonitoringParams, ctx: EvalContext) -> Outcome | None:
    interval = db.monitoring_interval
    if interval <= 0:
        return failed("enhanced monitoring off")
    if interval > p.max_interval_seconds:
        return failed(f"enhanced monitoring every {interval}s (max {p.max_interval_seconds}s)")
    return passed(f"enhanced monitoring every {interval}s")


@control(
    id="rds-auto-minor-version-upgrade",
    service=SERVICE,
    resource_type=m.DB_INSTANCE,
    title="Minor engine versions are upgraded automatically",
    severity=Severity.HIGH,
    rationale="""Minor versions carry the engine's security fixes. With automatic minor version
    upgrades off, an instance stays on a vulnerable version until someone remembers it.""",
    remediation="""Modify the instance with AutoMinorVersionUpgrade true (upgrades are applied in
    its maintenance window).""",
    params=NoParams,
    security_hub="RDS.13",
    aws_config_rule="rds-automatic-minor-version-upgrade-enabled",
)
def auto_minor_version_upgrade(db: m.DbInstance, p: NoParams, ctx: EvalContext) -> Outcome | None:
    if db.auto_minor_version_upgrade:
        return passed(f"{db.engine} {db.engine_version}: automatic minor version upgrades")
    return failed(f"{db.engine} {db.engine_version}: automatic minor version upgrades off")
