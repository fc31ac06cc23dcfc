"""What /metrics serves, fast: the compliance state rendered once per published result.

The state collector (daemon/metrics/collector.py) builds every state family from the whole store
at each scrape: about 30,000 series at 6,000 Lambda functions, seconds of CPU while a sweep holds
the GIL. Here a scrape is mostly a join of cached strings:

- `StateText` keeps, per target, the sample lines of each family rendered from one
  `TargetResult`. A target is rendered again only when the store holds another result object for
  it (a publish replaces the object; identity is the test), and then only the parts whose numbers
  differ from the previous result's (aggregates, per-resource violations, samples: a sweep that
  found nothing new publishes equal ones, and comparing costs far less than rendering), on the
  HTTP server's thread, so the daemon's event loop pays nothing: between scrapes, a target at a
  time, once anything scrapes at all (`warm`), so that a scrape mostly joins text rendered before
  it came, and otherwise by the scrape itself. Only targets of the current view are rendered and
  kept: dropped or unassigned targets vanish from the output and the cache at the next scrape.
  (The previous result of a re-published target stays referenced by the cache until its new one
  is rendered.) The small, fast-changing parts (target health, account up/info, control info,
  the cap of the per-resource series) are put together at scrape time from per-target pieces.
- `Exposition.render` chooses the format from the Accept header with prometheus_client's
  `choose_encoder`, as before. Every collector of the registry except the state collector (the
  daemon's own counters and histograms, the process collector: a few hundred series) is encoded by
  that encoder; the state text is spliced in at the state collector's place in the registry
  (before OpenMetrics' `# EOF`). The HELP/TYPE headers of the state families come from the chosen
  encoder itself (over empty families), once per content type; a probe checks, once per content
  type, that our sample lines are byte-identical to the encoder's for the same samples (label
  order, label value escaping, float formatting). Where they are not (`escaping=dots` or
  `escaping=values` rename every metric), the generic encoder renders the whole registry instead;
  Prometheus asks for allow-utf-8 or underscores, which keep our names.
- The other collectors' families (the daemon's own metrics: ~900 samples at 20 accounts) keep
  the encoder's HELP/TYPE lines, cached per family, but their sample lines are written here
  (`Exposition._encode`): the encoder cost ~2 ms of a ~10 ms warm scrape. A second
  probe checks, once per content type, that our lines are the encoder's for a counter, a gauge,
  a histogram and an info metric; a family with anything else in it (timestamps, exemplars,
  OpenMetrics-only samples such as `_created`) is encoded by the encoder.
- `render_pieces` gives the body as a list of pieces, most of them the same objects as at the
  last scrape, which /metrics gzips segment by segment (daemon/metrics/compress.py).

Family order, series and values are those of `StateCollector.collect()`; the tests compare both
paths sample by sample, and `bench/exposition.py` measures them.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from daemon.measures import Sample
from daemon.metrics import names as n
from daemon.metrics.collector import BUILT_IN_ORDER, StateCollector, state_families
from daemon.model import Severity, Target
from daemon.state import StoreView, TargetHealth, TargetResult

Encoder = Callable[[Collector], bytes]

SEVERITIES = tuple(sorted(Severity, key=lambda s: -s.rank))  # most severe first
# prometheus_client's own float formatting (Go's), so values read as the encoder writes them
go_float: Callable[[float], str] = floatToGoString
_FORMATS_KEPT = 16  # content types remembered (they come from clients' Accept headers)


def escape(value: str) -> str:
    """A label value as both text formats write it: backslash, newline and quote escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Label values from a small vocabulary (controls, severities, regions, kinds...), escaped once.
escape_word: Callable[[str], str] = functools.lru_cache(maxsize=16384)(escape)
_count: Callable[[float], str] = functools.lru_cache(maxsize=4096)(go_float)


class Template:
    """The sample lines of one family as prometheus_client writes them: labels in name order.
    `values` come in the family's label order (MetricDef.labels), already escaped."""

    __slots__ = ("fmt",)

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        order = sorted(range(len(labels)), key=labels.__getitem__)
        inner = ",".join(f'{labels[i]}="{{{i}}}"' for i in order)
        # metric and label names are legacy names: no braces in them
        self.fmt = name + ("{{" + inner + "}}" if labels else "") + f" {{{len(labels)}}}\n"

    def __call__(self, values: Sequence[str], value: str) -> str:
        """One line; `value` formatted by go_float."""
        return self.fmt.format(*values, value)


