"""A small, typed model of the Grafana dashboard JSON the project ships, and its rendering.

Only what the dashboards use is modelled: template variables (the data source is one), rows,
stat, time series, bar gauge and table panels with Prometheus queries, units, thresholds, value
mappings, data links and, for tables, one column per query. Rendering lays panels out left to
right in rows of 24 columns and numbers them, so definitions stay free of coordinates.
The JSON targets Grafana 10.4 and later (schemaVersion 39) and is provisioned as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]
PanelType = Literal["stat", "timeseries", "bargauge", "table"]
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
GRID_WIDTH = 24

# Threshold steps: (value from which the color applies, color); the first value is None (base).
Thresholds = tuple[tuple[float | None, str], ...]

# Colors of the control severities, used wherever severity is shown.
SEVERITY_COLORS = {"critical": "red", "high": "orange", "medium": "yellow", "low": "blue"}


@dataclass(frozen=True)
class Query:
    """A Prometheus query. `legend` names the series (time series) or the column (tables)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Link:
    """A data link; `url` may use Grafana's ${__data.fields.<label>} and dashboard variables."""

    title: str
    url: str


@dataclass(frozen=True)
class ValueText:
    """Show `text` (and color) for a value, or for values in [low, high]."""

    text: str
    value: float | str | None = None
    low: float | None = None
    high: float | None = None
    color: str | None = None

    def render(self) -> Json:
        result: Json = {"text": self.text}
        if self.color:
            result["color"] = self.color
        if self.value is not None:
            return {"type": "value", "options": {_number(self.value): {**result, "index": 0}}}
        return {
            "type": "range",
            "options": {"from": self.low, "to": self.high, "result": {**result, "index": 0}},
        }


@dataclass(frozen=True)
class Column:
    """A table column: a label or a query's value (named by the query's legend)."""

    name: str
    unit: str | None = None
    cell: Literal["gauge", "color-background", "color-text"] | None = None
    thresholds: Thresholds | None = None
    link: Link | None = None
    mappings: tuple[ValueText, ...] = ()
    width: int | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    type: PanelType
    queries: tuple[Query, ...]
    unit: str
    thresholds: Thresholds
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    # time series
    stack: bool = False
    threshold_style: Literal["off", "line", "dashed", "area"] = "off"
    legend: Literal["list", "table", "hidden"] = "list"
    series_colors: Mapping[str, str] = field(default_factory=dict)
    # stat
    color_mode: Literal["background", "value", "none"] = "value"
    sparkline: bool = False
    # tables: columns in order (labels and values); others are hidden
    columns: tuple[Column, ...] = ()
    sort_by: tuple[str, bool] | None = None  # (column, descending)
    # every type
    mappings: tuple[ValueText, ...] = ()
    links: tuple[Link, ...] = ()

    @property
    def instant(self) -> bool:
        """Tables, stats and bar gauges show the current value; time series a range."""
        return self.type != "timeseries"


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A template variable. kind `datasource`: pick a Prometheus; `query`: label values of a
    query; `custom`: fixed values; `constant`: a hidden value (e.g. the docs URL)."""

    name: str
    label: str
    kind: Literal["datasource", "query", "custom", "constant"]
    query: str = ""
    multi: bool = True
    include_all: bool = True
    description: str = ""

    def render(self) -> Json:
        base: Json = {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "type": self.kind,
            "skipUrlSync": False,
        }
        if self.kind == "datasource":
            return {
                **base,
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
            }
        if self.kind == "constant":
            return {**base, "query": self.query, "hide": 2}
        common: Json = {
            "hide": 0,
            "includeAll": self.include_all,
            "multi": self.multi,
            "current": (
                {"selected": True, "text": ["All"], "value": ["$__all"]} if self.include_all else {}
            ),
        }
        if self.include_all:
            # "All" matches every value, also those that appear after the page was loaded
            common["allValue"] = ".+"
        if self.kind == "custom":
            values = [v.strip() for v in self.query.split(",")]
            return {
                **base,
                **common,
                "query": self.query,
                "options": [{"selected": False, "text": v, "value": v} for v in values],
            }
        return {
            **base,
            **common,
            "datasource": DATASOURCE,
            "query": self.query,
            "definition": self.query,
            "refresh": 2,  # on time range change: new accounts appear without a reload
            "regex": "",
            "sort": 1,
            "options": [],
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    version: int = 1
    time_from: str = "now-6h"
    refresh: str = "1m"
    annotations: tuple[tuple[str, Query, str], ...] = ()  # (name, query, color)

    @property
    def file_name(self) -> str:
        return f"{self.uid}.json"

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]


# ----------------------------------------------------------------------------------------------
# rendering


def _number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _thresholds(steps: Thresholds) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def _targets(panel: Panel) -> list[Json]:
    out = []
    for i, query in enumerate(panel.queries):
        target: Json = {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + i),
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "range": not panel.instant,
            "instant": panel.instant,
            "editorMode": "code",
        }
        if panel.type == "table":
            target["format"] = "table"
        out.append(target)
    return out


def _value_field(panel: Panel, index: int) -> str:
    """The name Grafana gives a table query's value column."""
    return "Value" if len(panel.queries) == 1 else f"Value #{chr(ord('A') + index)}"


