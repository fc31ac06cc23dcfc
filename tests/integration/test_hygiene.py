"""Rules the integration suite keeps for itself."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from .conftest import ESTATE_ACCOUNTS


def test_accounts_are_unique() -> None:
    """Tests that change AWS state use accounts of their own: no id may appear in two modules
    (the end-to-end tests share the session's moto server too)."""
    seen: dict[str, set[str]] = defaultdict(set)
    here = Path(__file__).parent
    for path in [*here.glob("test_*.py"), *(here.parent / "e2e").glob("test_*.py")]:
        for account in re.findall(r'"(\d{12})"', path.read_text()):
            seen[account].add(path.name)
    shared = set(ESTATE_ACCOUNTS)
    clashes = {a: sorted(m) for a, m in seen.items() if len(m) > 1 and a not in shared}
    assert not clashes, f"account ids used by several test modules: {clashes}"
