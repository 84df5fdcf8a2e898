"""The whole local demo, traced at the kernel level, sends nothing outside loopback.

``strace -f`` follows every process and thread of ``regionha local demo`` (moto server, handlers,
named, node servers, ip and tc) and records each connect/sendto/sendmsg/sendmmsg with its destination.
A destination outside 127.0.0.0/8 (or ::1) fails the test, whether or not the packet could have
left: a library resolving through ``/etc/resolv.conf`` (``socket.getfqdn()`` in ``http.server``
did) shows up here even where the Python socket guard never sees it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

TRACED = "connect,sendto,sendmsg,sendmmsg"
# strace prints IPv4 destinations as inet_addr("a.b.c.d") and IPv6 ones as inet_pton(AF_INET6, "x", ...).
_ADDRESS = re.compile(r'inet_addr\("(?P<v4>[^"]+)"\)|inet_pton\(AF_INET6, "(?P<v6>[^"]+)"')


def outside_loopback(trace: str) -> list[str]:
    """The trace lines that name an IPv4/IPv6 destination outside 127.0.0.0/8 and ::1."""
    bad = []
    for line in trace.splitlines():
        for m in _ADDRESS.finditer(line):
            ip = ipaddress.ip_address(m.group("v4") or m.group("v6"))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not ip.is_loopback:
                bad.append(line.strip())
                break
    return bad


def test_outside_loopback_reads_strace_lines():
    trace = "\n".join([
        '101 connect(5, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '101 sendto(6, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.2.10.10")}, 16) = 1',
        '102 connect(7, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>',
        '102 connect(8, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
        '103 sendto(3, [{nlmsg_len=32, nlmsg_type=RTM_NEWADDR}], 32, 0, NULL, 0) = 32',
    ])
    assert [line.split()[0:2] for line in outside_loopback(trace)] == [["101", "connect(5,"], ["102", "connect(7,"]]


def test_a_traced_local_demo_sends_nothing_outside_loopback(tmp_path):
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is not installed (scripts/bootstrap.sh installs it)")
    log = tmp_path / "trace.txt"
    # --seccomp-bpf stops the tracee only on the traced calls, so the demo runs at nearly full speed.
    command = [
        strace, "-f", "-qq", "--seccomp-bpf", "-e", f"trace={TRACED}", "-e", "signal=none", "-s", "64",
        "-o", str(log), "--",
        sys.executable, "-m", "regionha.cli", "local", "demo", "--json", str(tmp_path / "report.json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=os.environ, cwd=tmp_path)
    trace = log.read_text()

    bad = outside_loopback(trace)
    assert not bad, f"{len(bad)} calls to addresses outside loopback:\n" + "\n".join(bad[:20])
    # The whole demo ran (whether its drill passed is test_local_demo's question, not this one's) and
    # the trace saw its traffic: DNS to the on-prem resolver's loopback image.
    report = tmp_path / "report.json"
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    phases = [p["name"] for p in json.loads(report.read_text())["phases"]]
    assert phases[0] == "start the local runtime" and phases[-1] == "stop the local runtime", phases
    assert len(phases) == 7, phases
    assert 'inet_addr("127.2.10.10")' in trace
