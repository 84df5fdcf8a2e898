"""The declarative topology: one YAML file that says everything regionha builds.

- ``model``: its structure (pydantic models: ``Topology``, ``Vpc``, ``Node``, ...);
- ``loader``: reading it (``load_topology``, ``parse_topology``, ``build_input``) and its faults
  (``Problem``, ``TopologyError``, each naming the offending field);
- ``validation`` and ``reachability``: the cross-field rules; ``names``: DNS names in Route 53's form.

Everything is importable from here, so callers need not know which module holds it.
"""

from regionha.topology.loader import (
    DEFAULT_TOPOLOGY,
    MAX_EXECUTION_INPUT_BYTES,
    Problem,
    TopologyError,
    _one_line,
    build_input,
    load_topology,
    parse_topology,
)
from regionha.topology.model import (
    ONPREM,
    BindPath,
    Canary,
    Client,
    ClientSite,
    Cluster,
    Dns,
    DnsServer,
    EndpointIp,
    Failover,
    ForwarderPath,
    GatewayEndpoint,
    Ingress,
    Instances,
    Link,
    Model,
    Name,
    NatInstance,
    Node,
    OnPremClient,
    OnPremDnsServer,
    Peering,
    Record,
    ResolverEndpointPath,
    Route,
    RouteTable,
    SecurityGroup,
    Subnet,
    Topology,
    Vpc,
    Waits,
)

__all__ = [
    "DEFAULT_TOPOLOGY", "MAX_EXECUTION_INPUT_BYTES", "ONPREM", "BindPath", "Canary", "Client", "ClientSite", "Cluster",
    "Dns", "DnsServer", "EndpointIp", "Failover", "ForwarderPath", "GatewayEndpoint", "Ingress", "Link",
    "Instances", "Model", "Name", "NatInstance", "Node", "OnPremClient", "OnPremDnsServer", "Peering",
    "Problem", "Record", "ResolverEndpointPath", "Route", "RouteTable", "SecurityGroup", "Subnet", "Topology",
    "TopologyError", "Vpc", "Waits", "_one_line", "build_input", "load_topology", "parse_topology",
]
