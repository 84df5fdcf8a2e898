"""Test helper: run a command under ``strace -f`` and find every destination outside loopback.

``strace -f`` follows every process and thread (moto server, handlers, named, node servers, ip and
tc) and records each connect/sendto/sendmsg/sendmmsg with its destination. A destination outside
127.0.0.0/8 (or ::1) is what the network safety rule forbids, whether or not the packet could have
left: a library resolving through ``/etc/resolv.conf`` (``socket.getfqdn()`` in ``http.server``
did) shows up here even where the Python socket guard never sees it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

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


def traced_run(command: list[str], log: Path, *, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """``command`` under ``strace -f``, its traced calls written to ``log``; raises if strace is missing."""
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace is not installed (scripts/bootstrap.sh installs it)")
    # --seccomp-bpf stops the tracee only on the traced calls, so the command runs at nearly full speed.
    return subprocess.run(
        [strace, "-f", "-qq", "--seccomp-bpf", "-e", f"trace={TRACED}", "-e", "signal=none", "-s", "64",
         "-o", str(log), "--", *command],
        capture_output=True, text=True, timeout=timeout, env=os.environ, cwd=cwd,
    )
