"""The cluster node's service: what a node answers on its port (its own name), as EC2 user-data.

A stand-in for the clustered application, so that canaries and drills can prove the name leads to
the node that the record names, not just to some address. ``GET /peer/<name>`` is the interconnect
relay: the node dials that peer's port from its own address (the cluster's heartbeat path) and
answers the outcome as JSON (``regionha.watch.interconnect``; only the peers named here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from regionha.topology import Node
from regionha.watch.interconnect import RELAY_PATH, relay_source

_USER_DATA = """#!/bin/bash
# regionha node service: answers GET / with the node name on port {port}; GET {relay}<peer> dials a peer.
set -euo pipefail
mkdir -p /opt/regionha
cat > /opt/regionha/node.py <<'PY'
from __future__ import annotations

import http.server
import json
from urllib.parse import parse_qs, urlsplit

NAME = {name!r}
PEERS = json.loads({peers!r})  # peer name -> [address, port]: the only addresses the relay dials


{dial_peer}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.startswith({relay!r}) and url.path[len({relay!r}):] in PEERS:
            host, port = PEERS[url.path[len({relay!r}):]]
            try:
                timeout = min(float(parse_qs(url.query).get("timeout", ["2"])[0]), 10.0)
            except ValueError:
                timeout = 2.0
            self._send(200, "application/json", json.dumps(dial_peer(host, port, timeout)))
        elif url.path in ("/", ""):
            self._send(200, "text/plain", NAME + "\\n")
        else:
            self._send(404, "text/plain", "not found\\n")

    def _send(self, status, kind, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", {port}), Handler).serve_forever()
PY
cat > /etc/systemd/system/regionha-node.service <<'UNIT'
[Unit]
Description=regionha node service
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 /opt/regionha/node.py
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now regionha-node.service
"""


def node_user_data(node: Node, peers: Iterable[Node] = ()) -> str:
    """The node's user-data; ``peers``: the nodes its relay may dial (the other VPCs' nodes)."""
    table = {p.name: [str(p.ip), p.port] for p in peers}
    return _USER_DATA.format(name=node.name, port=node.port, relay=RELAY_PATH,
                             peers=json.dumps(table, sort_keys=True), dial_peer=relay_source())
