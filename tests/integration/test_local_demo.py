"""The whole demo (build → resolve → canary → acceptance drill → teardown), and a drill that must fail.

The second test is the proof that the drill can fail: with the topology in external mode nothing
moves the record when the active node stops, so the drill must report FAILED, the failover alarm
must have fired, and the restore must still leave nothing broken.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from regionha.local.demo import Demo, drill_input, drill_report_of
from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import load_topology

pytestmark = [pytest.mark.integration, pytest.mark.serial]


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


def test_the_demo_passes_with_an_acceptance_drill_report(tmp_path):
    lines: list[str] = []
    runtime = LocalRuntime(local_topology(load_topology(), ttl=3))

    report = Demo(runtime, lines.append, out_dir=tmp_path).run()

    print("\n" + "\n".join(lines[1:3]))  # the figures of this run (phases, the build's first canary round)
    print(" | ".join(f"{p['name'].split(' (')[0].split(':')[0]} {p['seconds']:.1f} s" for p in report["phases"])
          + f" | total {report['seconds']:.1f} s")
    assert report["ok"], json.dumps(report.get("phases"), indent=1)
    assert [p["name"] for p in report["phases"]] == [
        "start the local runtime",
        "build (build state machine)",
        "resolve through every forwarder path",
        "canary: scheduled runs on the healthy deployment",
        "drill: the acceptance procedure (drill state machine)",
        "teardown (teardown state machine)",
        "stop the local runtime",
    ]
    drill = report["drill"]
    assert drill["status"] == "PASSED"
    assert [s["name"][:2] for s in drill["steps"]] == ["pr", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 "]
    assert all(s["ok"] and s["end"] >= s["start"] for s in drill["steps"])
    # Keyed as the drill keys it: step 4 measures the Osaka path and on-prem moving to Server-B, step 7
    # the Tokyo endpoint IPs and on-prem back to Server-A; each cut path recovers once restored.
    assert set(drill["recovery_seconds"]) == {
        "osaka-bind@Server-B", "onprem@Server-B", "tokyo-resolver/10.0.111.100@Server-A",
        "tokyo-resolver/10.0.111.101@Server-A", "onprem@Server-A",
        "tokyo-resolver/10.0.111.100@Server-B", "tokyo-resolver/10.0.111.101@Server-B", "osaka-bind@Server-A",
    }
    assert all(0 <= s < 60 for s in drill["recovery_seconds"].values())
    # The drill's own report outlives the emulated bucket, and the demo says where it is.
    kept = json.loads((tmp_path / "drill-report.json").read_text())
    assert kept["recovery_seconds"] == drill["recovery_seconds"]
    assert "Drill PASSED" in (tmp_path / "drill-report.html").read_text()
    assert any(str(tmp_path / "drill-report.html") in line for line in lines)
    # A short, quiet progress list: one line per phase plus one per drill step, no log records.
    assert len(lines) <= 30 and not [line for line in lines if line.lstrip().startswith("{")]
    assert drill["alarms"]["regionha-regionha-ref-path-down-osaka-bind"]["fired_during_fault"]
    # The alarms are the build's, named from the topology (ConvergeWatch).
    assert not any(a.get("fired") for a in drill["alarms"].values() if a["critical"])
    # The canary's clean minutes raise nothing; a cut path's alarm going to ALARM and back is the drill's proof.
    assert report["canary"]["clean_runs"] >= 3 and not report["canary"]["clean_alarms_fired"]
    assert drill["alarms"]["regionha-regionha-ref-path-down-osaka-bind"]["ok_after_restore"]
    assert "lo:rha" not in subprocess.run(["ip", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout


def test_in_external_mode_nothing_moves_the_record_and_the_drill_fails():
    topology = load_topology()
    topology = topology.model_copy(update={"failover": topology.failover.model_copy(update={"mode": "external"})})
    topology = local_topology(topology, ttl=5)
    with LocalRuntime(topology) as rt:
        assert rt.build().status == "SUCCEEDED"
        rt.settle()
        payload = {**drill_input(topology), "scenario": "fail-active-node", "step_timeout": 20}

        execution = rt.run_state_machine("DrillStateMachine", payload, kind="drill", timeout=300)
        report = drill_report_of(rt, execution)
        restored_record = rt.clients.route53().list_hosted_zones()  # the emulator still answers

        assert execution.status == "FAILED"
        assert report["status"] == "FAILED"
        fired = {
            name for name, a in report["alarms"].items()
            if "ALARM" in a.get("seen", []) and ("failover" in name)
        }
        assert fired, report["alarms"]
        assert report["restore"]["ok"] and report["restore"]["left_broken"] == [], report["restore"]
        assert restored_record["HostedZones"]