TEMPLATES = {d: Template(d.exposed, d.labels) for d in state_families()}


def first_lines(text: bytes, count: int) -> bytes:
    """The first `count` lines of rendered sample lines (values never hold a raw newline)."""
    return b"\n".join(text.split(b"\n", count)[:count]) + b"\n"


def same_counts(a: TargetResult, b: TargetResult) -> bool:
    """Whether two results of a target have the same per-control aggregates (their text is the
    same; comparing costs far less than rendering)."""
    return (
        a.violations == b.violations
        and a.evaluated == b.evaluated
        and a.errors == b.errors
        and a.exemptions == b.exemptions
        and a.resources == b.resources
    )


def same_violations(a: TargetResult, b: TargetResult) -> bool:
    """Whether two results of a target have the same per-resource series: the same control,
    severity and resource in the same order (a finding whose evidence alone changed renders the
    same line)."""
    if a.resource_violations is b.resource_violations:
        return True
    return len(a.resource_violations) == len(b.resource_violations) and all(
        v is w or (v.control == w.control and v.severity is w.severity and v.resource == w.resource)
        for v, w in zip(a.resource_violations, b.resource_violations, strict=True)
    )


def _target_values(target: Target) -> tuple[str, str, str]:
    return (escape(target.account_id), escape(target.region), escape(target.service))


def _lines(
    d: n.MetricDef, ids: tuple[str, str, str], rows: Iterable[tuple[tuple[str, ...], str]]
) -> bytes:
    """A target's lines of a family whose first labels are the target's (escaped `ids`)."""
    t = TEMPLATES[d]
    return "".join([t((*ids, *extra), value) for extra, value in rows]).encode()


@dataclass(frozen=True, slots=True)
class _Chunks:
    """The text of one target, rendered from `result`."""

    result: TargetResult
    counts: tuple[bytes, ...]  # violations, evaluated, errors, exemptions, resources
    resources: tuple[tuple[bytes, int], ...]  # per-resource series per severity (SEVERITIES)
    samples: Mapping[str, bytes]  # measure family -> lines
    controls: frozenset[str]  # the controls in the result (enabled ones): control_info


Health = tuple[bytes, bytes, bytes, bytes]


