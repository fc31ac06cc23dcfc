"""Property-based tests over the policy schema (hypothesis).

- Valid documents, generated from the catalogue: scope, every control's settings with parameters
  drawn from the JSON schema of that control's own params model, overrides, exemptions and
  reference data. Each must load, compile, and evaluate over a real snapshot (collected from the
  seeded estate on the moto server) without a single control raising.
- Invalid documents: one mutation of a valid document (a value of the wrong kind, an unknown key,
  a missing required key, an unknown control id). Each must be rejected with a problem that names
  the mutated field's path and its YAML line.

Unit tests of the loader (tests/unit/policy/test_loader.py) cover hand-written mistakes and junk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from daemon.aws.api import AwsGateway
from daemon.collectors.base import CollectContext
from daemon.collectors.registry import build_collectors
from daemon.config import load_settings
from daemon.controls.engine import evaluate
from daemon.controls.registry import all_controls
from daemon.demo.estate import PRIMARY, functions_in
from daemon.metrics.health import HealthMetrics
from daemon.model import Snapshot, Status, Target
from daemon.policy import Policy, PolicyError, parse_policy_text

CONTROLS = sorted(all_controls())
# The generated documents scope the Lambda service only; a policy compiles the controls of the
# services in scope (settings for the others are accepted and validated, then left out).
LAMBDA_CONTROLS = {c for c, control in all_controls().items() if control.service == "lambda"}
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ACCOUNT_IDS = ["111111111111", "222222222222", "012345678901"]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def snapshot(estate: tuple[str, ...]) -> Iterator[Snapshot]:
    """One real snapshot: the collector over the seeded estate's first account (moto, HTTP)."""
    app_settings = load_settings()
    target = Target(estate[0], PRIMARY, "lambda")

    async def collect() -> Snapshot:
        gateway = AwsGateway(app_settings.aws, HealthMetrics(CollectorRegistry()))
        try:
            ctx = CollectContext(
                target=target,
                api=gateway.api(target.account_id, target.region),
                global_api=gateway.api(target.account_id, app_settings.aws.region),
                now=NOW,
            )
            return await build_collectors(app_settings)["lambda"].collect(ctx)
        finally:
            await gateway.close()

    snap = asyncio.run(collect())
    assert snap.resource_counts()["lambda-function"] == len(functions_in(PRIMARY))
    yield snap


# --- valid documents -----------------------------------------------------------------------------


def _from_schema(schema: dict[str, Any], default: Any = None) -> st.SearchStrategy[Any]:
    """A strategy for one JSON schema node of a params model (the subset pydantic emits for them:
    objects, arrays, strings, integers, numbers, booleans, nullable anyOf). Strings in lists are
    drawn from the field's default list as well as at random, so validators that accept only known
    names (value detectors) still see valid values often."""
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, default) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "string":
        return st.text(max_size=20) | st.just(default if isinstance(default, str) else "")
    if kind == "array":
        known = [d for d in default or [] if isinstance(d, str)]
        item = _from_schema(schema.get("items", {}))
        return st.lists(st.sampled_from(known) | item if known else item, max_size=4)
    if kind == "object":
        props = schema.get("properties", {})
        return st.fixed_dictionaries(
            {},
            optional={k: _from_schema(v, v.get("default")) for k, v in props.items()},
        )
    raise AssertionError(f"no strategy for {schema}")


