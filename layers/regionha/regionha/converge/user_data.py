"""What each EC2 instance of a deployment is: BIND servers and cluster nodes, with their user-data."""

from __future__ import annotations

from typing import Any

from regionha import bind
from regionha.converge.node_service import node_user_data
from regionha.topology import Topology


def bind_instances(topology: Topology) -> list[dict[str, Any]]:
    """The regions' BIND forwarder paths, then the on-prem resolver (it forwards to them)."""
    specs = []
    for path in topology.forwarder_paths:
        if path.kind != "bind":
            continue
        specs.append(
            {
                "name": path.name,
                "vpc_name": path.vpc,
                "subnet": path.subnet,
                "ip": str(path.ip),
                "security_group": path.security_group,
                "role": "bind",
                "user_data": bind.user_data(bind.render_forwarder_conf(topology, path.name)),
                "instance_type": path.instance_type,
            }
        )
    if topology.client.onprem:
        return specs  # a real site's DNS server is the user's (docs/onprem.md)
    server = topology.client.dns_server
    specs.append(
        {
            "name": server.name,
            "vpc_name": topology.client.vpc,
            "subnet": server.subnet,
            "ip": str(server.ip),
            "security_group": server.security_group,
            "role": "bind",
            "user_data": bind.user_data(bind.render_onprem_conf(topology)),
            "instance_type": server.instance_type,
        }
    )
    return specs


def node_instances(topology: Topology) -> list[dict[str, Any]]:
    return [
        {
            "name": node.name,
            "vpc_name": node.vpc,
            "subnet": node.subnet,
            "ip": str(node.ip),
            "security_group": node.security_group,
            "role": "node",
            "user_data": node_user_data(node, [p for p in topology.nodes if p.vpc != node.vpc]),
            "instance_type": node.instance_type,
        }
        for node in topology.nodes
    ]
