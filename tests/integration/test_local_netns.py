"""The runtime's network namespace: loopback only, inherited by threads and children, removed
without a trace, reaped after a crash, and enterable with ``regionha local exec``."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from regionha.local.host import netns

pytestmark = pytest.mark.integration


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines()]


def _gone(pid: int, within: float = 5.0) -> bool:
    """No such process, or a zombie its new parent has not reaped yet, within ``within`` seconds
    (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _send_errno(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"x", (address, 53))
        except OSError as e:
            return e.errno
    return 0


def test_inside_there_is_only_loopback_and_threads_and_children_inherit_it():
    outside = os.readlink("/proc/thread-self/ns/net")
    with netns.Namespace() as ns:
        assert netns.current() == ns.name
        assert _links() == ["lo"]  # a child process (ip) is inside too
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append((netns.current(), _send_errno("10.255.255.53"))))
        worker.start()
        worker.join()
        assert seen == [(ns.name, errno.ENETUNREACH)]  # a thread started inside stays inside
        assert _send_errno("127.0.0.1") == 0
        assert (netns.NETNS_ETC / ns.name / "resolv.conf").read_text() == netns.RESOLV_CONF
    assert os.readlink("/proc/thread-self/ns/net") == outside
    assert ns.name not in netns.namespaces()
    assert not (netns.NETNS_ETC / ns.name).exists() and not ns.directory.exists()


def test_a_namespace_whose_owner_died_is_reaped_with_what_runs_inside():
    # GIVEN a process that made a namespace, left a process running in it and died without cleaning up
    script = (
        "import os, subprocess\n"
        "from regionha.local.host.netns import Namespace\n"
        "ns = Namespace().create()\n"
        "p = subprocess.Popen(['ip', 'netns', 'exec', ns.name, 'sleep', '300'], start_new_session=True,\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(ns.name, p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30)
    name, pid = out.stdout.split()
    assert name in netns.namespaces()
    assert int(pid) in netns.pids(name)

    # WHEN the next runtime makes its namespace
    with netns.Namespace() as ns:
        # THEN the dead one is gone, with its process
        assert name in ns.stale_reaped
        assert name not in netns.namespaces()
        assert _gone(int(pid))


def test_local_exec_runs_a_command_in_the_namespace_of_the_state_file(tmp_path):
    state_file = tmp_path / "local-state.json"
    with netns.Namespace() as ns:
        subprocess.run(["ip", "addr", "add", "127.9.9.9/32", "dev", "lo"], check=True)
        state_file.write_text(json.dumps({"netns": ns.name, "endpoint_url": "http://127.0.0.1:5000",
                                          "region": "ap-southeast-1"}))
        cli = [sys.executable, "-m", "regionha.cli", "local", "exec", "--state-file", str(state_file), "--"]
        # Run from outside, as a user's shell would.
        ns.leave()
        done = subprocess.run([*cli, "sh", "-c", "ip -4 -o addr show dev lo; echo $AWS_ENDPOINT_URL"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "127.9.9.9/32" in done.stdout and "http://127.0.0.1:5000" in done.stdout
    gone = subprocess.run([*cli, "true"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 2 and "is gone" in gone.stderr
