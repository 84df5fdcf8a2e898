"""The trace reader of tests/sealed.py: which strace lines name a destination outside loopback.

The whole local demo runs once, under strace, in test_local_demo.py (one demo run for both
questions: does the demo pass, and does it send anything outside loopback).
"""

from __future__ import annotations

import pytest

from sealed import outside_loopback

pytestmark = pytest.mark.integration


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
