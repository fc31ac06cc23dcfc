"""Rules the integration suite keeps for itself."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from .conftest import ESTATE_ACCOUNTS


def test_accounts_are_unique() -> None:
    """Tests that change AWS state use accounts of their own: no id may appear in two modules."""
    seen: dict[str, set[str]] = defaultdict(set)
    for path in Path(__file__).parent.glob("test_*.py"):
        for account in re.findall(r'"(\d{12})"', path.read_text()):
            seen[account].add(path.name)
    shared = set(ESTATE_ACCOUNTS)
    clashes = {a: sorted(m) for a, m in seen.items() if len(m) > 1 and a not in shared}
    assert not clashes, f"account ids used by several test modules: {clashes}"
