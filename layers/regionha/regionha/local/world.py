"""The reconciler of the local runtime: what users and drills change on the AWS side becomes local fact.

moto keeps the AWS state but moves no packet. ``World.reconcile()`` reads that state and applies it:

- a cluster node's EC2 instance running -> its ``NodeService`` listens, otherwise its port is closed;
  its port answers the client network only if the node's security group, network ACL and the route
  tables let it (else a silent drop, as for DNS);
- DNS from the client site to each forwarder path address (and to the on-prem DNS server) passes
  only if AWS would let it: the security groups attached to the endpoint or instance allow it, the
  network ACL of its subnet allows it inbound, the endpoint exists / the instance runs, and the route
  tables carry the packets there and the replies back (``regionha.local.host.routing``). UDP 53 and TCP 53
  are decided separately; a "no" becomes a silent drop on lo (``LocalNetwork.set_blocked``);
- a cluster node's port answers its peer node in another VPC (the interconnect: heartbeat, mirror
  disk, probed by ``regionha.watch.interconnect``'s relay from the node's own address) only if the
  peer's subnet can send it out (network ACL egress), the route tables carry it over an active
  peering and back, and the node's network ACL and security group admit the peer's address; a node
  whose instance is not running is silent to its peer, as on AWS;
- an instance whose user-data installs packages (a BIND server: ``dnf install bind``) has them only if
  its subnet had egress to the Amazon Linux repositories (S3 in its region) when it first booted
  (``package_install``); without them its named never starts.

The security group and network ACL rules are evaluated with EC2's semantics by the pure functions
of :mod:`regionha.local.aws.vpc_rules`.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from regionha.aws import Clients, deployment_filter
from regionha.local.aws.vpc_rules import Network, Proto, nacl_allows, sg_allows
from regionha.local.host.network import Flow, LocalNetwork
from regionha.local.host.nodes import NodeService
from regionha.local.host.routing import OPEN, Routing, fix_moto_endpoint_routes
from regionha.netguard import to_local, to_local_network
from regionha.topology import Node, Topology
from regionha.watch.interconnect import interconnect_pairs

logger = logging.getLogger(__name__)

DNS_PORT = 53
DNS_PROTOCOLS: tuple[Proto, ...] = ("udp", "tcp")
# An endpoint in these states answers queries on its addresses.
_ANSWERING_ENDPOINT = {"OPERATIONAL", "UPDATING", "AUTO_RECOVERING", "ACTION_NEEDED"}


# --- what the client site must reach ----------------------------------------------------------------


@dataclass(frozen=True)
class DnsTarget:
    """One DNS server address the client site queries (directly, or through the on-prem server)."""

    name: str  # forwarder path name, or the on-prem DNS server's name
    kind: Literal["resolver_endpoint", "bind", "dns_server"]
    vpc: str
    address: str  # the cloud address, as in the topology
    source: Network  # who sends the queries, for the security group / network ACL decision


def dns_targets(topology: Topology) -> list[DnsTarget]:
    """Forwarder path addresses (queried by the on-prem DNS server) and, on a VPC client site, the
    on-prem DNS server itself (queried by the client network). A real on-prem site's DNS server sits on
    the site's own network with its clients: nothing of AWS stands between them."""
    onprem = ipaddress.IPv4Network(f"{topology.client.dns_server.ip}/32")
    out = []
    for path in topology.forwarder_paths:
        for ip in path.addresses():
            out.append(DnsTarget(path.name, path.kind, path.vpc, str(ip), onprem))
    if topology.client_vpc is not None:
        server = topology.client.dns_server
        out.append(DnsTarget(server.name, "dns_server", topology.client_vpc, str(server.ip), topology.client.cidr))
    return out


@dataclass(frozen=True)
class Reach:
    udp: str  # "open", or why it is cut
    tcp: str

    def of(self, proto: Proto) -> str:
        return self.udp if proto == "udp" else self.tcp


def _cut_everywhere(reason: str) -> Reach:
    return Reach(reason, reason)


def _primary_groups(instance: Mapping[str, Any]) -> list[str]:
    # Security groups belong to network interfaces: read the primary ENI's, as AWS applies them.
    primary = [n for n in instance.get("NetworkInterfaces", []) if n.get("Attachment", {}).get("DeviceIndex", 0) == 0]
    groups = primary[0].get("Groups", []) if primary else instance.get("SecurityGroups", [])
    return [g["GroupId"] for g in groups]


