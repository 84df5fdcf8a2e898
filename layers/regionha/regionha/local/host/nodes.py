"""Cluster nodes of the local runtime: a real HTTP server per node, up exactly while its instance runs.

``GET /`` answers the node's name (what a client reaching ``sample.cluster.local`` checks), ``GET
/health`` answers ``ok``, ``GET /peer/<node>`` is the interconnect relay (the node dials its peer's port
from its own address and answers the outcome as JSON, as the node service's user-data does on EC2;
``regionha.watch.interconnect``). Stopped means the port is closed: nothing listens, a connect is refused,
just as from a stopped EC2 instance's address (modulo the security group, which the network cuts model).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from regionha.errors import ConfigurationError
from regionha.netguard import NoLookupServerMixin, is_local_address

logger = logging.getLogger(__name__)


class _NodeServer(NoLookupServerMixin, ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restart on the same port right after a stop (TIME_WAIT)
    node_name = ""
    # Where a peer node's service answers locally (host, port), or None: set by the twin's World.
    peer_address: Callable[[str], tuple[str, int] | None] | None = None


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so a stopped node cannot keep answering
    # on a kept-alive connection.
    server: _NodeServer

    def do_GET(self) -> None:
        if self.path in ("/", ""):
            self._answer(200, self.server.node_name)
        elif self.path == "/health":
            self._answer(200, "ok")
        elif self.path.startswith("/peer/") and self.server.peer_address is not None:
            self._relay()
        else:
            self._answer(404, "not found")

    def _relay(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        from regionha.watch.interconnect import RELAY_PATH, dial_peer

        url = urlsplit(self.path)
        peer = url.path[len(RELAY_PATH):]
        address = self.server.peer_address(peer) if self.server.peer_address else None
        if address is None:
            self._answer(404, f"no peer {peer}")
            return
        try:
            timeout = min(float(parse_qs(url.query).get("timeout", ["2"])[0]), 10.0)
        except ValueError:
            timeout = 2.0
        # From the node's own address: the twin's network cuts judge the source, as AWS's rules do.
        result = dial_peer(address[0], address[1], timeout, source=self.server.server_address[0])
        self._answer(200, json.dumps(result))

    def do_HEAD(self) -> None:
        self.do_GET()

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Regionha-Node", self.server.node_name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.server.node_name, format % args)


class NodeService:
    """One node's HTTP service on a local address. ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, name: str, host: str, port: int):
        if not is_local_address(host):
            raise ConfigurationError(f"node {name}: {host} is not a local address (127.0.0.0/8, 198.18.0.0/15)")
        self.name = name
        self.host = host
        self.port = port
        self._server: _NodeServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.peer_address: Callable[[str], tuple[str, int] | None] | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            server = _NodeServer((self.host, self.port), _Handler)
            server.node_name = self.name
            server.peer_address = self.peer_address
            # Keep the port chosen on the first start, so that the node comes back where it was.
            self.port = server.server_address[1]
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"node-{self.name}",
                daemon=True,
            )
            self._thread.start()
            self._server = server
            logger.info("node %s up on %s:%s", self.name, self.host, self.port)

    def stop(self) -> None:
        with self._lock:
            if self._server is None:
                return
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None
            logger.info("node %s down", self.name)

    def __repr__(self) -> str:
        return f"NodeService({self.name!r}, {self.host!r}, {self.port}, running={self.running})"
