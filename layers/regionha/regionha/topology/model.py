"""The topology's structure: pydantic models of the one YAML file that says everything regionha builds.

Types and unknown keys only; the cross-field rules that need the whole file live in
``regionha.topology.validation``, reading files and reporting faults in ``regionha.topology.loader``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from regionha.topology.names import canonical_name

# The canary's label (metric dimension Path, alarm names, drill --path) of the on-prem resolver: no
# forwarder path or node may take it (validation refuses the name in any spelling).
ONPREM = "onprem"

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Subnet(Model):
    name: Name
    cidr: ipaddress.IPv4Network
    az: str
    public: bool = False


class Route(Model):
    destination: ipaddress.IPv4Network
    # "igw", "nat", "peering:<peering name>" or "link:<client.links name>" (an on-prem site's given
    # VPN / Direct Connect link: its virtual private gateway)
    target: str = Field(pattern=r"^(igw|nat|(peering|link):[A-Za-z0-9][A-Za-z0-9_.-]*)$")

    @property
    def peering(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("peering:") else None

    @property
    def link(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("link:") else None


class RouteTable(Model):
    name: Name
    subnets: list[Name] = Field(min_length=1)
    routes: list[Route] = []


class Ingress(Model):
    protocol: Literal["udp", "tcp", "icmp", "all"]
    port: int | None = Field(default=None, ge=0, le=65535)
    cidr: ipaddress.IPv4Network


class SecurityGroup(Model):
    name: Name
    description: str = "managed by regionha"
    ingress: list[Ingress] = []


class NatInstance(Model):
    name: Name
    subnet: Name
    instance_type: str | None = None


class GatewayEndpoint(Model):
    """A VPC gateway endpoint (``com.amazonaws.<region>.<service>``) whose prefix-list route goes into
    these route tables: a private subnet reaches the service (S3: the Amazon Linux repositories, for
    the BIND servers' ``dnf install``) without a default route, NAT or public IP."""

    service: Literal["s3"]
    route_tables: list[Name] = Field(min_length=1)


class Vpc(Model):
    name: Name
    region: str
    cidr: ipaddress.IPv4Network
    internet_gateway: bool = True
    subnets: list[Subnet] = Field(min_length=1)
    nat_instance: NatInstance | None = None
    route_tables: list[RouteTable] = []
    gateway_endpoints: list[GatewayEndpoint] = []
    security_groups: list[SecurityGroup] = []

    def subnet(self, name: str) -> Subnet:
        return next(s for s in self.subnets if s.name == name)

    def resolver_ip(self) -> ipaddress.IPv4Address:
        """The Amazon-provided DNS server of the VPC: its base address plus two."""
        return self.cidr.network_address + 2


class Peering(Model):
    name: Name
    requester: Name
    accepter: Name
    stands_in_for: Literal["vpn"] | None = None


class Record(Model):
    # Stored as Route 53 stores it: lower case, trailing dot (regionha.topology.names.canonical_name).
    name: str
    ttl: int = 60

    _canonical = field_validator("name")(canonical_name)


class Dns(Model):
    # Stored canonical like the record name: "Cluster.Local" is "cluster.local.".
    zone: str
    zone_vpcs: list[Name] = Field(min_length=1)
    record: Record
    # Accept fewer than two independent forwarder paths (in different VPCs): a lab, never production.
    allow_single_path: bool = False

    _canonical = field_validator("zone")(canonical_name)

    @property
    def zone_fqdn(self) -> str:
        return self.zone


class EndpointIp(Model):
    subnet: Name
    ip: ipaddress.IPv4Address


class ResolverEndpointPath(Model):
    name: Name
    kind: Literal["resolver_endpoint"]
    vpc: Name
    endpoint_name: Name
    security_group: Name
    ips: list[EndpointIp]

    def addresses(self) -> list[ipaddress.IPv4Address]:
        return [e.ip for e in self.ips]


class BindPath(Model):
    name: Name
    kind: Literal["bind"]
    vpc: Name
    subnet: Name
    ip: ipaddress.IPv4Address
    security_group: Name
    instance_type: str | None = None

    def addresses(self) -> list[ipaddress.IPv4Address]:
        return [self.ip]


ForwarderPath = Annotated[ResolverEndpointPath | BindPath, Field(discriminator="kind")]


class DnsServer(Model):
    name: Name
    subnet: Name
    ip: ipaddress.IPv4Address
    security_group: Name
    instance_type: str | None = None


class Client(Model):
    """A client site regionha builds as a VPC (``kind: vpc``, the default): the reference's stand-in
    for an on-prem network, with its DNS server on EC2 and peerings standing in for the VPN."""

    kind: Literal["vpc"] = "vpc"
    name: Name
    vpc: Name
    cidr: ipaddress.IPv4Network
    dns_server: DnsServer

    @property
    def onprem(self) -> bool:
        return False


class OnPremDnsServer(Model):
    """The on-prem resolver of a real site: the user's own DNS server (BIND, Unbound, Windows DNS),
    which forwards the zone to the forwarder paths. regionha never builds it; it probes it."""

    name: Name
    ip: ipaddress.IPv4Address


class Link(Model):
    """A given VPN or Direct Connect link from the on-prem site to one cluster VPC.

    regionha builds none of it: the customer gateway, VPN connection or Direct Connect virtual interface
    exist and end on ``gateway_id``, a virtual private gateway the build attaches to ``vpc`` and the
    teardown detaches (never deletes). ``routes``: the prefixes the on-prem router sends over this
    link (its static routes or what BGP learnt), from which validation decides what the site reaches.
    """

    name: Name
    kind: Literal["vpn", "direct_connect"]
    vpc: Name
    gateway_id: str = Field(pattern=r"^vgw-[0-9a-f]{8}([0-9a-f]{9})?$")
    routes: list[ipaddress.IPv4Network] = Field(min_length=1)


class OnPremClient(Model):
    """A client site that is a real on-prem network (``kind: onprem``): no client VPC, no peering.

    Its DNS server and the canary run on hosts the user owns (the canary as the on-prem agent,
    ``regionha canary run --publish``, from ``canary_ip``); its links to the cluster VPCs are given.
    """

    kind: Literal["onprem"]
    name: Name
    cidr: ipaddress.IPv4Network
    dns_server: OnPremDnsServer
    # The host the on-prem agent runs on: the canary's source address, inside cidr.
    canary_ip: ipaddress.IPv4Address
    links: list[Link] = Field(min_length=1)

    @property
    def onprem(self) -> bool:
        return True

    def link(self, name: str) -> Link:
        return next(lk for lk in self.links if lk.name == name)


def _client_kind(value: Any) -> str:
    # Topology files written before on-prem sites have no "kind": they are VPC client sites.
    if isinstance(value, dict):
        return str(value.get("kind", "vpc"))
    return str(getattr(value, "kind", "vpc"))


ClientSite = Annotated[
    Annotated[Client, Tag("vpc")] | Annotated[OnPremClient, Tag("onprem")], Discriminator(_client_kind)
]


class Node(Model):
    name: Name
    vpc: Name
    subnet: Name
    ip: ipaddress.IPv4Address
    security_group: Name
    port: int = Field(default=80, ge=1, le=65535)
    instance_type: str | None = None


class Instances(Model):
    instance_type: str = "t3.micro"
    # SSM public parameter that names the current AMI in every region.
    ami_parameter: str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


class Waits(Model):
    """Bounded waits of the build: how often to poll and how many times at most."""

    poll_seconds: int = Field(default=5, ge=0, le=300)
    max_polls: int = Field(default=60, ge=1, le=1000)


class Failover(Model):
    # builtin: regionha moves the record; external: the cluster software does, regionha only watches.
    mode: Literal["builtin", "external"] = "builtin"
    failback: Literal["manual", "automatic"] = "manual"
    hold_down_seconds: int = Field(default=60, ge=0)
    # Recovery time objective: seconds from a node failing to clients using the standby. Validation
    # warns when the record's TTL alone exceeds it (docs/topology.md).
    rto_budget_seconds: int = Field(default=300, ge=1)
    # Detection: a node is failed after this many consecutive failed checks, this far apart, each
    # bounded by the check timeout (Route 53 health checks: 3 failures at 10 s or 30 s). One missed
    # check is re-checked, never acted on. The defaults detect a silent failure within 10 s
    # (docs/failover.md, "Detection").
    failure_threshold: int = Field(default=3, ge=1, le=10)
    check_interval_seconds: float = Field(default=2.0, ge=1, le=30)
    check_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    # A node that answers its peer region but not the client network has a cut client link, not a
    # dead node: "stay" keeps the record and raises ClientLinkDown; "failover" moves it to a standby
    # the client network reaches.
    client_link_cut: Literal["stay", "failover"] = "stay"

    @model_validator(mode="after")
    def _confirmation_fits_a_minute(self) -> Failover:
        # The controller confirms a failure within one evaluation (Lambda timeout 150 s, INSYNC wait
        # 60 s): the re-checks must end within 45 s.
        span = (self.failure_threshold - 1) * self.check_interval_seconds
        if span > 45:
            raise ValueError(
                f"failure_threshold {self.failure_threshold} x check_interval_seconds "
                f"{self.check_interval_seconds:g} spans {span:g} s of re-checks; at most 45 s fit in one run"
            )
        return self


class Canary(Model):
    rate_minutes: int = Field(default=1, ge=1, le=60)
    timeout_seconds: float = Field(default=2.0, gt=0, le=30)


class Cluster(Model):
    # The cluster software needs its nodes to reach each other across VPCs (heartbeat, mirror disk):
    # the failover controller refuses to move the record onto a node cut off from a running peer
    # (regionha.watch.interconnect, docs/interconnect.md).
    requires_interconnect: bool = True


class Topology(Model):
    deployment: Name
    vpcs: list[Vpc] = Field(min_length=1)
    peerings: list[Peering] = []
    dns: Dns
    forwarder_paths: list[ForwarderPath] = Field(min_length=1)
    client: ClientSite
    nodes: list[Node] = Field(min_length=2)
    instances: Instances = Instances()
    waits: Waits = Waits()
    failover: Failover = Failover()
    canary: Canary = Canary()
    cluster: Cluster = Cluster()

    def vpc(self, name: str) -> Vpc:
        return next(v for v in self.vpcs if v.name == name)

    def peering(self, name: str) -> Peering:
        return next(p for p in self.peerings if p.name == name)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    def bind_servers(self) -> list[BindPath | DnsServer]:
        """Every BIND server on EC2: the regions' forwarder paths, then the on-prem resolver when
        regionha builds it (a VPC client site; a real on-prem site runs its own)."""
        paths: list[BindPath | DnsServer] = [p for p in self.forwarder_paths if p.kind == "bind"]
        return paths if self.client.onprem else [*paths, self.client.dns_server]

    @property
    def client_vpc(self) -> str | None:
        """The client site's VPC, or None for a real on-prem site (it has none)."""
        return None if self.client.onprem else self.client.vpc

    def canary_source(self) -> ipaddress.IPv4Address | None:
        """Where the canary probes from when the topology says so: an on-prem site's agent host."""
        return self.client.canary_ip if self.client.onprem else None

    def region_of(self, vpc_name: str) -> str:
        return self.vpc(vpc_name).region

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())
