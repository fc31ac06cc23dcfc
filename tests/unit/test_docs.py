"""The reference docs users read are generated from code and must be current."""

from __future__ import annotations

from daemon import docs


def test_generated_reference_docs_are_current() -> None:
    assert docs.main(["--check"]) == 0, "run `make docs` (python -m daemon.docs) and commit docs/"
