"""The soak (bench/soak.py) as a test: 500 sweeps of the demo estate with churn, on real
processes. Marked slow: `make test` skips it; run it with `make soak` or
`.venv/bin/python -m pytest -m slow tests/soak` (tens of minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_500_sweeps_with_churn_keep_memory_and_series_flat(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--sweeps", "500", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=4 * 3600,
        check=False,
    )
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(report.read_text())
    assert result["sweeps"] == 500
    assert result["rss_mb_end"] - result["rss_mb_after_warmup"] <= 20
    assert result["series_min"] == result["series_max"] == result["series_after_warmup"]
    assert result["stale_resource_series"] == []
