"""The whole demo (build → resolve → canary → acceptance drill → teardown), and a drill that must fail.

The demo runs once, as ``regionha local demo`` (what ``make demo`` runs) under ``strace -f``, for two
questions: does it pass with an acceptance drill report, and does anything it starts send to an
address outside loopback (tests/sealed.py reads the trace).

The last test is the proof that the drill can fail: with the topology in external mode nothing
moves the record when the active node stops, so the drill must report FAILED, the failover alarm
must have fired, and the restore must still leave nothing broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from regionha.local.demo import drill_input, drill_report_of
from regionha.local.host import netns
from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import load_topology
from sealed import outside_loopback, traced_run

pytestmark = pytest.mark.integration


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@dataclass(frozen=True)
class DemoRun:
    report: dict  # the --json report, {} if the demo wrote none
    lines: list[str]  # what the demo printed
    out_dir: Path  # where it kept the drill's report (out/ under its working directory)
    trace: str  # strace's lines: every connect/sendto/sendmsg/sendmmsg of every process and thread
    namespaces_left: set[str]  # network namespaces that were not there before the run


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoRun:
    """``regionha local demo --json report.json`` (TTL 3 s, its defaults) under strace, once."""
    cwd = tmp_path_factory.mktemp("demo")
    before = set(netns.namespaces())
    done = traced_run([sys.executable, "-m", "regionha.cli", "local", "demo", "--json", str(cwd / "report.json")],
                      cwd / "trace.txt", cwd=cwd)
    report_file = cwd / "report.json"
    return DemoRun(
        report=json.loads(report_file.read_text()) if report_file.exists() else {},
        lines=done.stdout.splitlines(),
        out_dir=cwd / "out",
        trace=(cwd / "trace.txt").read_text(),
        namespaces_left=set(netns.namespaces()) - before,
    )


def test_a_traced_local_demo_sends_nothing_outside_loopback(demo):
    bad = outside_loopback(demo.trace)
    assert not bad, f"{len(bad)} calls to addresses outside loopback:\n" + "\n".join(bad[:20])
    # The whole demo ran (whether its drill passed is the next test's question, not this one's) and
    # the trace saw its traffic: DNS to the on-prem resolver's loopback image.
    assert demo.report, "\n".join(demo.lines[-40:])
    phases = [p["name"] for p in demo.report["phases"]]
    assert phases[0] == "start the local runtime" and phases[-1] == "stop the local runtime", phases
    assert len(phases) == 7, phases
    assert 'inet_addr("127.2.10.10")' in demo.trace


def test_the_demo_passes_with_an_acceptance_drill_report(demo):
    report, lines, tmp_path = demo.report, demo.lines, demo.out_dir

    assert report["ok"], json.dumps(report.get("phases"), indent=1)
    assert [p["name"] for p in report["phases"]] == [
        "start the local runtime",
        "build (build state machine)",
        "resolve through every forwarder path",
        "canary: scheduled runs, alarms on a cut path",
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
    assert any("out/drill-report.html" in line for line in lines)
    # A short, quiet progress list: one line per phase plus one per drill step, no log records.
    assert len(lines) <= 30 and not [line for line in lines if line.lstrip().startswith("{")], "\n".join(lines)
    assert drill["alarms"]["regionha-regionha-ref-path-down-osaka-bind"]["fired_during_fault"]
    # The alarms are the build's, named from the topology (ConvergeWatch).
    assert not any(a.get("fired") for a in drill["alarms"].values() if a["critical"])
    assert report["canary"]["path_alarm_fired"] and not report["canary"]["critical_fired"]
    assert "lo:rha" not in subprocess.run(["ip", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert not demo.namespaces_left


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
