"""The README's own local flow at the topology's TTL (60 s): ``regionha local up``, then ``regionha drill
start --local-state``. It used to fail: alarms ran on a 20x clock while named cached the record for 60
real seconds, so the stale-answer alarm fired before the TTL ran out. With one clock (DNS TTLs in
real seconds of the emulated clock, the controller's waits on it too) the acceptance drill passes.

Runs the two commands as a user would, in this (loopback-only) network namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws_credentials() -> None:
    """The commands set their own endpoint and fake credentials."""


def test_local_up_then_the_acceptance_drill_passes_at_the_topology_ttl(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT / "layers" / "regionha")}
    state = tmp_path / "local-state.json"
    cli = [sys.executable, "-m", "regionha.cli"]
    with (tmp_path / "up.log").open("w") as log:
        up = subprocess.Popen([*cli, "local", "up", "--state-file", str(state)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (state.exists() and state.stat().st_size) and up.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert state.exists(), (tmp_path / "up.log").read_text()[-3000:]
        assert json.loads(state.read_text())  # the runtime is up and built

        report = tmp_path / "drill.json"
        drill = subprocess.run([*cli, "drill", "start", "--local-state", str(state), "--report-json", str(report)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

        assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
        assert "regionha drill PASSED: scenario acceptance" in drill.stdout
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(timeout=30)
