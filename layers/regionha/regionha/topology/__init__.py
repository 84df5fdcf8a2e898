"""The declarative topology: one YAML file that says everything regionha builds.

Structure (types, unknown keys) is checked by pydantic; the cross-field rules that need the whole
file (CIDRs, subnets, IPs, names) live in ``regionha.topology.validation``. ``load_topology`` runs both and
raises ``TopologyError`` with one ``Problem`` per fault, each naming the offending field.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regionha.topology.names import canonical_name

DEFAULT_TOPOLOGY = "reference.yaml"
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
    # "igw", "nat" or "peering:<peering name>"
    target: str = Field(pattern=r"^(igw|nat|peering:[A-Za-z0-9][A-Za-z0-9_.-]*)$")

    @property
    def peering(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("peering:") else None


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
    name: Name
    vpc: Name
    cidr: ipaddress.IPv4Network
    dns_server: DnsServer


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


class Topology(Model):
    deployment: Name
    vpcs: list[Vpc] = Field(min_length=1)
    peerings: list[Peering] = []
    dns: Dns
    forwarder_paths: list[ForwarderPath] = Field(min_length=1)
    client: Client
    nodes: list[Node] = Field(min_length=2)
    instances: Instances = Instances()
    waits: Waits = Waits()
    failover: Failover = Failover()
    canary: Canary = Canary()

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
        """Every BIND server on EC2: the regions' forwarder paths, then the on-prem resolver."""
        return [p for p in self.forwarder_paths if p.kind == "bind"] + [self.client.dns_server]

    def region_of(self, vpc_name: str) -> str:
        return self.vpc(vpc_name).region

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


@dataclass(frozen=True)
class Problem:
    """One fault of a topology file: the field it concerns and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class TopologyError(ValueError):
    """A topology that cannot be used; retrying cannot help (a configuration error)."""

    def __init__(self, problems: list[Problem], source: str = "topology"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("resolver_endpoint", "bind"):  # pydantic's discriminator tag, not a field
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        problems.append(Problem(_loc(e["loc"]), msg))
    return problems


def parse_topology(data: Any, source: str = "topology") -> Topology:
    """Structure and cross-field checks of already-parsed data; raises TopologyError."""
    from regionha.topology.validation import check_topology

    if not isinstance(data, dict):
        raise TopologyError(
            [Problem("(top level)", f"must be a mapping of keys to values, not {type(data).__name__}")],
            source,
        )
    try:
        topology = Topology.model_validate(data)
    except ValidationError as e:
        raise TopologyError(_pydantic_problems(e), source) from e
    problems = check_topology(topology)
    if problems:
        raise TopologyError(problems, source)
    return topology


def load_topology(path: str | Path | None = None) -> Topology:
    """Read and validate a topology file; ``None`` means the shipped reference deployment.

    Every failure (unreadable, not UTF-8, empty, bad YAML, bad content) becomes a ``TopologyError``
    naming the file, so no caller ever shows a traceback for a bad file.
    """
    if path is None:
        path = Path(str(resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY)))
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TopologyError([Problem("(file)", f"cannot read: {e.strerror or e}")], source) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TopologyError(
            [Problem("(file)", f"not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})")],
            source,
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TopologyError([Problem("(file)", f"not valid YAML: {_yaml_error(e)}")], source) from e
    if data is None:
        raise TopologyError([Problem("(file)", "is empty (no YAML document)")], source)
    return parse_topology(data, source)


def _yaml_error(e: yaml.YAMLError) -> str:
    # PyYAML's str() quotes the source as "<unicode string>" and draws a caret; say where instead.
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        what = " ".join(part for part in (e.context, e.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {_one_line(what)}"
    return _one_line(str(e))


def _one_line(text: str) -> str:
    # YAML errors span several lines with a caret drawing; keep the words, one problem per line.
    return re.sub(r"\s+", " ", text).strip()


# Step Functions refuses an execution input larger than 256 KiB (StartExecution, "input").
MAX_EXECUTION_INPUT_BYTES = 256 * 1024


def build_input(path: str | Path | None = None) -> dict[str, Any]:
    """The build (and teardown) state machine's execution input for a topology file: ``{"topology": {...}}``.

    Loads and validates the file like ``load_topology`` (``None``: the shipped reference) and returns
    the normalised topology inline, so the build, and every scheduled consumer after it (canary,
    failover controller, drill, sweeper: they read the topology the build saved in the inventory), use
    exactly this file without redeploying the stack. Raises ``TopologyError`` naming the file and field
    for an invalid file, or when the input would exceed Step Functions' 256 KiB execution input.
    """
    topology = load_topology(path)
    payload = {"topology": topology.to_json()}
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_EXECUTION_INPUT_BYTES:
        source = str(path) if path is not None else DEFAULT_TOPOLOGY
        raise TopologyError(
            [Problem("(file)", f"is {size} bytes as an execution input; Step Functions allows "
                               f"{MAX_EXECUTION_INPUT_BYTES}")], source)
    return payload
