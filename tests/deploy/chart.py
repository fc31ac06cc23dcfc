"""Rendering the Helm chart with the real Helm engine (Helm's Go SDK through helm-python-sdk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "posture-daemon"
RELEASE = "posture-daemon"
NAMESPACE = "posture"

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None, chart: Path = CHART) -> list[Manifest]:
    """Every object the chart renders for these values (NOTES.txt and empty files left out)."""
    out = helm.Chart.load(str(chart)).render(values or {}, name=RELEASE, namespace=NAMESPACE)
    manifests: list[Manifest] = []
    for path, text in sorted(out.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


def kinds(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = kinds(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workload(manifests: list[Manifest]) -> Manifest:
    found = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [m["kind"] for m in found]
    return found[0]


def container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = workload(manifests)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


IRSA_ROLE = "arn:aws:iam::111122223333:role/PostureDaemonHub"

# The main combinations the tests render and validate.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "sharded": {"mode": "statefulset", "replicas": 3},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True, "namespace": "grafana"},
    },
    "no-monitoring": {
        "serviceMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "dashboards": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    },
    "irsa": {
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "aws": {"region": "eu-west-1", "externalIdSecret": {"name": "posture-external-id"}},
        "settings": {"aws": {"role_name": "PostureDaemonReader"}},
    },
    "production": {
        "mode": "statefulset",
        "replicas": 4,
        "image": {
            "repository": "registry.example.com/posture-daemon",
            "digest": "sha256:" + "a" * 64,
        },
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
        },
        "settings": {
            "reconciler": {"interval_seconds": 600, "jitter_fraction": 0.2, "workers": 16},
            "log": {"level": "info"},
            "metrics": {"resource_series": False},
        },
        "policy": {
            "document": {
                "version": 1,
                "scope": {
                    "accounts": {
                        "static": [{"id": "111111111111", "name": "prod"}],
                        "organizations": {"enabled": True, "exclude": ["sandbox-*"]},
                    },
                    "regions": ["us-east-1", "eu-west-1"],
                },
                "controls": {"lambda-xray-active": {"enabled": False}},
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "posture-daemon"}},
            }
        ],
    },
    "existing-policy": {"policy": {"existingConfigMap": "my-posture-policy"}},
}