class StateText:
    """The state families' text, cached per target; thread-safe (scrapes may overlap)."""

    def __init__(self, collector: StateCollector) -> None:
        self.collector = collector
        self.families = state_families()
        self._measures = {d.name: d for d in self.families[len(BUILT_IN_ORDER) :]}
        self._lock = threading.Lock()
        self._targets: dict[Target, _Chunks] = {}
        self._health: dict[Target, tuple[TargetHealth, Health]] = {}
        self._policy: tuple[tuple[Sample, ...], Mapping[str, bytes]] | None = None
        self.rendered = 0  # results rendered (in part or whole) so far: tests, benchmark

    def cached(self) -> frozenset[Target]:
        """The targets whose text is kept (those of the view at the last scrape)."""
        return frozenset(self._targets)

    def stale(self) -> list[Target]:
        """The targets whose published result has no text yet (`warm` renders them)."""
        cache = self._targets
        return [
            target
            for target, result in self.collector.store.view().results.items()
            if (c := cache.get(target)) is None or c.result is not result
        ]

    def warm(self, target: Target) -> bool:
        """Render `target`'s text now if its published result has none yet (True), so that the
        next scrape finds it: the server does this between scrapes (daemon/server.py), a target
        at a time. Otherwise a scrape renders every result published since the one before --
        dozens at once at the end of a cold sweep, when the Lambda targets finish together
        (~60-80 ms of CPU in one scrape in the benchmark)."""
        with self._lock:
            result = self.collector.store.view().results.get(target)
            c = self._targets.get(target)
            if result is None or (c is not None and c.result is result):
                return False
            self._targets[target] = self._render_target(target, result, c)
            return True

    def render(self, headers: Sequence[bytes]) -> list[bytes]:
        """The state exposition in pieces; headers[i] goes before family i's samples."""
        with self._lock:
            return self._render(self.collector.store.view(), headers)

    def _render(self, view: StoreView, headers: Sequence[bytes]) -> list[bytes]:
        cache = self._targets
        kept: dict[Target, _Chunks] = {}
        for target, result in sorted(view.results.items()):
            c = cache.get(target)
            if c is None or c.result is not result:
                c = self._render_target(target, result, c)
            kept[target] = c
        self._targets = kept  # targets gone from the view leave the cache
        chunks = list(kept.values())

        out: list[bytes] = []
        header = iter(headers)
        for i in range(5):  # violations, evaluated, errors, exemptions, resources
            out.append(next(header))
            out.extend([c.counts[i] for c in chunks])
        out.append(next(header))
        skipped = self._resource_series(chunks, out)
        out.append(next(header))
        out.append(TEMPLATES[n.RESOURCE_SERIES_DROPPED]((), go_float(skipped)).encode())
        self._health_lines(view, header, out)
        out.append(next(header))
        up = TEMPLATES[n.ACCOUNT_UP]
        out.extend(
            up((escape(account),), "1.0" if ok else "0.0").encode()
            for account, ok in sorted(view.account_up.items())
        )
        out.append(next(header))
        info = TEMPLATES[n.ACCOUNT_INFO]
        out.extend(
            info((escape(account), escape(name)), "1.0").encode()
            for account, name in sorted(view.account_names.items())
        )
        out.append(next(header))
        out.extend(self._control_info(frozenset().union(*(c.controls for c in chunks))))
        policy = self._policy_lines(view.policy_samples)
        for name in self._measures:
            out.append(next(header))
            out.append(policy.get(name, b""))
            out.extend([c.samples.get(name, b"") for c in chunks])
        return out

    def _render_target(
        self, target: Target, result: TargetResult, previous: _Chunks | None
    ) -> _Chunks:
        """The target's text; parts whose numbers equal the previous result's are reused (a
        sweep that found nothing new re-publishes equal aggregates and per-resource violations;
        samples such as data-age timestamps move more often)."""
        ids = _target_values(target)
        counts: tuple[bytes, ...] | None = None
        controls: frozenset[str] = frozenset()
        resources: tuple[tuple[bytes, int], ...] | None = None
        samples: Mapping[str, bytes] | None = None
        if previous is not None:
            old = previous.result
            if same_counts(old, result):
                counts, controls = previous.counts, previous.controls
            if same_violations(old, result):
                resources = previous.resources
            if old.samples == result.samples:
                samples = previous.samples
        if counts is None or resources is None or samples is None:
            self.rendered += 1
        if counts is None:
            counts = self._counts(ids, result)
            controls = frozenset(control for control, _ in result.violations)
        if resources is None:
            resources = self._resource_lines(ids, result)
        if samples is None:
            labels = dict(zip(n.TARGET_LABELS, ids, strict=True))
            samples = self._sample_lines(result.samples, labels)
        return _Chunks(result, counts, resources, samples, controls)

    def _counts(self, ids: tuple[str, str, str], res: TargetResult) -> tuple[bytes, ...]:
        w = escape_word
        return (
            _lines(
                n.VIOLATIONS,
                ids,
                (
                    ((w(c), w(sev.value)), _count(v))
                    for (c, sev), v in sorted(res.violations.items())
                ),
            ),
            _lines(
                n.EVALUATED, ids, (((w(c),), _count(v)) for c, v in sorted(res.evaluated.items()))
            ),
            _lines(
                n.EVALUATION_ERRORS,
                ids,
                (((w(c),), _count(v)) for c, v in sorted(res.errors.items())),
            ),
            _lines(
                n.EXEMPTIONS,
                ids,
                (((w(c), w(st)), _count(v)) for (c, st), v in sorted(res.exemptions.items())),
            ),
            _lines(
                n.RESOURCES, ids, (((w(k),), _count(v)) for k, v in sorted(res.resources.items()))
            ),
        )

    def _resource_lines(
        self, ids: tuple[str, str, str], res: TargetResult
    ) -> tuple[tuple[bytes, int], ...]:
        per_severity = []
        for severity in SEVERITIES:
            label = escape_word(severity.value)
            rows = [
                ((escape_word(v.control), label, escape(v.resource)), "1.0")
                for v in res.resource_violations
                if v.severity is severity
            ]
            per_severity.append((_lines(n.RESOURCE_VIOLATION, ids, rows), len(rows)))
        return tuple(per_severity)

    def _sample_lines(self, samples: Iterable[Sample], ids: Mapping[str, str]) -> dict[str, bytes]:
        """The measures' lines by family; `ids` are the target labels, escaped (none for the
        policy's samples)."""
        families: dict[str, list[str]] = {}
        for smp in samples:
            d = self._measures.get(smp.metric)
            if d is None:
                continue
            values = [
                ids[label] if label in ids else escape(smp.labels.get(label, ""))
                for label in d.labels
            ]
            families.setdefault(d.name, []).append(TEMPLATES[d](values, go_float(smp.value)))
        return {name: "".join(lines).encode() for name, lines in families.items()}

    def _policy_lines(self, samples: tuple[Sample, ...]) -> Mapping[str, bytes]:
        if self._policy is None or self._policy[0] is not samples:
            self._policy = (samples, self._sample_lines(samples, {}))
        return self._policy[1]

    def _resource_series(self, chunks: Sequence[_Chunks], out: list[bytes]) -> int:
        """posture_resource_violation under the cap: most severe first across all targets, then
        the sorted targets, then each target's order. Returns the series the cap dropped."""
        settings = self.collector.settings
        limit = settings.resource_series_limit if settings.resource_series else 0
        emitted = skipped = 0
        for i in range(len(SEVERITIES)):
            for c in chunks:
                text, count = c.resources[i]
                if not count:
                    continue
                take = max(0, min(count, limit - emitted))
                if take == count:
                    out.append(text)
                elif take:
                    out.append(first_lines(text, take))
                emitted += take
                if settings.resource_series:
                    skipped += count - take  # dropped by the cap (not by turning them off)
        return skipped

    def _health_lines(self, view: StoreView, header: Iterator[bytes], out: list[bytes]) -> None:
        cache = self._health
        rows: list[Health] = []
        kept: dict[Target, tuple[TargetHealth, Health]] = {}
        for target, h in sorted(view.health.items()):
            cached = cache.get(target)
            if cached is None or cached[0] is not h:
                t = _target_values(target)
                up = TEMPLATES[n.TARGET_UP](t, "1.0" if h.up else "0.0") if h.attempted else ""
                last = TEMPLATES[n.TARGET_LAST_ATTEMPT](t, go_float(h.last_attempt))
                cached = (
                    h,
                    (
                        up.encode(),
                        TEMPLATES[n.TARGET_LAST_SUCCESS](t, go_float(h.last_success)).encode(),
                        last.encode() if h.attempted else b"",
                        TEMPLATES[n.TARGET_FAILURES](t, go_float(h.consecutive_failures)).encode(),
                    ),
                )
            kept[target] = cached
            rows.append(cached[1])
        self._health = kept
        for i in range(4):  # up, last success, last attempt, consecutive failures
            out.append(next(header))
            out.extend([r[i] for r in rows])

    def _control_info(self, enabled: frozenset[str]) -> Iterator[bytes]:
        controls = self.collector.controls
        info = TEMPLATES[n.CONTROL_INFO]
        for control_id in sorted(enabled):
            c = controls.get(control_id)
            if c is None:
                continue
            values = (control_id, c.service, c.severity.value, c.resource_type, c.title)
            yield info([*map(escape, values), escape(c.security_hub or "")], "1.0").encode()


