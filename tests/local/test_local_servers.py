"""The local runtime's HTTP servers (node services, the emulated AWS) bind without name lookups,
through netguard.NoLookupServerMixin (moved from tests/unit/test_netguard.py)."""

from __future__ import annotations

import socket

import pytest


@pytest.mark.parametrize("server", ["node", "emulated-aws"])
def test_local_http_servers_bind_without_reverse_lookups(monkeypatch, server):
    # glibc would send these lookups to /etc/resolv.conf's nameserver, below the socket guard.
    def lookup(*args):
        raise AssertionError(f"name lookup {args}")

    for name in ("getfqdn", "gethostbyaddr", "gethostbyname", "gethostbyname_ex", "getnameinfo"):
        monkeypatch.setattr(socket, name, lookup)
    if server == "node":
        from regionha.local.host.nodes import NodeService

        node = NodeService("node-a", "127.0.0.1", 0)
        node.start()
        node.stop()
        assert node.port > 0
    else:
        from regionha.local.aws.server import _request_handler, _Server

        wsgi = _Server("127.0.0.1", 0, lambda environ, start: [], _request_handler())
        try:
            assert wsgi.server_name == "127.0.0.1"
        finally:
            wsgi.server_close()
