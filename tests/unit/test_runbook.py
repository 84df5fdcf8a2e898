"""docs/runbook.md stays complete: every alarm links to its section, every metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = (REPO / "docs/runbook.md").read_text()
_DATAPOINT = r'Datapoint\(\s*"([A-Za-z]+)",.*?"(Count|Seconds|Milliseconds|Percent|Bytes|None)"'
ANCHORS = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', RUNBOOK))


class _Loader(yaml.SafeLoader):
    """template.yaml with its CloudFormation tags read as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_every_alarm_description_links_to_its_runbook_section() -> None:
    template = yaml.load((REPO / "template.yaml").read_text(), Loader=_Loader)
    alarms = {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"].startswith("AWS::CloudWatch::")
              and "Alarm" in r["Type"]}
    assert alarms
    for logical_id, props in alarms.items():
        links = re.findall(r"docs/runbook\.md#([a-z0-9-]+)", props["AlarmDescription"])
        assert links and set(links) <= ANCHORS, (logical_id, props["AlarmDescription"])
        assert len(props["AlarmDescription"]) <= 1024  # CloudWatch's limit


def test_every_metric_the_code_emits_is_in_the_runbook_with_its_unit() -> None:
    emitted: dict[str, str] = {}
    for source in [*(REPO / "layers/regionha/regionha").rglob("*.py"), *(REPO / "functions").rglob("app.py")]:
        for name, unit in re.findall(_DATAPOINT, source.read_text()):
            emitted[name] = unit
    assert {"PathSuccess", "FailoverRefused", "RecoverySeconds"} <= set(emitted)
    table = {m: u for m, u in re.findall(r"^\| `([A-Za-z]+)` \| ([A-Za-z]+) \|", RUNBOOK, re.MULTILINE)}
    for name, unit in emitted.items():
        assert table.get(name) == unit, f"{name} ({unit}) is not in docs/runbook.md's metrics table"


def test_every_alarm_the_build_makes_links_to_its_runbook_section() -> None:
    # The per-path, per-node and critical alarms are made from the topology (ConvergeWatch), not the template.
    from regionha.converge.watch import _COMPOSITE_DESCRIPTION
    from regionha.topology import load_topology
    from regionha.watch.alarms import canary_alarm_intents

    descriptions = [i.description for i in canary_alarm_intents(load_topology())] + [_COMPOSITE_DESCRIPTION]
    for description in descriptions:
        links = re.findall(r"docs/runbook\.md#([a-z0-9-]+)", description)
        assert links and set(links) <= ANCHORS, description
