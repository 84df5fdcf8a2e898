"""The BIND servers of a build, as real ``named`` processes on loopback: one per BIND server instance
the build launched, with the config regionha renders for its user-data (rendered again with loopback
addresses and local paths, and checked against the EC2 render), started and stopped as the instance is."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regionha import bind, netguard
from regionha.aws import TAG_NAME, Clients, deployment_filter, tag_value
from regionha.topology import BindPath, DnsServer, Topology

logger = logging.getLogger(__name__)

DNS_PORT = 53


class BindFleet:
    """Runs a real ``named`` for every BIND server instance the build launched, while it runs.

    The config is the one regionha renders for the instance's user-data, rendered again with
    loopback addresses and local paths; the instance's real user-data is checked against the EC2
    render so that what runs here is what EC2 would run.
    """

    def __init__(
        self,
        topology: Topology,
        clients: Clients,
        workdir: Path,
        installs: Callable[[dict[str, Any]], str] | None = None,
    ):
        self.topology = topology
        self.clients = clients
        self.workdir = workdir
        # instance -> "installed" or why its first-boot ``dnf install bind`` failed (World.package_install).
        self.installs = installs
        self.processes: dict[str, Any] = {}
        self.user_data_mismatch: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def servers(self) -> list[tuple[BindPath | DnsServer, str, str]]:
        """(server, vpc name, EC2 named.conf) of every BIND server of the topology."""
        out: list[tuple[BindPath | DnsServer, str, str]] = []
        for path in self.topology.forwarder_paths:
            if isinstance(path, BindPath):
                out.append((path, path.vpc, bind.render_forwarder_conf(self.topology, path.name)))
        if self.topology.client_vpc is not None:  # a real on-prem site's server is the user's (site.py)
            server = self.topology.client.dns_server
            out.append((server, self.topology.client_vpc, bind.render_onprem_conf(self.topology)))
        return out

    def _render_local(self, server: BindPath | DnsServer) -> Callable[[Any], str]:
        from regionha.local.host.named import local_runtime

        def render(files: Any) -> str:
            runtime = local_runtime(files, port=DNS_PORT, upstream_port=DNS_PORT)
            if isinstance(server, BindPath):
                return bind.render_forwarder_conf(
                    self.topology, server.name, addr=netguard.to_local, runtime=runtime
                )
            return bind.render_onprem_conf(self.topology, addr=netguard.to_local, runtime=runtime)

        return render

    def _instance(self, name: str, vpc: str) -> dict[str, Any] | None:
        ec2 = self.clients.ec2(self.topology.region_of(vpc))
        reservations = ec2.describe_instances(Filters=deployment_filter(self.topology.deployment, name))
        live = [
            i
            for r in reservations["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down") and tag_value(i, TAG_NAME) == name
        ]
        return live[0] if live else None

    def _check_user_data(self, name: str, vpc: str, instance_id: str, ec2_conf: str) -> None:
        ec2 = self.clients.ec2(self.topology.region_of(vpc))
        attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        raw = (attr.get("UserData") or {}).get("Value")
        text = base64.b64decode(raw).decode() if raw else ""
        if text != bind.user_data(ec2_conf):
            if name not in self.user_data_mismatch:
                logger.warning("%s: the instance's user-data is not regionha's render of its named.conf", name)
            self.user_data_mismatch.add(name)
        else:
            self.user_data_mismatch.discard(name)

    def reconcile(self) -> dict[str, str]:
        from regionha.local.host.named import NamedProcess

        states = {}
        with self._lock:
            for server, vpc, ec2_conf in self.servers():
                instance = self._instance(server.name, vpc)
                running = instance is not None and instance["State"]["Name"] == "running"
                process = self.processes.get(server.name)
                if running and process is None:
                    verdict = self.installs(instance) if self.installs is not None else "installed"
                    if verdict != "installed":
                        # On AWS named was never installed: nothing listens on the server's address.
                        states[server.name] = f"not installed: {verdict}"
                        continue
                    self._check_user_data(server.name, vpc, instance["InstanceId"], ec2_conf)
                    process = NamedProcess(
                        server.name,
                        self._render_local(server),
                        (netguard.to_local(server.ip), DNS_PORT),
                        directory=self.workdir / "named" / server.name,
                    )
                    process.start()
                    self.processes[server.name] = process
                elif not running and process is not None:
                    process.stop()
                    del self.processes[server.name]
                states[server.name] = "running" if running else "stopped"
        return states

    def run(self, interval: float) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="bind-fleet", daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        # named is started from this thread (its pdeathsig follows the starting thread): it must
        # live until stop(), which is why processes are stopped here too.
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                logger.exception("bind fleet reconcile failed")
            self._stop.wait(interval)
        with self._lock:
            for process in self.processes.values():
                process.stop()
            self.processes.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
