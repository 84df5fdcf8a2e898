"""``regionha canary run`` as the on-prem agent runs it: rounds that overlap when one is slow (the
deployment's 10-second alarms need a datapoint every round, and a silent path costs a probe timeout),
and nothing published before the build made the record (``--wait-for-record``)."""

from __future__ import annotations

import threading
from pathlib import Path

import boto3

from regionha.cli import main
from regionha.cli.canary import EXIT_FAILED, EXIT_INVALID, EXIT_OK, _run_rounds

SITE_FILE = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/onprem-site.yaml"


def test_a_slow_round_does_not_hold_back_the_next():
    second_started = threading.Event()
    slots = []

    def one_round(slot):
        slots.append(slot)
        if len(slots) == 1:
            # The first round finishes only once the second has started: they overlapped.
            return EXIT_OK if second_started.wait(10) else EXIT_INVALID
        second_started.set()
        return EXIT_FAILED

    assert _run_rounds(one_round, 2, 0.05) == EXIT_FAILED
    assert second_started.is_set() and (slots[1] - slots[0]).total_seconds() >= 0.05


def test_a_round_that_cannot_run_stops_the_loop():
    calls = []
    assert _run_rounds(lambda slot: calls.append(slot) or EXIT_INVALID, None, None) == EXIT_INVALID
    assert len(calls) == 1


def test_nothing_is_published_before_the_record_exists(moto_aws, capsys):
    # No zone, no record: the agent installed before the build waits (and probes nothing).
    code = main(["canary", "run", "--topology", str(SITE_FILE), "--publish", "--wait-for-record", "--count", "2",
                 "--region", "ap-southeast-1"])
    assert code == EXIT_OK
    assert "does not exist yet (no build): waiting for it before publishing" in capsys.readouterr().err
    assert boto3.client("cloudwatch", region_name="ap-southeast-1").list_metrics()["Metrics"] == []