class World:
    """Applies the AWS-side state to the local runtime. ``port_of(address)`` gives the local port the
    runtime serves DNS on for a topology (cloud) address; the default is 53.

    IAM (against moto): ec2:DescribeVpcs, ec2:DescribeInstances, ec2:DescribeSecurityGroups,
    ec2:DescribeNetworkAcls, ec2:DescribeNetworkInterfaces, route53resolver:ListResolverEndpoints,
    route53resolver:ListResolverEndpointIpAddresses.
    """

    def __init__(
        self,
        topology: Topology,
        clients: Clients,
        network: LocalNetwork,
        nodes: Mapping[str, NodeService],
        port_of: Callable[[str], int] = lambda address: DNS_PORT,
    ):
        self.topology = topology
        self.clients = clients
        self.network = network
        self.nodes = dict(nodes)
        self.port_of = port_of
        self.client_net = to_local_network(topology.client.cidr)
        self._stop = threading.Event()
        self._reconcile_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] = {}
        self._installs: dict[str, str] = {}
        for service in self.nodes.values():
            service.peer_address = self._peer_address
        fix_moto_endpoint_routes()

    def _peer_address(self, name: str) -> tuple[str, int] | None:
        service = self.nodes.get(name)
        return (service.host, service.port) if service is not None else None

    # -- reading AWS ---------------------------------------------------------------------------------

    def _ec2(self, vpc: str) -> Any:
        return self.clients.ec2(self.topology.region_of(vpc))

    def _vpc_id(self, vpc: str) -> str | None:
        vpcs = self._ec2(vpc).describe_vpcs(Filters=deployment_filter(self.topology.deployment, vpc))["Vpcs"]
        return vpcs[0]["VpcId"] if vpcs else None

    def _instances(self, vpc: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pages = self._ec2(vpc).get_paginator("describe_instances").paginate(Filters=filters)
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        return [i for i in found if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def instance_running(self, node_name: str, vpc: str) -> bool:
        """A node's instance, found by its tags, is running."""
        instances = self._instances(vpc, deployment_filter(self.topology.deployment, node_name))
        return any(i["State"]["Name"] == "running" for i in instances)

    def _server_instance(self, target: DnsTarget, vpc_id: str) -> dict[str, Any] | None:
        # A BIND server is found by its address in its VPC: that is what the forwarders point at,
        # whatever the instance is named.
        filters = [
            *deployment_filter(self.topology.deployment),
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "private-ip-address", "Values": [target.address]},
        ]
        instances = self._instances(target.vpc, filters)
        running = [i for i in instances if i["State"]["Name"] == "running"]
        return (running or instances or [None])[0]

    def _endpoint_ip(self, target: DnsTarget, vpc_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        resolver = self.clients.route53resolver(self.topology.region_of(target.vpc))
        for page in resolver.get_paginator("list_resolver_endpoints").paginate():
            for endpoint in page["ResolverEndpoints"]:
                if endpoint.get("Direction") != "INBOUND" or endpoint.get("HostVPCId") != vpc_id:
                    continue
                ips = resolver.list_resolver_endpoint_ip_addresses(ResolverEndpointId=endpoint["Id"])
                for ip in ips["IpAddresses"]:
                    if ip.get("Ip") == target.address:
                        return endpoint, ip
        return None

    def _interface_holds(self, vpc: str, vpc_id: str, address: str) -> bool:
        """Does a network interface of the VPC hold ``address``? IAM: ec2:DescribeNetworkInterfaces."""
        found = self._ec2(vpc).describe_network_interfaces(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                     {"Name": "addresses.private-ip-address", "Values": [address]}])["NetworkInterfaces"]
        return bool(found)

    def _permissions(self, vpc: str, group_ids: list[str]) -> list[dict[str, Any]]:
        if not group_ids:
            return []
        groups = self._ec2(vpc).describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
        return [p for g in groups for p in g.get("IpPermissions", [])]

    def _nacl_entries(self, vpc: str, subnet_id: str) -> list[dict[str, Any]] | None:
        acls = self._ec2(vpc).describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])[
            "NetworkAcls"
        ]
        return acls[0]["Entries"] if acls else None

    def package_install(self, instance: Mapping[str, Any]) -> str:
        """``"installed"`` when the packages the instance's user-data installs (from the Amazon Linux
        repositories, served from S3 in its region) were reachable when it first ran, else why not.

        Decided once per instance: cloud-init runs user-data scripts at the first boot only, so egress
        added later does not install anything (AWS: replace the instance)."""
        iid = instance["InstanceId"]
        if iid not in self._installs:
            verdict = Routing.read(self.topology, self.clients).egress(instance["PrivateIpAddress"], "s3")
            self._installs[iid] = "installed" if verdict == OPEN else f"dnf cannot reach the repositories: {verdict}"
            if verdict != OPEN:
                logger.warning("instance %s: package install fails: %s", iid, verdict)
        return self._installs[iid]

    @property
    def installs(self) -> dict[str, str]:
        """Instance id -> the outcome of its first-boot package install, as decided so far."""
        return dict(self._installs)

    def reach(self, target: DnsTarget, routing: Routing | None = None) -> Reach:
        """Would DNS over UDP and over TCP from the target's source reach it in AWS right now?"""
        vpc_id = self._vpc_id(target.vpc)
        if vpc_id is None:
            return _cut_everywhere("vpc missing")
        if target.kind == "resolver_endpoint":
            found = self._endpoint_ip(target, vpc_id)
            if found is None:
                return _cut_everywhere("endpoint missing")
            endpoint, ip = found
            if endpoint.get("Status") not in _ANSWERING_ENDPOINT:
                return _cut_everywhere(f"endpoint {endpoint.get('Status', '').lower()}")
            # Resolver keeps listing an address ATTACHED after its network interface is deleted by hand;
            # nothing holds the address then, and AWS drops what is sent to it.
            if not self._interface_holds(target.vpc, vpc_id, target.address):
                return _cut_everywhere("endpoint address's network interface gone")
            group_ids, subnet_id = list(endpoint.get("SecurityGroupIds", [])), ip["SubnetId"]
        else:
            instance = self._server_instance(target, vpc_id)
            if instance is None:
                return _cut_everywhere("instance missing")
            if instance["State"]["Name"] != "running":
                return _cut_everywhere(f"instance {instance['State']['Name']}")
            group_ids, subnet_id = _primary_groups(instance), instance["SubnetId"]
        return self._decide(target.vpc, group_ids, subnet_id, target.source, target.address, DNS_PORT, routing)

    def _decide(
        self, vpc: str, group_ids: list[str], subnet_id: str, source: Network, address: str, port: int,
        routing: Routing | None,
    ) -> Reach:
        permissions = self._permissions(vpc, group_ids)
        entries = self._nacl_entries(vpc, subnet_id)
        routing = routing or Routing.read(self.topology, self.clients)
        # Every address of the source network sits in one subnet: one of them stands for all.
        route = routing.path(next(iter(source)), address)

        def decide(proto: Proto) -> str:
            if not sg_allows(permissions, source, proto, port):
                return "security group"
            if entries is not None and not nacl_allows(entries, source, proto, port):
                return "network acl"
            if route != OPEN:
                return f"route: {route}"
            return "open"

        return Reach(decide("udp"), decide("tcp"))

    def node_reach(self, node: Node, routing: Routing | None = None) -> str:
        """Would the node's service port (TCP) answer the client network in AWS right now? The canary,
        the failover health check and the drill all check the nodes from there."""
        instances = self._instances(node.vpc, deployment_filter(self.topology.deployment, node.name))
        running = [i for i in instances if i["State"]["Name"] == "running"]
        if not running:
            return "instance not running"
        instance = running[0]
        source = ipaddress.IPv4Network(self.topology.client.cidr)
        reach = self._decide(node.vpc, _primary_groups(instance), instance["SubnetId"], source, str(node.ip),
                             node.port, routing)
        return reach.tcp

    def interconnect_reach(self, source: Node, target: Node, routing: Routing | None = None) -> str:
        """Would TCP from ``source`` node's address reach ``target``'s service port in AWS right now
        (the cluster's own path over the peering)? "open", or why not."""
        running = self._running_instance(target)
        if running is None:
            return "instance not running"
        sender = self._running_instance(source)
        if sender is not None:
            out = self._nacl_entries(source.vpc, sender["SubnetId"])
            to = ipaddress.IPv4Network(f"{target.ip}/32")
            if out is not None and not nacl_allows(out, to, "tcp", target.port, egress=True):
                return "network acl (egress of the sender's subnet)"
        reach = self._decide(target.vpc, _primary_groups(running), running["SubnetId"],
                             ipaddress.IPv4Network(f"{source.ip}/32"), str(target.ip), target.port, routing)
        return reach.tcp

    def _running_instance(self, node: Node) -> dict[str, Any] | None:
        instances = self._instances(node.vpc, deployment_filter(self.topology.deployment, node.name))
        return next((i for i in instances if i["State"]["Name"] == "running"), None)

    # -- applying ------------------------------------------------------------------------------------

    def local_addresses(self) -> list[str]:
        """Every loopback address the runtime serves: nodes, forwarder paths, the on-prem DNS server."""
        cloud = [n.ip for n in self.topology.nodes] + [t.address for t in dns_targets(self.topology)]
        cloud.append(self.topology.client.dns_server.ip)
        return sorted({to_local(a) for a in cloud}, key=ipaddress.IPv4Address)

    def ensure_addresses(self) -> list[str]:
        """Put every served address on lo (named only listens on addresses an interface has)."""
        return [a for a in self.local_addresses() if self.network.add_address(a)]

    def reconcile(self) -> dict[str, Any]:
        """Read the AWS-side state once and apply it; returns what it found and changed."""
        with self._reconcile_lock:
            return self._reconcile()

    def _reconcile(self) -> dict[str, Any]:
        nodes: dict[str, str] = {}
        for node in self.topology.nodes:
            service = self.nodes.get(node.name)
            if service is None:
                continue
            if not self.instance_running(node.name, node.vpc):
                service.stop()
                nodes[node.name] = "down"
                continue
            try:
                service.start()
                nodes[node.name] = "up"
            except OSError as e:
                # One node that cannot bind must not hold back the network cuts of this round.
                logger.exception("node %s cannot start", node.name)
                nodes[node.name] = f"failed: {e.strerror or e}"

        paths: dict[str, dict[str, dict[str, str]]] = {}
        flows: set[Flow] = set()
        routing = Routing.read(self.topology, self.clients)
        node_paths: dict[str, str] = {}
        for node in self.topology.nodes:
            node_paths[node.name] = self.node_reach(node, routing)
            if node_paths[node.name] not in ("open", "instance not running"):
                # A stopped node's port is closed by its service; a cut one drops silently.
                flows.add(Flow(self.client_net, to_local(str(node.ip)), "tcp", node.port))
        interconnect: dict[str, str] = {}
        for src_name, dst_name in interconnect_pairs(self.topology):
            src, dst = self.topology.node(src_name), self.topology.node(dst_name)
            interconnect[f"{src_name}->{dst_name}"] = verdict = self.interconnect_reach(src, dst, routing)
            service = self.nodes.get(dst_name)
            if verdict != "open" and service is not None:
                flows.add(Flow(f"{to_local(str(src.ip))}/32", to_local(str(dst.ip)), "tcp", service.port))
        for target in dns_targets(self.topology):
            reach = self.reach(target, routing)
            paths.setdefault(target.name, {})[target.address] = {"udp": reach.udp, "tcp": reach.tcp}
            for proto in DNS_PROTOCOLS:
                if reach.of(proto) != "open":
                    flows.add(Flow(self.client_net, to_local(target.address), proto, self.port_of(target.address)))
        changes = self.network.set_blocked(flows)
        self.last = {
            "nodes": nodes,
            "node_paths": node_paths,
            "interconnect": interconnect,
            "paths": paths,
            "blocked": sorted(str(f) for f in flows),
            "changes": changes,
        }
        return self.last

    def run(self, interval: float = 1.0) -> None:
        """Reconcile now and then every ``interval`` seconds in a daemon thread, until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="world", daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while True:
            try:
                self.reconcile()
            except Exception:
                # A failed read leaves the last applied state in place; the next round tries again.
                logger.exception("reconcile failed")
            if self._stop.wait(interval):
                return

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