def _valid_params(control_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Parameters from the JSON schema of the control's params model, kept when the model (and its
    validators, e.g. regular expressions that must compile) accepts them."""
    model = all_controls()[control_id].params_model
    schema = model.model_json_schema()
    assert "$defs" not in schema, "nested params models: extend _from_schema"

    def ok(params: dict[str, Any]) -> bool:
        try:
            model.model_validate(params)
        except ValidationError:
            return False
        return True

    return _from_schema(schema).filter(ok)


def _names(alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789-_") -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=12)


# (non-empty by construction: hypothesis 6.170 trips over .filter(bool) on dictionaries)
tags = st.dictionaries(
    _names(), _names() | st.sampled_from(["*", "prod", "dev*"]), min_size=1, max_size=2
)
_MATCH_PARTS = {
    "accounts": st.lists(st.sampled_from(ACCOUNT_IDS), min_size=1, max_size=2),
    "regions": st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2),
    "tags": tags,
}
match = st.sampled_from(sorted(_MATCH_PARTS)).flatmap(
    lambda first: st.fixed_dictionaries(
        {first: _MATCH_PARTS[first]},
        optional={k: v for k, v in _MATCH_PARTS.items() if k != first},
    )
)
severity = st.sampled_from(["critical", "high", "medium", "low"])


@st.composite
def control_settings(draw: st.DrawFn, control_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["enabled"] = draw(st.booleans())
    if draw(st.booleans()):
        out["severity"] = draw(severity)
    if draw(st.booleans()):
        out["params"] = draw(_valid_params(control_id))
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        ov: dict[str, Any] = {"match": draw(match)}
        if draw(st.booleans()):
            ov["enabled"] = draw(st.booleans())
        if draw(st.booleans()):
            ov["severity"] = draw(severity)
        if draw(st.booleans()):
            # an override's params are merged over the control's: both are valid alone, the
            # merge must be too (min <= max style constraints are checked on the merge)
            ov["params"] = draw(_valid_params(control_id))
        overrides.append(ov)
    if overrides:
        out["overrides"] = overrides
    return out


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    accounts: dict[str, Any] = {}
    static = draw(st.lists(st.sampled_from(ACCOUNT_IDS), unique=True, max_size=3))
    if static:
        accounts["static"] = [{"id": a, "name": draw(_names())} for a in static]
    if draw(st.booleans()) or not static:
        accounts["organizations"] = {
            "enabled": True,
            "include": draw(st.lists(_names(), max_size=2)),
            "exclude": draw(st.lists(_names(), max_size=2)),
            "refresh_seconds": draw(st.integers(30, 3600)),
        }
    if draw(st.booleans()):
        accounts["own_account"] = True
    regions = draw(
        st.just("all") | st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True)
    )
    doc: dict[str, Any] = {
        "version": 1,
        "scope": {"accounts": accounts, "regions": regions, "services": ["lambda"]},
    }
    chosen = draw(st.lists(st.sampled_from(CONTROLS), unique=True, max_size=6))
    if chosen:
        doc["controls"] = {c: draw(control_settings(c)) for c in chosen}
    exemptions = []
    for _ in range(draw(st.integers(0, 2))):
        ex: dict[str, Any] = {
            "controls": draw(
                st.lists(st.sampled_from([*CONTROLS, "*"]), min_size=1, max_size=3, unique=True)
            ),
            "reason": draw(st.text(min_size=3, max_size=40).filter(lambda r: len(r.strip()) >= 3)),
            "expires": draw(st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31))),
        }
        scope = draw(st.sampled_from(["resources", "tags", "accounts"]))
        if scope == "resources":
            ex["resources"] = draw(
                st.lists(
                    st.sampled_from(
                        ["*", "arn:aws:lambda:*:*:function:public-*", "arn:aws:lambda:*"]
                    ),
                    min_size=1,
                    max_size=2,
                )
            )
        elif scope == "tags":
            ex["tags"] = draw(tags)
        else:
            ex["accounts"] = draw(st.lists(st.sampled_from(ACCOUNT_IDS), min_size=1, max_size=2))
        if draw(st.booleans()):
            ex["id"] = draw(_names())
        exemptions.append(ex)
    if exemptions:
        doc["exemptions"] = exemptions
    if draw(st.booleans()):
        doc["reference"] = {
            "lambda_runtimes": draw(
                st.dictionaries(
                    st.sampled_from(["python3.12", "nodejs20.x", "java21", "python3.8", "ruby9.9"]),
                    st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31)),
                    max_size=3,
                )
            )
        }
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def load(doc: dict[str, Any]) -> Policy:
    """Parse a generated document; merged override params may legitimately clash (min > max):
    such documents are rejected with a located problem and are not valid examples."""
    try:
        return parse_policy_text(dump(doc))
    except PolicyError as exc:
        assume(not all(".overrides[" in p.path and ".params" in p.path for p in exc.problems))
        raise


@PROPERTY_SETTINGS
@given(doc=valid_documents())
def test_valid_documents_compile_and_evaluate_without_a_crash(
    snapshot: Snapshot, doc: dict[str, Any]
) -> None:
    policy = load(doc)
    assert set(policy.controls) == LAMBDA_CONTROLS
    evaluation = evaluate(snapshot, policy, NOW)
    assert evaluation.problems == ()  # no control raised on any resource
    ran = {c for c, _ in evaluation.controls}
    for finding in evaluation.findings:
        assert finding.control in ran
        assert finding.status in (Status.PASS, Status.FAIL, Status.ERROR)
        assert finding.evidence
        if finding.exempted:
            assert finding.status is Status.FAIL and finding.exemption_reason
    disabled = {c for c, cc in policy.controls.items() if not cc.may_run}
    assert not disabled & {f.control for f in evaluation.findings}


# --- invalid documents: one mutation each --------------------------------------------------------

Path = tuple[str | int, ...]


def _paths(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _render(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _get(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part]
    return doc


# Mappings that are models (unknown keys are errors), as path patterns; "*" is any key or index.
MODEL_NODES = [
    (),
    ("scope",),
    ("scope", "accounts"),
    ("scope", "accounts", "organizations"),
    ("scope", "accounts", "static", "*"),
    ("controls", "*"),
    ("controls", "*", "params"),
    ("controls", "*", "overrides", "*"),
    ("controls", "*", "overrides", "*", "match"),
    ("exemptions", "*"),
    ("reference",),
]
REQUIRED = [
    ("version",),
    ("scope",),
    ("scope", "accounts"),
    ("scope", "regions"),
    ("exemptions", "*", "controls"),
    ("exemptions", "*", "reason"),
    ("exemptions", "*", "expires"),
    ("controls", "*", "overrides", "*", "match"),
]
# free-form values where any replacement may still be valid
FREE = [
    ("scope", "accounts", "organizations", "include"),
    ("scope", "accounts", "organizations", "exclude"),
]


def _like(path: Path, pattern: tuple[str | int, ...]) -> bool:
    return len(path) == len(pattern) and all(
        p in ("*", q) for p, q in zip(pattern, path, strict=True)
    )


@st.composite
def mutations(draw: st.DrawFn) -> tuple[dict[str, Any], str, Path, Path]:
    """(mutated document, kind, path of the problem, path whose YAML line the problem points at)."""
    doc = draw(valid_documents())
    kind = draw(st.sampled_from(["wrong-kind", "unknown-key", "missing", "unknown-control"]))
    nodes = [(p, n) for p, n in _paths(doc) if p and not any(_like(p[: len(f)], f) for f in FREE)]
    if kind == "wrong-kind":
        path, node = draw(st.sampled_from(nodes))
        parent = _get(doc, path[:-1])
        if isinstance(node, dict):
            replacement: Any = [1, 2]
        elif isinstance(node, list):
            replacement = {"zz": 1}
        else:
            replacement = {"zz": [1]}
        parent[path[-1]] = replacement
        return doc, kind, path, path
    if kind == "unknown-key":
        models = [
            p
            for p, n in _paths(doc)
            if isinstance(n, dict) and any(_like(p, m) for m in MODEL_NODES)
        ]
        path = draw(st.sampled_from(models))
        _get(doc, path)["zz_unknown_field"] = "x"
        return doc, kind, (*path, "zz_unknown_field"), (*path, "zz_unknown_field")
    if kind == "missing":
        required = [p for p, _ in _paths(doc) if any(_like(p, r) for r in REQUIRED)]
        path = draw(st.sampled_from(required))
        del _get(doc, path[:-1])[path[-1]]
        return doc, kind, path, path[:-1]
    name = draw(st.sampled_from(["lambda-no-such-control", "ecr-typo", "lambda-xray-activ"]))
    doc.setdefault("controls", {})[name] = {"enabled": True}
    return doc, kind, ("controls", name), ("controls", name)


def _line_of(text: str, path: Path) -> int:
    node = yaml.compose(text)
    for part in path:
        assert node is not None
        if isinstance(node, yaml.MappingNode):
            node = next(v for k, v in node.value if k.value == str(part))
        else:
            node = node.value[int(part)]
    assert node is not None
    return int(node.start_mark.line) + 1


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutation=mutations())
def test_every_invalid_document_names_the_field_and_its_line(
    mutation: tuple[dict[str, Any], str, Path, Path],
) -> None:
    doc, kind, path, line_path = mutation
    text = dump(doc)
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source="policy.yaml")
    problems = info.value.problems
    assert problems and all(p.line is not None and p.line >= 1 for p in problems)
    expected = _render(path)
    near = [
        p
        for p in problems
        if p.path == expected
        or p.path.startswith(expected + ".")
        or p.path.startswith(expected + "[")
    ]
    assert near, (kind, expected, [str(p) for p in problems])
    if kind != "wrong-kind" or near[0].path == expected:
        assert near[0].line == _line_of(text, line_path), (kind, expected, str(near[0]))
    assert str(info.value).startswith("invalid policy policy.yaml")
