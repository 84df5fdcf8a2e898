"""The cluster node's service: what a node answers on its port (its own name), as EC2 user-data.

A stand-in for the clustered application, so that canaries and drills can prove the name leads to
the node that the record names, not just to some address.
"""

from __future__ import annotations

from regionha.topology import Node

_USER_DATA = """#!/bin/bash
# regionha node service: answers GET / with the node name on port {port}.
set -euo pipefail
mkdir -p /opt/regionha
cat > /opt/regionha/node.py <<'PY'
import http.server

NAME = {name!r}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (NAME + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
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


def node_user_data(node: Node) -> str:
    return _USER_DATA.format(name=node.name, port=node.port)
