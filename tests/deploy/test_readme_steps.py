"""The README's copy-paste deployment steps match the artefacts they use.

Every `aws cloudformation deploy` / `create-stack-set` in the README names a template of the
repository, passes only parameters that template has, and every parameter without a default;
the Helm values file the README writes renders with the chart (schema included).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from .chart import container, one, render
from .test_cloudformation import load_template

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

SAMPLE_SHELL = {
    "REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    "HUB_ROLE_ARN": "arn:aws:iam::123456789012:role/PostureDaemonHub",
    "AWS_REGION": "eu-west-1",
    "EXTERNAL_ID": "0123456789abcdef",
}


def _commands() -> list[list[str]]:
    """The shell commands of the README's sh blocks, continuations joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL):
        text = re.sub(r"\\\n\s*", " ", block)
        text = re.sub(r"<<VALUES\n.*?\nVALUES\n", "\n", text, flags=re.DOTALL)
        for raw in text.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line, comments=True))
    return out


def _cloudformation() -> list[tuple[str, dict[str, str]]]:
    """(template path, parameters) of every stack the README deploys."""
    out = []
    for cmd in _commands():
        if cmd[:3] == ["aws", "cloudformation", "deploy"]:
            template = cmd[cmd.index("--template-file") + 1]
            overrides: list[str] = []
            if "--parameter-overrides" in cmd:
                for arg in cmd[cmd.index("--parameter-overrides") + 1 :]:
                    if arg.startswith("--"):
                        break
                    overrides.append(arg)
            out.append((template, dict(a.split("=", 1) for a in overrides)))
        elif cmd[:3] == ["aws", "cloudformation", "create-stack-set"]:
            template = cmd[cmd.index("--template-body") + 1].removeprefix("file://")
            params = {}
            for arg in cmd[cmd.index("--parameters") + 1 :]:
                if arg.startswith("--"):
                    break
                fields = dict(f.split("=", 1) for f in arg.split(","))
                params[fields["ParameterKey"]] = fields["ParameterValue"]
            out.append((template, params))
    return out


def test_readme_stacks_pass_the_parameters_their_templates_take() -> None:
    stacks = _cloudformation()
    used = {template for template, _ in stacks}
    assert used == {
        "deploy/iam/hub-role.yaml",
        "deploy/iam/reader-role.yaml",
        "deploy/iam/organizations-role.yaml",
        "deploy/ecs/posture-daemon.yaml",
    }
    for template, params in stacks:
        declared: dict[str, Any] = load_template(ROOT / template)["Parameters"]
        unknown = sorted(params.keys() - declared.keys())
        assert not unknown, f"{template}: no such parameters {unknown}"
        required = {k for k, v in declared.items() if "Default" not in v}
        missing = sorted(required - params.keys())
        assert not missing, f"{template}: the README does not pass {missing}"
        for key, value in params.items():
            allowed = declared[key].get("AllowedValues")
            if allowed and "$" not in value:
                assert value in [str(v) for v in allowed], (template, key, value)


def test_readme_helm_values_render_with_the_chart() -> None:
    match = re.search(r"cat > posture-values.yaml <<VALUES\n(.*?)\nVALUES\n", README, re.DOTALL)
    assert match, "the README's values file"
    text = re.sub(r"\$(\w+)", lambda m: SAMPLE_SHELL[m.group(1)], match.group(1))
    values = yaml.safe_load(text)
    manifests = render(values)
    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["name"] == "posture-daemon"  # the hub role's trusted account
    assert (
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        == (SAMPLE_SHELL["HUB_ROLE_ARN"])
    )
    assert container(manifests)["image"] == f"{SAMPLE_SHELL['REGISTRY']}/posture-daemon:0.1.0"
    assert one(manifests, "Deployment")["metadata"]["name"] == "posture-daemon"  # rollout status
    hub = load_template(ROOT / "deploy/iam/hub-role.yaml")["Parameters"]
    assert hub["KubernetesServiceAccount"]["Default"] == account["metadata"]["name"]
