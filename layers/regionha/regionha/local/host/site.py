"""A real on-prem client site in the local runtime (``client.kind: onprem``): the user's hosts.

On AWS regionha builds nothing on such a site: the DNS server, the agent's host and the links are the
user's. The twin stands in for the user, as the docs tell them to set things up (docs/onprem.md):

- **the links' gateways**: a virtual private gateway per link exists before the build (``given_links``:
  made in the emulated EC2 when the topology's id is unknown there, and the topology's ``gateway_id``
  set to it), for the build to attach and the teardown to detach;
- **the DNS server**: a real ``named`` on the loopback image of ``client.dns_server.ip``, from
  ``regionha.bind.render_onprem_conf`` (what ``regionha onprem named-conf`` prints), checked with
  ``named-checkconf``. The site's own upstream (names outside the cluster zone) is a stand-in address
  where nothing answers: the twin resolves nothing but the zone;
- **the on-prem agent**: the real command of ``agent/regionha-canary.service``, ``regionha canary run
  --publish`` as a process on the site's network (inside the runtime's namespace), publishing to the
  emulated CloudWatch on the twin's emulated clock (``REGIONHA_CLOCK``) and answering the drill's and
  the controller's probe requests (``--serve-probes``).

Where the site's packets may go is decided by the VPC router's view of the links
(``regionha.local.host.routing``: ``from_site`` / ``via_vpn_gateway``) and applied by the ``World``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from regionha import bind, netguard
from regionha.aws import Clients
from regionha.topology import Topology, parse_topology

logger = logging.getLogger(__name__)

DNS_PORT = 53
# The agent's round, as in agent/regionha-canary.service: the canary's 10-second rounds.
AGENT_INTERVAL_SECONDS = 10


def given_links(topology: Topology, clients: Clients) -> Topology:
    """The user's side of the links, made before the build: each link's virtual private gateway exists
    (created, detached, in the link's VPC's region, when EC2 does not know the topology's id). Returns
    the topology naming the gateways that exist. IAM: ec2:DescribeVpnGateways, ec2:CreateVpnGateway."""
    if not topology.client.onprem:
        return topology
    data = topology.to_json()
    for link in data["client"]["links"]:
        ec2 = clients.ec2(topology.region_of(link["vpc"]))
        try:
            found = ec2.describe_vpn_gateways(VpnGatewayIds=[link["gateway_id"]])["VpnGateways"]
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("InvalidVpnGatewayID.NotFound", "InvalidVpnGatewayID.Malformed"):
                raise
            found = []
        if not found:
            made = ec2.create_vpn_gateway(
                Type="ipsec.1",
                TagSpecifications=[{"ResourceType": "vpn-gateway",
                                    "Tags": [{"Key": "Name", "Value": f"{topology.client.name}-{link['name']}"}]}],
            )["VpnGateway"]
            link["gateway_id"] = made["VpnGatewayId"]
    return parse_topology(data, "the on-prem site's given links")


def upstream_stand_in(topology: Topology) -> str:
    """The site's own upstream resolver in the twin: the site network's first host, where nothing answers."""
    return str(next(topology.client.cidr.hosts()))


class OnPremSite:
    """The site's DNS server (a real named) and its on-prem agent (a real ``regionha canary run``).

    ``processes`` maps the DNS server's name to its ``NamedProcess`` while it runs (the shape of
    ``BindFleet.processes``, read by the coverage check of ``local/host/agent.py``).
    """

    def __init__(self, topology: Topology, workdir: Path, *, environment: Mapping[str, str]):
        self.topology = topology
        self.workdir = Path(workdir) / "site"
        self.environment = dict(environment)
        self.processes: dict[str, Any] = {}
        self.agent: subprocess.Popen[bytes] | None = None

    @property
    def agent_log(self) -> Path:
        return self.workdir / "agent.log"

    def start_dns_server(self) -> None:
        """Start the site's named (from the thread that lives as long as the runtime: see NamedProcess)."""
        from regionha.local.host.named import NamedProcess, local_runtime

        server = self.topology.client.dns_server
        upstream = [upstream_stand_in(self.topology)]

        def render(files: Any) -> str:
            runtime = local_runtime(files, port=DNS_PORT, upstream_port=DNS_PORT)
            return bind.render_onprem_conf(self.topology, addr=netguard.to_local, runtime=runtime, upstream=upstream)

        process = NamedProcess(server.name, render, (netguard.to_local(server.ip), DNS_PORT),
                               directory=self.workdir / "named" / server.name)
        process.start()
        self.processes[server.name] = process

    def agent_command(self, topology_file: Path) -> list[str]:
        """The unit's ExecStart (agent/regionha-canary.service), run by this interpreter."""
        return [sys.executable, "-m", "regionha.cli", "canary", "run", "--publish",
                "--interval", str(AGENT_INTERVAL_SECONDS), "--output", "json", "--wait-for-record",
                "--serve-probes", "--topology", str(topology_file)]

    def start_agent(self) -> None:
        """Start the on-prem agent process (idempotent): the user installed it on the site's host."""
        if self.agent is not None and self.agent.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        topology_file = self.workdir / "topology.yaml"
        # JSON is YAML: the file the build used, as the user installs it in /etc/regionha/topology.yaml.
        topology_file.write_text(json.dumps(self.topology.to_json(), indent=1))
        env = {**os.environ, **self.environment, "PYTHONUNBUFFERED": "1"}
        with self.agent_log.open("ab") as log:
            self.agent = subprocess.Popen(self.agent_command(topology_file), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logger.info("on-prem agent started (pid %d), log %s", self.agent.pid, self.agent_log)

    def stop_agent(self, timeout: float = 10.0) -> None:
        if self.agent is None:
            return
        if self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(timeout)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(timeout)
        self.agent = None

    def agent_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.agent_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.stop_agent()
        for process in self.processes.values():
            process.stop()
        self.processes.clear()
