"""template.yaml and the state machines pass the linters, build without Docker, and grant least privilege."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
ASL_FILES = sorted((REPO / "statemachines").glob("*.asl.json"))
ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_EC2_METADATA_DISABLED": "true"}
# `make setup` downloads the layer's wheels here (scripts/bootstrap.sh); with it, sam build needs no
# registry (layers/regionha/Makefile installs from WHEELHOUSE with --no-index).
WHEELHOUSE = Path(os.environ.get("WHEELHOUSE") or REPO / ".wheelhouse").resolve()


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags kept as {"Fn::X": value}."""


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        return {name: value.split(".", 1) if suffix == "GetAtt" else value}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_Loader.add_multi_constructor("!", _tag)


def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_Loader)


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed (make setup)")
    return path


def test_cfn_lint_is_clean():
    result = subprocess.run([_tool("cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes_offline():
    result = subprocess.run(
        [_tool("sam"), "validate", "--lint", "--template-file", str(TEMPLATE)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("asl", ASL_FILES, ids=lambda p: p.name)
def test_statelint_passes(asl: Path):
    # ${...} substitutions are resolved at deploy time, hence --ignore=URI.
    result = subprocess.run([_tool("statelint"), "--ignore=URI", str(asl)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("asl", ASL_FILES, ids=lambda p: p.name)
def test_state_machines_follow_the_house_rules(asl: Path):
    """A top-level timeout; every Lambda task retries transient errors and catches into a failure path;
    every Wait takes its seconds from the input (the local runtime shortens them)."""
    definition = json.loads(asl.read_text())
    assert isinstance(definition.get("TimeoutSeconds"), int)

    def states(container: dict):
        for name, state in container["States"].items():
            yield name, state
            for branch in state.get("Branches", []):
                yield from states(branch)
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if processor:
                yield from states(processor)

    for name, state in states(definition):
        if state["Type"] == "Task" and str(state.get("Resource", "")).startswith("${"):
            errors = {e for r in state.get("Retry", []) for e in r["ErrorEquals"]}
            assert {"Lambda.ServiceException", "TransientError"} <= errors, name
        if state["Type"] == "Wait":
            assert "SecondsPath" in state or "TimestampPath" in state, f"{name}: a fixed Wait"


def test_every_substitution_is_defined_and_used():
    resources = template()["Resources"]
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        props = resource["Properties"]
        text = (REPO / props["DefinitionUri"]).read_text()
        import re

        used = set(re.findall(r"\$\{(\w+)\}", text))
        assert used == set(props.get("DefinitionSubstitutions", {})), logical_id


def _statements(resource: dict) -> list[dict]:
    props = resource.get("Properties", {})
    out = []
    for policy in props.get("Policies", []) or []:
        if isinstance(policy, dict) and "Statement" in policy:
            out += policy["Statement"]
        elif isinstance(policy, dict) and "PolicyDocument" in policy:
            out += policy["PolicyDocument"]["Statement"]
    return out


def test_iam_is_least_privilege():
    """No wildcard actions anywhere; writes to resources are scoped where the API allows."""
    for logical_id, resource in template()["Resources"].items():
        for statement in _statements(resource):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for action in actions:
                assert action != "*" and not action.endswith(":*"), f"{logical_id}: {action}"


def test_functions_build_with_makefiles_on_a_supported_runtime():
    globals_ = template()["Globals"]["Function"]
    assert globals_["Runtime"] in ("python3.12", "python3.13")
    for logical_id, resource in template()["Resources"].items():
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion"):
            assert resource.get("Metadata", {}).get("BuildMethod") == "makefile", logical_id
            code = resource["Properties"].get("CodeUri") or resource["Properties"].get("ContentUri")
            makefile = (REPO / code / "Makefile").read_text()
            assert f"build-{logical_id}:" in makefile, logical_id


@pytest.mark.slow
def test_sam_build_works_without_docker(tmp_path: Path):
    env = {**ENV, "WHEELHOUSE": str(WHEELHOUSE)} if (WHEELHOUSE / ".complete").exists() else ENV
    result = subprocess.run(
        [
            _tool("sam"),
            "build",
            "--template-file",
            str(TEMPLATE),
            "--build-dir",
            str(tmp_path / "build"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layer = tmp_path / "build" / "RegionhaLayer" / "python"
    assert (layer / "regionha" / "topology" / "__init__.py").exists()
    assert not (layer / "regionha" / "local").exists()  # the local runtime never ships
    assert list(layer.glob("pydantic_core/_pydantic_core.cpython-313-*.so"))  # cross-installed for the runtime
    for function in ("ValidateTopologyFunction", "RunCanaryFunction", "FailoverControllerFunction"):
        assert (tmp_path / "build" / function / "app.py").exists()