class Registry(CollectorRegistry):
    """A CollectorRegistry that remembers its collectors in registration order, so `Exposition`
    can encode all of them but the state collector (public API only; no private fields)."""

    def __init__(self) -> None:
        super().__init__()
        self._order: list[Collector] = []
        self._order_lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        super().register(collector)
        with self._order_lock:
            self._order.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        with self._order_lock:
            self._order.remove(collector)

    def collectors(self) -> list[Collector]:
        with self._order_lock:
            return list(self._order)


class _Collectors:
    """Some collectors of a registry, collected as the registry would (target_info first)."""

    def __init__(
        self, collectors: Sequence[Collector], target_info: Mapping[str, str] | None = None
    ) -> None:
        self.collectors = collectors
        self.target_info = target_info

    def collect(self) -> Iterator[Metric]:
        if self.target_info:
            m = Metric("target", "Target metadata", "info")
            m.add_sample("target_info", dict(self.target_info), 1)
            yield m
        for c in self.collectors:
            yield from c.collect()


class _Metrics:
    def __init__(self, metrics: Sequence[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


# Exercises every escape, a non-ASCII letter and the float formatting.
_PROBE_VALUE = 'a\\b"c\nd\u00e9'
_PROBE_SAMPLE = 12345678.5


@dataclass(frozen=True, slots=True)
class _Format:
    headers: tuple[bytes, ...] | None  # per state family; None: our lines differ, use the encoder
    trailer: bytes  # what the encoder writes after the last family (OpenMetrics' "# EOF\n")
    generic: bool = False  # whether `_sample_line` writes the other collectors' lines as it does


# Names that both formats write bare; anything else (and OpenMetrics-only samples, exemplars,
# timestamps, native histograms) goes through the encoder.
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")  # the text format moves these elsewhere
_HEADERS_KEPT = 4096


@functools.lru_cache(maxsize=4096)
def _legacy(name: str, label: bool = False) -> bool:
    return (_LEGACY_LABEL if label else _LEGACY_NAME).fullmatch(name) is not None


def _plain(m: Metric) -> bool:
    """Whether every sample of `m` is a plain line that `_sample_line` writes."""
    for s in m.samples:
        if s.exemplar is not None or s.timestamp is not None or s.native_histogram is not None:
            return False
        if not _legacy(s.name) or not all(_legacy(k, True) for k in s.labels):
            return False
        if s.name.startswith(m.name) and s.name[len(m.name) :] in _OPENMETRICS_ONLY:
            return False
    return True


def _sample_line(name: str, labels: Mapping[str, str], value: float) -> str:
    """One sample line as both encoders write it: labels sorted by name, values escaped."""
    if labels:
        inner = ",".join([f'{k}="{escape_word(v)}"' for k, v in sorted(labels.items())])
        return f"{name}{{{inner}}} {go_float(value)}\n"
    return f"{name} {go_float(value)}\n"


def _empty(m: Metric) -> Metric:
    header = copy.copy(m)
    header.samples = []
    return header


def _probe_generic(encoder: Encoder, trailer: bytes) -> bool:
    """Whether `_sample_line` writes what `encoder` writes, for each type the daemon's own
    collectors use (counter, gauge, histogram, info, with and without labels)."""
    counter = Metric("posture_probe_requests", "A probe.", "counter")
    counter.add_sample("posture_probe_requests_total", {"z": _PROBE_VALUE, "a": "b"}, 3)
    gauge = Metric("posture_probe_level", "A probe.", "gauge")
    gauge.add_sample("posture_probe_level", {}, _PROBE_SAMPLE)
    histogram = Metric("posture_probe_seconds", "A probe.", "histogram")
    for le, count in (("0.5", 1.0), ("+Inf", 2.0)):
        histogram.add_sample("posture_probe_seconds_bucket", {"svc": _PROBE_VALUE, "le": le}, count)
    histogram.add_sample("posture_probe_seconds_count", {"svc": _PROBE_VALUE}, 2.0)
    histogram.add_sample("posture_probe_seconds_sum", {"svc": _PROBE_VALUE}, 0.125)
    info = Metric("posture_probe", "A probe.", "info")
    info.add_sample("posture_probe_info", {"version": "1.2.3"}, 1.0)
    families = [counter, gauge, histogram, info]
    if not all(map(_plain, families)):
        return False
    ours = b"".join(
        _strip(encoder(_Metrics([_empty(m)])), trailer)
        + "".join(_sample_line(s.name, s.labels, s.value) for s in m.samples).encode()
        for m in families
    )
    return _strip(encoder(_Metrics(families)), trailer) == ours


def _family(d: n.MetricDef, sample: bool) -> Metric:
    m = Metric(d.name, d.help, d.type)
    if sample:
        m.add_sample(d.exposed, dict.fromkeys(d.labels, _PROBE_VALUE), _PROBE_SAMPLE)
    return m


def _strip(body: bytes, trailer: bytes) -> bytes:
    return body[: len(body) - len(trailer)] if trailer and body.endswith(trailer) else body


def _probe(encoder: Encoder, families: Sequence[n.MetricDef]) -> _Format:
    """The state families' headers as `encoder` writes them, if our sample lines are its own."""
    trailer = encoder(_Metrics([]))
    empty = _strip(encoder(_Metrics([_family(d, False) for d in families])), trailer)
    headers: list[bytes] = []
    for text in empty.splitlines(keepends=True):
        if text.startswith(b"# HELP ") or not headers:
            headers.append(text)
        else:
            headers[-1] += text
    if len(headers) != len(families):
        return _Format(None, trailer)
    value = escape(_PROBE_VALUE)
    expected = b"".join(
        h + TEMPLATES[d]([value] * len(d.labels), go_float(_PROBE_SAMPLE)).encode()
        for h, d in zip(headers, families, strict=True)
    )
    probed = encoder(_Metrics([_family(d, True) for d in families]))
    if probed != expected + trailer:
        return _Format(None, trailer)
    return _Format(tuple(headers), trailer, _probe_generic(encoder, trailer))


class Exposition:
    """Renders the registry for one scrape: `render(accept) -> (body, content type)`."""

    def __init__(self, registry: CollectorRegistry, state: StateCollector | None = None) -> None:
        self.registry = registry
        self.state = state
        self.text = StateText(state) if state is not None else None
        self._formats: dict[str, _Format] = {}
        self._formats_lock = threading.Lock()
        # HELP/TYPE lines of the other collectors' families, per content type, as the encoder
        # writes them
        self._headers: dict[tuple[str, str, str, str, str], str] = {}

    def render(self, accept: str) -> tuple[bytes, str]:
        pieces, content_type = self.render_pieces(accept)
        return b"".join(pieces), content_type

    def render_pieces(self, accept: str) -> tuple[list[bytes], str]:
        """The body as a list of pieces to be joined: from the cached state text, most of them
        are the very objects the last scrape got (daemon/metrics/compress.py keys on that)."""
        encoder, content_type = choose_encoder(accept)
        parts = self._split()
        if parts is None or self.text is None:
            return [encoder(self.registry)], content_type
        fmt = self._format(encoder, content_type)
        if fmt.headers is None:
            return [encoder(self.registry)], content_type
        before, after = parts
        head = self._encode(
            encoder, content_type, fmt, _Collectors(before, self.registry.get_target_info())
        )
        tail = self._encode(encoder, content_type, fmt, _Collectors(after)) + fmt.trailer
        return [head, *self.text.render(fmt.headers), tail], content_type

    def _encode(
        self, encoder: Encoder, content_type: str, fmt: _Format, collectors: _Collectors
    ) -> bytes:
        """What `encoder` writes for these collectors (without the trailer). The daemon's own
        metrics (a few hundred to a thousand samples: API calls, pacing rates, histograms)
        took prometheus_client's encoder ~5 us a sample (~2 of a warm scrape's ~10 ms at 10,000
        functions, bench/exposition.py); where the probe
        showed that our sample lines are the encoder's, the headers come from the encoder over
        the family without samples (cached) and the lines are written here."""
        if not fmt.generic:
            return _strip(encoder(collectors), fmt.trailer)
        out: list[str] = []
        headers = self._headers
        for m in collectors.collect():
            if not _plain(m):
                out.append(_strip(encoder(_Metrics([m])), fmt.trailer).decode())
                continue
            key = (content_type, m.name, m.documentation, m.type, m.unit)
            header = headers.get(key)
            if header is None:
                if len(headers) >= _HEADERS_KEPT:
                    headers.clear()
                header = _strip(encoder(_Metrics([_empty(m)])), fmt.trailer).decode()
                headers[key] = header
            out.append(header)
            out.extend([_sample_line(s.name, s.labels, s.value) for s in m.samples])
        return "".join(out).encode()

    def serves_cached(self, accept: str) -> bool:
        """Whether a scrape with this Accept header is served from the cached state text."""
        encoder, content_type = choose_encoder(accept)
        if self._split() is None or self.text is None:
            return False
        return self._format(encoder, content_type).headers is not None

    def writes_lines(self, accept: str) -> bool:
        """Whether the other collectors' sample lines are written here for this Accept header
        (`_encode`), not by the encoder."""
        encoder, content_type = choose_encoder(accept)
        return self.serves_cached(accept) and self._format(encoder, content_type).generic

    def _split(self) -> tuple[list[Collector], list[Collector]] | None:
        """The collectors before and after the state collector (None: encode generically)."""
        if not isinstance(self.registry, Registry) or self.state is None:
            return None
        collectors = self.registry.collectors()
        for i, c in enumerate(collectors):
            if c is self.state:
                return collectors[:i], collectors[i + 1 :]
        return None

    def _format(self, encoder: Encoder, content_type: str) -> _Format:
        with self._formats_lock:
            fmt = self._formats.get(content_type)
            if fmt is None:
                assert self.text is not None
                fmt = _probe(encoder, self.text.families)
                if len(self._formats) >= _FORMATS_KEPT:
                    self._formats.clear()
                self._formats[content_type] = fmt
            return fmt
