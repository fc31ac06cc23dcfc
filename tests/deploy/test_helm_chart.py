"""The Helm chart, rendered by the real Helm engine and checked with real tools.

Every combination renders, lints strictly, and each object validates against the Kubernetes
schemas of the oldest and newest supported versions (kubernetes-validate, offline). The
prometheus-operator objects are CRDs, which kubernetes-validate skips: a PrometheusRule's spec
goes through promtool, a ServiceMonitor is checked against the Service it selects. The values
schema must reject bad values, and what the chart hands the daemon (environment, policy file)
must be accepted by the daemon's own settings and policy loaders.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from daemon import DOCS_URL, deploy
from daemon.config import Settings, load_settings
from daemon.policy import load_policy

from .chart import (
    CHART,
    COMBINATIONS,
    IRSA_ROLE,
    NAMESPACE,
    ROOT,
    Manifest,
    container,
    kinds,
    one,
    render,
    workload,
)
from .scan import high, trivy_findings

KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_combination_renders_lints_and_validates_against_kubernetes_schemas(
    combination: str,
) -> None:
    values = COMBINATIONS[combination]
    manifests = render(values)
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{name} is invalid for Kubernetes {version}: {err.message}")
        assert manifest["metadata"].get("namespace") in (NAMESPACE, "grafana"), manifest["kind"]
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_default_pod_is_restricted() -> None:
    manifests = render()
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    c = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["privileged"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "command" not in c and "args" not in c  # the image's entrypoint: posture-daemon run
    # the only writable place is an in-memory /tmp
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert mounts["/etc/posture-daemon/policy"]["readOnly"] is True


def _env(manifests: list[Manifest], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would resolve it (downward API, secrets)."""
    out = {}
    for var in container(manifests)["env"]:
        if "value" in var:
            out[var["name"]] = var["value"]
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            out[var["name"]] = pod_name
        elif "secretKeyRef" in var["valueFrom"]:
            out[var["name"]] = "secret-from-" + var["valueFrom"]["secretKeyRef"]["name"]
    return out


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_policy_is_a_mounted_configmap_directory_the_daemon_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for combination in ("default", "production"):
        manifests = render(COMBINATIONS[combination])
        c = container(manifests)
        pod = workload(manifests)["spec"]["template"]["spec"]
        settings = _settings_from(_env(manifests, "posture-daemon-0"), monkeypatch)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "policy")
        # a directory mount, never subPath (a subPath mount never sees ConfigMap updates)
        assert "subPath" not in mount
        assert settings.policy_file.parent == Path(mount["mountPath"])
        volume = next(v for v in pod["volumes"] if v["name"] == "policy")
        (configmap,) = [
            m
            for m in kinds(manifests, "ConfigMap")
            if m["metadata"]["name"] == volume["configMap"]["name"]
        ]
        # the ConfigMap's key is the file the daemon reads, and the daemon accepts it
        path = tmp_path / combination / settings.policy_file.name
        path.parent.mkdir()
        path.write_text(configmap["data"][settings.policy_file.name])
        policy = load_policy(path)
        assert policy.document.scope.accounts.organizations.enabled
        # no checksum annotation: a policy change is reloaded by the daemon, not by a restart
        assert not (workload(manifests)["spec"]["template"]["metadata"].get("annotations") or {})
    default = load_policy(tmp_path / "default" / "policy.yaml").document
    assert default.scope.regions == "all"
    custom = load_policy(tmp_path / "production" / "policy.yaml").document
    assert [a.id for a in custom.scope.accounts.static] == ["111111111111"]

    existing = render(COMBINATIONS["existing-policy"])
    assert not kinds(existing, "ConfigMap")
    volume = next(
        v
        for v in workload(existing)["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "policy"
    )
    assert volume["configMap"]["name"] == "my-posture-policy"


def test_settings_reach_the_daemon_as_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render({**COMBINATIONS["production"], "service": {"port": 8080}})
    settings = _settings_from(_env(manifests, "posture-daemon-2"), monkeypatch)
    assert settings.reconciler.interval_seconds == 600
    assert settings.reconciler.jitter_fraction == 0.2
    assert settings.reconciler.workers == 16
    assert settings.metrics.resource_series is False
    # the port the daemon listens on is the one the probes, the Service and the scrape use
    assert settings.http.port == 8080
    c = container(manifests)
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    service = one(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # the replica's shard comes from its pod name, the shard count from the replicas
    assert (settings.shard.resolved_index, settings.shard.count) == (2, 4)


def test_irsa_and_external_id(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(COMBINATIONS["irsa"])
    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}
    pod = workload(manifests)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    env = {v["name"]: v for v in container(manifests)["env"]}
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    secret = env["POSTURE_AWS__EXTERNAL_ID"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "posture-external-id", "key": "external-id"}
    settings = _settings_from(_env(manifests, "posture-daemon-abc12"), monkeypatch)
    assert settings.aws.external_id is not None
    assert settings.aws.region == "eu-west-1"


def test_statefulset_shards_and_every_replica_is_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(COMBINATIONS["production"])
    sts = one(manifests, "StatefulSet")
    assert not kinds(manifests, "Deployment")
    assert sts["spec"]["replicas"] == 4
    service = one(manifests, "Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    # headless, and listing replicas before their first sweep: one scrape target per pod
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    for ordinal in range(4):
        env = _env(manifests, f"{sts['metadata']['name']}-{ordinal}")
        assert _settings_from(env, monkeypatch).shard.resolved_index == ordinal
    monitor = one(manifests, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    # job="posture-daemon" whatever the release is called
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "posture-daemon"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "minAvailable" not in pdb["spec"]


def test_network_policy_admits_scrapes_and_lets_out_only_dns_and_https() -> None:
    policy = one(render(COMBINATIONS["production"]), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == COMBINATIONS["production"]["networkPolicy"]["metricsFrom"]
    ports = sorted({(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]})
    assert ports == [(53, "TCP"), (53, "UDP"), (80, "TCP"), (443, "TCP")]
    port80 = [r for r in spec["egress"] if any(p["port"] == 80 for p in r["ports"])]
    assert port80 == [  # only to the EKS Pod Identity agent
        {
            "to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        }
    ]


def test_monitoring_objects_only_when_enabled() -> None:
    off = render(COMBINATIONS["no-monitoring"])
    assert not kinds(off, "ServiceMonitor") and not kinds(off, "PrometheusRule")
    assert not kinds(off, "PodDisruptionBudget")
    assert [m["metadata"]["name"] for m in kinds(off, "ConfigMap")] == ["posture-daemon-policy"]
    on = render(COMBINATIONS["monitoring"])
    assert one(on, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


BAD_VALUES = [
    ({"mode": "daemonset"}, "/mode"),
    ({"replicas": 3}, "/replicas"),  # a Deployment cannot shard
    ({"mode": "statefulset", "replicas": 0}, "/replicas"),
    ({"image": {"repository": ""}}, "/image/repository"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"replica": 1}, "replica"),  # a typo
    (
        {"settings": {"reconciler": {"interval_seconds": 0}}},
        "/settings/reconciler/interval_seconds",
    ),
    ({"settings": {"reconciler": {"intervall_seconds": 60}}}, "intervall_seconds"),
    ({"settings": {"shard": {"count": 2}}}, "shard"),  # the chart owns sharding
    ({"settings": {"aws": {"external_id": "abc"}}}, "external_id"),  # only from a Secret
    ({"settings": {"log": {"level": "verbose"}}}, "/settings/log/level"),
    ({"serviceMonitor": {"interval": "1 minute"}}, "/serviceMonitor/interval"),
    ({"aws": {"region": "Europe"}}, "/aws/region"),
    ({"networkPolicy": {"awsCidrs": []}}, "/networkPolicy/awsCidrs"),
    (
        {
            "policy": {
                "document": {
                    "version": 1,
                    "scope": {"accounts": {"static": [{"id": 111111111111}]}, "regions": "all"},
                }
            }
        },
        "/policy/document/scope/accounts/static/0/id",  # an unquoted account id
    ),
    ({"policy": {"document": {"version": 2, "scope": {}}}}, "/policy/document"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert where in str(err.value)


def test_chart_app_version_is_the_daemon_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert container(render())["image"] == f"posture-daemon:{project['version']}"
    digest = COMBINATIONS["production"]["image"]
    assert container(render(COMBINATIONS["production"]))["image"] == (
        f"{digest['repository']}@{digest['digest']}"
    )


# ------------------------------------------------------------------------------------------
# Rules and dashboards: one source (deploy/prometheus, grafana/), synced into the chart.

FIXTURE_RULES = """\
groups:
  - name: posture-fixture
    rules:
      - alert: PostureFixtureTargetDown
        expr: posture_target_up == 0
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.aws_account_id }}/{{ $labels.aws_region }} unreadable"
          description: "value {{ $value }} since {{ humanizeDuration 900 }}"
      - record: posture:violations:sum
        expr: sum by (control) (posture_violations)
"""
FIXTURE_PROMTOOL_TEST = """\
rule_files: [fixture.rules.yml]
tests: []
"""
FIXTURE_DASHBOARD = {
    "title": "Posture fixture",
    "uid": "posture-fixture",
    "panels": [
        {"type": "stat", "title": "{{control}}", "targets": [{"expr": "sum(posture_violations)"}]}
    ],
}


def _promtool_check(spec: dict[str, Any], tmp: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (make system-deps)"
    path = tmp / "spec.yml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboards_are_synced_into_the_chart_and_rendered(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(CHART, root / deploy.CHART, ignore=shutil.ignore_patterns("files"))
    (root / deploy.RULES_SOURCE).mkdir(parents=True)
    (root / deploy.RULES_SOURCE / "fixture.rules.yml").write_text(FIXTURE_RULES)
    (root / deploy.RULES_SOURCE / "fixture_test.yml").write_text(FIXTURE_PROMTOOL_TEST)
    (root / deploy.DASHBOARDS_SOURCE).mkdir()
    dashboard_text = json.dumps(FIXTURE_DASHBOARD, indent=2) + "\n"
    (root / deploy.DASHBOARDS_SOURCE / "posture-overview.json").write_text(dashboard_text)

    copies = deploy.chart_copies(root)
    assert sorted(str(p) for p in copies) == [
        "helm/posture-daemon/files/dashboards/posture-overview.json",
        "helm/posture-daemon/files/rules/fixture.rules.yml",  # not the promtool test file
    ]
    stale = root / deploy.CHART_RULES / "removed.rules.yml"
    stale.parent.mkdir(parents=True)
    stale.write_text(FIXTURE_RULES)
    assert deploy.stale_files(root, copies)  # missing copies and a stale one
    deploy.write(root, copies)
    assert not deploy.stale_files(root, copies) and not stale.exists()

    values = {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}}
    manifests = render(values, chart=root / deploy.CHART)
    rule = one(manifests, "PrometheusRule")
    assert rule["metadata"]["name"] == "posture-daemon-fixture-rules"
    # the same rules as the source, Prometheus templates untouched by Helm
    assert rule["spec"] == yaml.safe_load(FIXTURE_RULES)
    _promtool_check(rule["spec"], tmp_path)
    dashboards = [m for m in kinds(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    (dashboard,) = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["posture-overview.json"] + "\n" == dashboard_text
    assert not kinds(render({}, chart=root / deploy.CHART), "PrometheusRule")


def test_the_chart_renders_the_repository_rules_and_dashboards(tmp_path: Path) -> None:
    """Whatever rule files and dashboards the project has today, the chart ships all of them."""
    rule_files = deploy.rule_files(ROOT)
    dashboards = deploy.dashboard_files(ROOT)
    manifests = render(COMBINATIONS["monitoring"])
    rules = kinds(manifests, "PrometheusRule")
    assert len(rules) == len(rule_files)
    for rule, source in zip(rules, rule_files, strict=True):
        assert rule["spec"]["groups"] == yaml.safe_load(source.read_text())["groups"]
        _promtool_check(rule["spec"], tmp_path)
    maps = [m for m in kinds(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert len(maps) == len(dashboards)
    for cm, source in zip(maps, dashboards, strict=True):
        assert json.loads(cm["data"][source.name]) == json.loads(source.read_text())


def test_docs_url_moves_runbook_and_dashboard_links_to_your_copy() -> None:
    """`docsUrl` replaces the project's docs URL in the shipped rules and dashboards, nothing else."""
    helper = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f'define "posture-daemon.projectDocsUrl" -}}}}\n{DOCS_URL}\n' in helper
    mirror = "https://wiki.example.com/posture/docs"
    default = render(COMBINATIONS["monitoring"])
    moved = render({**COMBINATIONS["monitoring"], "docsUrl": mirror})
    default_text, moved_text = json.dumps(default), json.dumps(moved)
    assert DOCS_URL in default_text and mirror not in default_text
    assert DOCS_URL not in moved_text

    def relink(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(DOCS_URL, mirror)
        if isinstance(value, list):
            return [relink(v) for v in value]
        if isinstance(value, dict):
            return {k: relink(v) for k, v in value.items()}
        return value

    assert moved == relink(default)  # only the links moved
    urls = [
        rule["annotations"]["runbook_url"]
        for manifest in kinds(moved, "PrometheusRule")
        for group in manifest["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert urls and all(u.startswith(f"{mirror}/runbooks.md#posture") for u in urls)
    docs_variables = [
        variable["query"]
        for cm in kinds(moved, "ConfigMap")
        if "dashboard" in cm["metadata"]["name"]
        for text in cm["data"].values()
        for variable in json.loads(text)["templating"]["list"]
        if variable["name"] == "docs"
    ]
    assert docs_variables and set(docs_variables) == {mirror}
    with pytest.raises(Exception, match="docsUrl"):
        render({"docsUrl": "https://wiki.example.com/docs/"})  # no trailing slash


# ------------------------------------------------------------------------------------------
# Misconfiguration scan of the rendered manifests (trivy's embedded checks, offline).


def test_rendered_manifests_pass_a_misconfiguration_scan(tmp_path: Path) -> None:
    scan = tmp_path / "rendered"
    for combination, values in COMBINATIONS.items():
        directory = scan / combination
        directory.mkdir(parents=True)
        for i, manifest in enumerate(render(values)):
            name = re.sub(r"[^a-z0-9]+", "-", f"{manifest['kind']}-{manifest['metadata']['name']}")
            (directory / f"{i:02d}-{name.lower()}.yaml").write_text(yaml.safe_dump(manifest))
    findings = trivy_findings(scan, tmp_path / "cache")
    assert not high(findings), high(findings)
    # the scanner really checks: the same Deployment with a writable root filesystem is flagged
    bad = tmp_path / "bad"
    bad.mkdir()
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ] = False
    (bad / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    assert any("KSV-0014" in line for line in high(trivy_findings(bad, tmp_path / "cache")))
