"""Read a policy file: YAML -> pydantic models -> compiled policy, with errors that name the field
path and the YAML line, never a traceback."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from daemon.policy.compiled import Loc, Policy, PolicyCompileError, Problem, compile_policy
from daemon.policy.models import PolicyDocument


@dataclass(frozen=True, slots=True)
class LocatedProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}"


class PolicyError(Exception):
    """The policy file cannot be used. `problems` says where and why."""

    def __init__(self, source: str, problems: list[LocatedProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid policy {self.source}"
        if len(self.problems) == 1:
            return f"{head}: {self.problems[0]}"
        return (
            head + f": {len(self.problems)} problems\n" + "\n".join(f"  {p}" for p in self.problems)
        )


class _Lines:
    """Finds the YAML line of a path in the document, from the composed node tree."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: Loc) -> int | None:
        node = self.root
        if node is None:
            return None
        best = node.start_mark.line + 1
        for part in loc:
            child = self._child(node, part)
            if child is None:
                continue  # pydantic adds union branch names to locations; skip what is not there
            node = child
            best = node.start_mark.line + 1
        return best

    @staticmethod
    def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    return value if isinstance(value, yaml.Node) else None
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            return child if isinstance(child, yaml.Node) else None
        return None


def _duplicate_keys(
    node: yaml.Node | None, path: tuple[str | int, ...] = ()
) -> list[LocatedProblem]:
    """PyYAML keeps the last of two equal keys silently: a policy must not lose a setting so."""
    out: list[LocatedProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                p = Problem((*path, name), "duplicate key")
                out.append(LocatedProblem(p.path, key.start_mark.line + 1, p.message))
            seen.add(name)
            out.extend(_duplicate_keys(value, (*path, name)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.extend(_duplicate_keys(item, (*path, i)))
    return out


_UNION_BRANCH = re.compile(r"^(list|literal|dict|set|tuple|function-|constrained|union|tagged)|\[")


def _located(exc: ValidationError, lines: _Lines) -> list[LocatedProblem]:
    """Pydantic errors as (path, line, message), with union branch names removed from paths.

    Where a union produced one error per branch, the most specific (deepest) wins; equally deep
    alternatives are joined with "or".
    """
    by_path: dict[Loc, list[tuple[int, str]]] = {}
    for err in exc.errors():
        raw = tuple(err["loc"])
        clean = tuple(p for p in raw if not (isinstance(p, str) and _UNION_BRANCH.search(p)))
        msg = str(err["msg"]).removeprefix("Value error, ")
        by_path.setdefault(clean, []).append((len(raw), msg))
    # a branch error at a parent path is noise when a deeper path explains the problem
    paths = [p for p in by_path if not any(q != p and q[: len(p)] == p for q in by_path)]
    out = []
    for path in paths:
        entries = by_path[path]
        depth = max(d for d, _ in entries)
        msgs = list(dict.fromkeys(m for d, m in entries if d == depth))
        problem = Problem(path, " or ".join(msgs))
        out.append(LocatedProblem(problem.path, lines.line(path), problem.message))
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2025-02-30) are YAML errors with a line, not crashes."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date {node.value!r}: {exc}", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def parse_policy_text(text: str, source: str = "<memory>") -> Policy:
    try:
        root = yaml.compose(text, Loader=_Loader)
        data: Any = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise PolicyError(source, [LocatedProblem("(yaml)", None, "nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(
            source, [LocatedProblem("(yaml)", line, f"not valid YAML: {problem}")]
        ) from None
    try:
        dupes = _duplicate_keys(root)
        if dupes:
            raise PolicyError(source, dupes)
        return _validate(text, source, root, data)
    except RecursionError:
        raise PolicyError(
            source, [LocatedProblem("(document)", None, "nested too deeply")]
        ) from None


def _validate(text: str, source: str, root: yaml.Node | None, data: Any) -> Policy:
    lines = _Lines(root)
    if not isinstance(data, dict):
        raise PolicyError(
            source, [LocatedProblem("(document)", 1, "the policy must be a YAML mapping")]
        )
    try:
        doc = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, _located(exc, lines)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    try:
        return compile_policy(doc, source=source, digest=digest)
    except PolicyCompileError as exc:
        raise PolicyError(
            source, [LocatedProblem(p.path, lines.line(p.loc), p.message) for p in exc.problems]
        ) from None


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(
            str(p), [LocatedProblem("(file)", None, f"cannot read: {reason}")]
        ) from None
    return parse_policy_text(text, source=str(p))
