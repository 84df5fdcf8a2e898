"""``regionha local up`` stops cleanly on SIGINT and SIGTERM, at any moment, and leaves nothing behind:
no namespace, no state file of its own, no temporary folder. It is quiet before its build: no scheduled
function fires before the build has saved its inventory, so no error line is printed.

These start the real local runtime (root, a network namespace of its own): integration tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from regionha.cli import local as local_cli
from regionha.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials."""


def start_cli(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``regionha ARGS`` in a subprocess whose temporary folders go under ``tmp_path/tmp`` (returned)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT / "layers" / "regionha"), "TMPDIR": str(tmp), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "regionha.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, tmp


def start_up(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path, Path]:
    """``regionha local up`` in a subprocess whose temporary folders go under ``tmp_path/tmp``."""
    state = tmp_path / "local-state.json"
    up, tmp = start_cli(tmp_path, "local", "up", "--local-state", str(state), *extra)
    return up, state, tmp


def read_until(up: subprocess.Popen[str], text: str, timeout: float = 300) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    raise AssertionError(f"never printed {text!r}:\n" + "\n".join(lines[-40:]))


def signal_after(proc: subprocess.Popen[str], text: str, sig: int,
                 while_running: Callable[[], None] | None = None) -> tuple[list[str], list[str]]:
    """Wait for ``text``, run ``while_running``, send ``sig``, wait for the exit (killing it if anything
    fails); returns (lines before the signal, lines after)."""
    try:
        before = read_until(proc, text)
        if while_running is not None:
            while_running()
        proc.send_signal(sig)
        try:
            rest, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # Say where it hangs: every thread's stack, then what it printed after the signal.
            stacks = _stacks(proc.pid)
            proc.kill()
            rest, _ = proc.communicate()
            raise AssertionError(f"still running 120 s after the signal; its threads:\n{stacks}\n"
                                 f"its output after the signal:\n{rest}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    return before, rest.splitlines()


def _stacks(pid: int) -> str:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "(py-spy not installed)"
    done = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def namespaces_of(pid: int) -> list[str]:
    from regionha.local.host import netns

    return [n for n in netns.namespaces() if n.startswith(f"{netns.PREFIX}{pid}-")]


def test_sigint_stops_a_built_runtime_and_leaves_nothing_behind(tmp_path: Path) -> None:
    up, state, tmp = start_up(tmp_path)

    def running() -> None:  # its namespace and workdir exist while it runs
        netns = json.loads(state.read_text())["netns"]
        assert netns in namespaces_of(up.pid) and list(tmp.iterdir())

    before, after = signal_after(up, "up; Ctrl-C", signal.SIGINT, running)

    assert up.returncode == 0, "\n".join(before + after)
    assert "SIGINT: stopping" in after and after[-1].startswith("stopped:")
    assert not state.exists() and namespaces_of(up.pid) == [] and list(tmp.iterdir()) == []
    # Quiet before the build: no scheduled function fired and failed, no log record, no Python dict.
    printed = before + after
    assert not [line for line in printed if "failed" in line or line.lstrip().startswith(("{", "Traceback"))]
    assert any("schedules held until its inventory was saved" in line for line in printed)


def test_sigterm_during_the_build_stops_at_once_and_leaves_nothing_behind(tmp_path: Path) -> None:
    up, state, tmp = start_up(tmp_path)
    before, after = signal_after(up, "building (build state machine)", signal.SIGTERM)

    assert up.returncode == 0, "\n".join(before + after)
    assert "SIGTERM: stopping" in after and not any(line.startswith("built ") for line in after)
    assert not state.exists() and namespaces_of(up.pid) == [] and list(tmp.iterdir()) == []


def test_output_json_prints_the_state_document_on_stdout(tmp_path: Path, capsys, monkeypatch) -> None:
    """``--output json``: the state file's content on stdout, the progress on stderr (as everywhere)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local_cli, "wait_for_signal", lambda: os.kill(os.getpid(), signal.SIGINT))  # stop once up

    assert main(["local", "up", "--local-state", str(tmp_path / "state.json"), "--output", "json"]) == 0

    captured = capsys.readouterr()
    state = json.loads(captured.out)
    assert state["endpoint_url"].startswith("http://127.") and state["netns"].startswith("regionha-")
    assert "up; Ctrl-C" in captured.err and "stopped:" in captured.err
    assert not (tmp_path / "state.json").exists()


def test_sigint_interrupts_the_demo_which_stops_the_runtime_and_leaves_nothing_behind(tmp_path: Path) -> None:
    demo, tmp = start_cli(tmp_path, "local", "demo")
    before, after = signal_after(demo, "✔ build", signal.SIGINT)

    assert demo.returncode == 130, "\n".join(before + after)
    assert any(line.startswith("✔ stop the local runtime") for line in after)
    assert "demo interrupted (SIGINT)" in after[-1]
    assert namespaces_of(demo.pid) == [] and list(tmp.iterdir()) == []
