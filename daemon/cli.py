"""Command line: run, check, validate, controls, demo, restore, snapshots.

Exit codes: 0 ok; 1 violations at or above --fail-on (check); 2 invalid settings, policy or usage;
3 check could not look everywhere (failed targets, unevaluated controls, or incomplete account
or region discovery) and found no violation; 4 restore refused (snapshot unusable, function
exists without --replace, blocking problems; nothing was changed); 5 restore failed part-way.
Errors are one clear message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from daemon import __version__
from daemon.config import ListenError, Settings, SettingsError, load_settings
from daemon.model import Finding, Severity, Status
from daemon.policy import Policy, PolicyError, load_policy
from daemon.webconfig import WebConfigError

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_CONFIG = 2
EXIT_INCOMPLETE = 3


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    if getattr(args, "policy", None):
        overrides["policy_file"] = Path(args.policy)
    return load_settings(**overrides)


def _policy(settings: Settings) -> Policy:
    return load_policy(settings.policy_file)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    policy = load_policy(args.policy_file)
    doc = policy.document
    enabled = sum(1 for c in policy.controls.values() if c.may_run)
    regions = doc.scope.regions if doc.scope.regions == "all" else ", ".join(doc.scope.regions)
    out.write(
        f"{policy.source}: valid (digest {policy.digest})\n"
        f"  services: {', '.join(doc.scope.services)}; regions: {regions}\n"
        f"  controls enabled: {enabled}; exemptions: {len(doc.exemptions)}\n"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.app import Daemon
    from daemon.logging import setup_logging

    settings = _settings(args)
    policy = _policy(settings)
    setup_logging(settings.log.level, settings.log.format)

    async def main() -> None:
        daemon = Daemon(settings, policy)
        await daemon.run()

    asyncio.run(main())
    return EXIT_OK


def _finding_sort_key(f: Finding) -> tuple[int, str, str, str, str]:
    return (-f.severity.rank, f.control, f.account_id, f.region, f.resource)


def render_table(
    findings: Sequence[Finding], failed: Sequence[tuple[str, str]], out: TextIO
) -> None:
    rows = [f for f in findings if f.status is not Status.PASS]
    rows.sort(key=_finding_sort_key)
    headers = ("SEVERITY", "STATUS", "CONTROL", "ACCOUNT", "REGION", "RESOURCE", "EVIDENCE")
    table = [
        (
            f.severity.value,
            ("exempted" if f.exempted else f.status.value),
            f.control,
            f.account_id,
            f.region,
            f.resource,
            f.evidence,
        )
        for f in rows
    ]
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(headers[:-1])]
    for row in [headers, *table]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    for target, error in failed:
        out.write(f"target {target} FAILED: {error}\n")


def summarise(findings: Sequence[Finding]) -> dict[str, Any]:
    violations = [f for f in findings if f.violating]
    by_severity = {s.value: sum(1 for f in violations if f.severity is s) for s in Severity}
    return {
        "findings": len(findings),
        "violations": len(violations),
        "violations_by_severity": by_severity,
        "passed": sum(1 for f in findings if f.status is Status.PASS),
        "errors": sum(1 for f in findings if f.status is Status.ERROR),
        "exempted": sum(1 for f in findings if f.exempted),
    }


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.app import Daemon
    from daemon.logging import setup_logging

    settings = _settings(args)
    policy = _policy(settings)
    setup_logging(settings.log.level if args.verbose else "error", settings.log.format)
    from daemon.reconciler.reconciler import utcnow

    started = utcnow()

    async def main() -> tuple[list[Any], tuple[str, ...]]:
        daemon = Daemon(settings, policy)
        outcomes = await daemon.check()
        return outcomes, daemon.reconciler.discovery_problems

    outcomes, discovery_problems = asyncio.run(main())
    findings = [f for o in outcomes if o.result is not None for f in o.result.findings]
    failed = [(o.target.key, o.error or "failed") for o in outcomes if o.result is None]
    summary = summarise(findings)
    summary["targets"] = len(outcomes)
    summary["targets_failed"] = len(failed)
    summary["discovery_problems"] = list(discovery_problems)
    if args.output == "json":
        doc = {
            "generated_at": started.isoformat(),
            "version": __version__,
            "policy": {"source": policy.source, "digest": policy.digest},
            "summary": summary,
            "targets": [
                {
                    "aws_account_id": o.target.account_id,
                    "aws_region": o.target.region,
                    "aws_service": o.target.service,
                    "status": "ok" if o.result is not None else "failed",
                    "error": o.error,
                }
                for o in outcomes
            ],
            "findings": [f.as_dict() for f in sorted(findings, key=_finding_sort_key)],
        }
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        render_table(findings, failed, out)
        for problem in discovery_problems:
            out.write(f"discovery INCOMPLETE: {problem}\n")
        v = summary["violations_by_severity"]
        out.write(
            f"\n{summary['violations']} violation(s) "
            f"({', '.join(f'{n} {s}' for s, n in v.items() if n)}); "
            f"{summary['errors']} not evaluated; {summary['exempted']} exempted; "
            f"{summary['targets']} target(s), {summary['targets_failed']} failed\n"
        )
    if args.fail_on != "none":
        threshold = Severity(args.fail_on)
        if any(f.violating and f.severity.at_least(threshold) for f in findings):
            return EXIT_VIOLATIONS
    if failed or summary["errors"] or discovery_problems:
        return EXIT_INCOMPLETE
    return EXIT_OK


def cmd_controls(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.docs import controls_json, controls_markdown

    if args.output == "json":
        json.dump(controls_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(controls_markdown())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.demo.runner import run_demo

    return run_demo(http_port=args.port, interval=args.interval, out=out, export=args.export)


def _drops(values: Sequence[str] | None) -> frozenset[str]:
    return frozenset(d.strip() for v in values or () for d in v.split(",") if d.strip())


def cmd_restore(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.export.restore import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_REFUSED,
        RestoreError,
        RestoreRequest,
        SnapshotError,
        restore,
    )
    from daemon.logging import setup_logging

    settings = load_settings()
    setup_logging(settings.log.level if args.verbose else "error", settings.log.format)
    request = RestoreRequest(
        snapshot=args.snapshot,
        function_name=args.function_name,
        account=args.account,
        region=args.region,
        dry_run=args.dry_run,
        replace=args.replace,
        drops=_drops(args.drop),
        role=args.role,
        assume_role=args.assume_role,
    )
    try:
        asyncio.run(restore(settings, request, out))
    except SnapshotError as exc:
        out.flush()
        sys.stderr.write(f"posture-daemon: restore refused: {exc}\n")
        return EXIT_REFUSED
    except RestoreError as exc:
        done = f"steps 1-{exc.index - 1} are done" if exc.index > 1 else "no step is done"
        out.write(
            f"  FAILED {exc.index:>3}. {exc.step.action:<7} {exc.step.what}: {exc.error}\n"
            f"  {done}; step {exc.index} and later are not. Fix the cause and run the same "
            "command again with --replace to finish (only what differs is changed).\n"
        )
        sys.stderr.write(f"posture-daemon: restore failed at step {exc.index}: {exc.error}\n")
        return EXIT_FAILED
    return EXIT_OK


def cmd_snapshots(args: argparse.Namespace, out: TextIO) -> int:
    from daemon.export.restore import EXIT_REFUSED, SnapshotError, list_snapshots, render_rows

    settings = load_settings()
    try:
        rows = asyncio.run(
            list_snapshots(
                settings,
                bucket=args.bucket,
                prefix=args.prefix,
                account=args.account,
                region=args.region,
                function=args.function,
            )
        )
    except SnapshotError as exc:
        sys.stderr.write(f"posture-daemon: {exc}\n")
        return EXIT_REFUSED
    if args.output == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        render_rows(rows, out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posture-daemon",
        description="Continuous AWS compliance for serverless and container estates, as metrics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (serves /metrics, /livez, /readyz)")
    run.add_argument("--policy", help="policy file (default: POSTURE_POLICY_FILE)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="one sweep, then a report and an exit code")
    check.add_argument("--policy", help="policy file (default: POSTURE_POLICY_FILE)")
    check.add_argument("--output", choices=("table", "json"), default="table")
    check.add_argument(
        "--fail-on",
        choices=("critical", "high", "medium", "low", "none"),
        default="low",
        help="exit 1 when a violation at or above this severity exists (default: low)",
    )
    check.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="validate a policy file")
    validate.add_argument("policy_file")
    validate.set_defaults(func=cmd_validate)

    controls = sub.add_parser("controls", help="list the controls and their parameters")
    controls.add_argument("--output", choices=("markdown", "json"), default="markdown")
    controls.set_defaults(func=cmd_controls)

    demo = sub.add_parser("demo", help="run the daemon against an embedded simulated AWS estate")
    demo.add_argument(
        "--port", type=int, default=9717, help="HTTP port for /metrics (default 9717)"
    )
    demo.add_argument("--interval", type=float, default=30.0, help="seconds between sweeps")
    demo.add_argument(
        "--export",
        action="store_true",
        help="also export every function's configuration to s3://posture-demo-exports/",
    )
    demo.set_defaults(func=cmd_demo)

    from daemon.export.plan import DROPS

    restore = sub.add_parser(
        "restore",
        help="recreate a Lambda function from a configuration snapshot",
        description="Recreate a Lambda function from a snapshot of the configuration export. "
        "Reads the snapshot with the export's credentials (POSTURE_EXPORT__ROLE_ARN or your "
        "own), acts in the target account with your own credentials or by assuming "
        "--assume-role / POSTURE_EXPORT__RESTORE_ROLE_NAME there.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="parts --drop can leave out:\n"
        + "\n".join(f"  {name:<24}{what}" for name, what in DROPS.items()),
    )
    restore.add_argument("--snapshot", required=True, help="s3://BUCKET/.../<snapshot id>/")
    restore.add_argument("--function-name", help="name of the restored function (default: same)")
    restore.add_argument("--account", help="target account (default: the snapshot's)")
    restore.add_argument("--region", help="target region (default: the snapshot's)")
    restore.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    restore.add_argument(
        "--replace", action="store_true", help="restore over an existing function (in place)"
    )
    restore.add_argument(
        "--drop",
        action="append",
        metavar="PART[,PART]",
        help="restore without these parts (see below)",
    )
    restore.add_argument("--role", help="execution role ARN to use instead of the snapshot's")
    restore.add_argument("--assume-role", help="role ARN to assume in the target account")
    restore.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    restore.set_defaults(func=cmd_restore)

    snapshots = sub.add_parser("snapshots", help="configuration snapshots in the export bucket")
    snapshots_sub = snapshots.add_subparsers(dest="snapshots_command", required=True)
    listing = snapshots_sub.add_parser("list", help="list snapshots and whether each is valid")
    listing.add_argument("--function", help="only this function (with --account and --region)")
    listing.add_argument("--account", help="only this account")
    listing.add_argument("--region", help="only this region")
    listing.add_argument("--bucket", help="bucket (default: POSTURE_EXPORT__BUCKET)")
    listing.add_argument("--prefix", help="key prefix (default: POSTURE_EXPORT__PREFIX)")
    listing.add_argument("--output", choices=("table", "json"), default="table")
    listing.set_defaults(func=cmd_snapshots)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args, out)
    except (PolicyError, SettingsError, WebConfigError) as exc:
        sys.stderr.write(f"posture-daemon: {exc}\n")
        return EXIT_CONFIG
    except ListenError as exc:
        how = "--port" if args.command == "demo" else "POSTURE_HTTP__PORT and POSTURE_HTTP__HOST"
        sys.stderr.write(f"posture-daemon: {exc} (the address is set by {how})\n")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