def _links(links: tuple[Link, ...]) -> list[Json]:
    return [{"title": link.title, "url": link.url, "targetBlank": True} for link in links]


def _table_parts(panel: Panel) -> tuple[list[Json], list[Json]]:
    """Transformations and per-column overrides of a table."""
    values = {q.legend: _value_field(panel, i) for i, q in enumerate(panel.queries) if q.legend}
    shown = [c.name for c in panel.columns]
    rename = {field_name: legend for legend, field_name in values.items()}
    index = {values.get(name, name): i for i, name in enumerate(shown)}
    transformations: list[Json] = []
    if len(panel.queries) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "filterFieldsByName",
            "options": {"include": {"names": [values.get(n, n) for n in shown]}},
        }
    )
    transformations.append(
        {
            "id": "organize",
            "options": {"excludeByName": {}, "indexByName": index, "renameByName": rename},
        }
    )
    overrides = []
    for column in panel.columns:
        properties: list[Json] = []
        if column.unit:
            properties.append({"id": "unit", "value": column.unit})
        if column.min is not None:
            properties.append({"id": "min", "value": column.min})
        if column.max is not None:
            properties.append({"id": "max", "value": column.max})
        if column.thresholds:
            properties.append({"id": "thresholds", "value": _thresholds(column.thresholds)})
        if column.cell:
            cell: Json = {"type": column.cell}
            if column.cell == "gauge":
                cell["mode"] = "basic"
            properties.append({"id": "custom.cellOptions", "value": cell})
        if column.link:
            properties.append({"id": "links", "value": _links((column.link,))})
        if column.mappings:
            properties.append({"id": "mappings", "value": [m.render() for m in column.mappings]})
        if column.width:
            properties.append({"id": "custom.width", "value": column.width})
        if properties:
            overrides.append(
                {"matcher": {"id": "byName", "options": column.name}, "properties": properties}
            )
    return transformations, overrides


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    defaults: Json = {
        "unit": panel.unit,
        "thresholds": _thresholds(panel.thresholds),
        "mappings": [m.render() for m in panel.mappings],
        "links": _links(panel.links),
        "color": {"mode": "thresholds" if panel.type != "timeseries" else "palette-classic"},
    }
    for key in ("min", "max", "decimals"):
        value = getattr(panel, key)
        if value is not None:
            defaults[key] = value
    overrides: list[Json] = []
    transformations: list[Json] = []
    options: Json
    if panel.type == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stack else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": panel.threshold_style},
        }
        options = {
            "legend": {
                "displayMode": panel.legend,
                "placement": "bottom",
                "showLegend": panel.legend != "hidden",
                "calcs": ["lastNotNull", "max"] if panel.legend == "table" else [],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        for name, color in panel.series_colors.items():
            overrides.append(
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": color}}
                    ],
                }
            )
    elif panel.type == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": panel.color_mode,
            "graphMode": "area" if panel.sparkline else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    elif panel.type == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "auto",
            "sizing": "auto",
        }
    else:
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
        if panel.sort_by:
            options["sortBy"] = [{"displayName": panel.sort_by[0], "desc": panel.sort_by[1]}]
        transformations, overrides = _table_parts(panel)
    out: Json = {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": _targets(panel),
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
    }
    if transformations:
        out["transformations"] = transformations
    return out


def render(dashboard: Dashboard) -> Json:
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in dashboard.rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                y += line_height
                x = 0
                line_height = 0
            panels.append(render_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    annotations: list[Json] = [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
    ]
    for name, query, color in dashboard.annotations:
        annotations.append(
            {
                "name": name,
                "datasource": DATASOURCE,
                "enable": True,
                "iconColor": color,
                "expr": query.expr,
                "titleFormat": query.legend,
                "step": "1m",
                "useValueForTime": False,
            }
        )
    return {
        "id": None,
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "version": dashboard.version,
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": dashboard.refresh,
        "weekStart": "",
        "templating": {"list": [v.render() for v in dashboard.variables]},
        "annotations": {"list": annotations},
        "links": [
            {
                "title": "posture-daemon",
                "type": "dashboards",
                "tags": ["posture-daemon"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": panels,
    }
