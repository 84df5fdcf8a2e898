"""Node health: each node's instance state (EC2) and its service port, checked from the client network
and, to tell a cut client link from a dead node, from its peer region.

Every port check goes through ``regionha.failover.check_node`` and ``service_endpoint``, looked up on
the package at call time: those are the seams tests and field cases replace. On AWS the client-network
checks are a ``check_nodes`` request to the function placed in the client network (``CHECK_FUNCTION``),
or, on a real on-prem site where no function of ours runs, to the on-prem agent (a probe request on
the deployment's queue): the controller itself stays outside any VPC, where the EC2, Route 53 and
DynamoDB APIs are. The peer-region vantage point and the instance states need no client network.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from regionha import netguard
from regionha.aws import TAG_NAME, deployment_filter, tag_value
from regionha.errors import ConfigurationError
from regionha.failover.decide import UNKNOWN_STATE, NodeHealth, node_by_name
from regionha.watch import metrics
from regionha.watch.canary import NodeCheck

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Node, Topology

logger = logging.getLogger(__name__)

# When several instances carry a node's tags (a replaced one, terminated), the liveliest one counts.
_STATE_RANK = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3, "shutting-down": 4, "terminated": 5}
# Calls into a region that may be the one that is down answer or fail within seconds, not minutes.
BOUNDED = Config(connect_timeout=2, read_timeout=4, retries={"max_attempts": 2, "mode": "standard"})
CHECK_NODES = "check_nodes"
# The function in the client network that answers check_nodes requests (template.yaml).
CHECK_FUNCTION_ENV = "CHECK_NODES_FUNCTION"


def _seam(name: str) -> Any:
    """``regionha.failover.<name>`` as it is now: tests and field cases replace it on the package."""
    return getattr(sys.modules["regionha.failover"], name)


def node_instances(topology: Topology, clients: Clients) -> dict[str, list[dict[str, Any]]]:
    """Each node's EC2 instances (any state, by the deployment's tags) in its own region; a region whose
    EC2 API does not answer gives its nodes one entry of state ``unknown``.

    IAM: ec2:DescribeInstances.
    """
    regions: dict[str, list[str]] = {}
    for n in topology.nodes:
        regions.setdefault(topology.region_of(n.vpc), []).append(n.name)
    found: dict[str, list[dict[str, Any]]] = {n.name: [] for n in topology.nodes}
    for region, names in regions.items():
        filters = [*deployment_filter(topology.deployment), {"Name": f"tag:{TAG_NAME}", "Values": names}]
        try:
            ec2 = clients.client("ec2", region, config=BOUNDED)
            for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page["Reservations"]:
                    for inst in reservation["Instances"]:
                        name = tag_value(inst, TAG_NAME)
                        if name in found:
                            found[name].append(
                                {"id": inst["InstanceId"], "state": inst["State"]["Name"], "region": region}
                            )
        except (ClientError, BotoCoreError) as e:
            # The region itself may be the one that is down (the controller of another region runs on):
            # its nodes' states are unknown, and only their port checks can tell whether they serve.
            logger.warning("EC2 in %s did not answer (%s): its nodes' instance states are unknown", region, e)
            for name in names:
                found[name] = [{"id": None, "state": UNKNOWN_STATE, "region": region, "error": f"EC2 API: {e}"}]
    for instances in found.values():
        instances.sort(key=lambda i: _STATE_RANK.get(i["state"], len(_STATE_RANK)))
    return found


def instance_node_map(instances: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    return {i["id"]: name for name, found in instances.items() for i in found if i["id"]}


def service_endpoint(node: Node) -> tuple[str, int]:
    """Where a node's service answers: its cloud address (``check_node`` maps it in local mode).
    Tests replace this to point at servers of their own."""
    return str(node.ip), node.port


def node_health(
    topology: Topology,
    instances: Mapping[str, list[dict[str, Any]]],
    *,
    service_check: bool = True,
    timeout: float | None = None,
    threshold: int | None = None,
    interval: float | None = None,
    sleep: Callable[[float], None] = metrics.sleep,
    peer_check: bool | None = None,
) -> dict[str, NodeHealth]:
    """Health of every node: the instance state, and for a running instance (or one whose region's EC2
    API did not answer) ``GET /`` on its port, which must answer with the node's own name.

    A node that fails a check is re-checked every ``interval`` seconds (``failover.check_interval_seconds``)
    and counts as down only after ``threshold`` (``failover.failure_threshold``) failures in a row, so
    one lost packet or slow answer never moves the record. While re-checking, a node is also checked
    from its peer region at the same time (the other cluster region's address; ``peer_check``, by
    default on wherever the controller dials the nodes itself), which tells a cut client link from a
    dead node. Each check is bounded by ``timeout`` (``failover.check_timeout_seconds``). Takes at most
    (threshold - 1) x interval + threshold x timeout seconds.
    """
    policy = topology.failover
    per_try = timeout or policy.check_timeout_seconds
    threshold = threshold or policy.failure_threshold
    interval = policy.check_interval_seconds if interval is None else interval
    if peer_check is None:
        peer_check = not os.environ.get(CHECK_FUNCTION_ENV) or netguard.local_mode_enabled()
    best = {n.name: (instances.get(n.name) or [None])[0] for n in topology.nodes}
    to_check = [
        n.name
        for n in topology.nodes
        if service_check and best[n.name] and best[n.name]["state"] in ("running", UNKNOWN_STATE)
    ]
    checks = _client_checks(topology, to_check, per_try)
    missed = {name: 1 for name in to_check if not _answers(checks[name], name)}
    peer: dict[str, bool | None] = {}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vantage") as pool:
        for _ in range(1, threshold):
            if not missed:
                break
            sleep(interval)
            failing = sorted(missed)
            # Both vantage points at once: a node lost from both costs one timeout per round, not two.
            client = pool.submit(_client_checks, topology, failing, per_try)
            peers = pool.submit(_peer_checks, topology, failing, per_try) if peer_check else None
            again = client.result()
            for name, ok in (peers.result() if peers else {}).items():
                peer[name] = peer.get(name) or ok
            for name in failing:
                checks[name] = again[name]
                if _answers(again[name], name):
                    logger.info("%s answered again after %d missed check(s)", name, missed.pop(name))
                else:
                    missed[name] += 1
    if peer_check and threshold == 1 and missed:
        peer.update(_peer_checks(topology, sorted(missed), per_try))
    health = {}
    for n in topology.nodes:
        inst = best[n.name]
        check = checks.get(n.name)
        service = None
        detail = inst.get("error") if inst else None
        if check is not None:
            service = n.name not in missed
            if not check.reachable:
                detail = check.error
            elif check.name != n.name:
                detail = f"answers as {check.name!r}"
            if not service:
                detail = f"{missed[n.name]} failed checks in a row, {interval:g} s apart: {detail}"
        health[n.name] = NodeHealth(
            n.name,
            inst["id"] if inst else None,
            inst["state"] if inst else None,
            service,
            detail,
            peer.get(n.name),
            missed.get(n.name, 0),
        )
    return health


def _answers(check: NodeCheck, name: str) -> bool:
    return check.reachable and check.name == name


def _check(topology: Topology, name: str, timeout: float, source: str | None = None) -> NodeCheck:
    """One port check of node ``name`` through the package's seams (``source``: a vantage address)."""
    ip, port = _seam("service_endpoint")(topology.node(name))
    if source is None:
        return _seam("check_node")(ip, port, timeout)
    return _seam("check_node")(ip, port, timeout, source=source)


def _client_checks(topology: Topology, names: list[str], timeout: float) -> dict[str, NodeCheck]:
    """One round of checks from the client network: a ``check_nodes`` request to the function placed
    there (``CHECK_NODES_FUNCTION``) on AWS, else by ``check_node`` from here."""
    if not names:
        return {}
    if os.environ.get(CHECK_FUNCTION_ENV) and topology.client.onprem:
        return _request_agent_check_nodes(topology, names, timeout)
    if os.environ.get(CHECK_FUNCTION_ENV):
        return _request_check_nodes(topology, names, timeout)
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="node-check") as pool:
        futures = {name: pool.submit(_check, topology, name, timeout) for name in names}
        return {name: f.result() for name, f in futures.items()}


def peer_source(topology: Topology, node: str) -> str | None:
    """The peer-region vantage point of ``node``: the address of a node in another VPC (its region's
    ClusterNode security group admits the peer VPC), or None when every node shares the VPC."""
    vpc = topology.node(node).vpc
    other = next((n for n in topology.nodes if n.vpc != vpc), None)
    return str(other.ip) if other is not None else None


def _peer_checks(topology: Topology, names: list[str], timeout: float) -> dict[str, bool | None]:
    """One round of checks of ``names`` from their peer region: True/False, None without a vantage."""

    def one(name: str) -> bool | None:
        source = peer_source(topology, name)
        if source is None:
            return None
        try:
            check = _check(topology, name, timeout, source)
        except TypeError:  # a check_node without a vantage point (a test's stand-in)
            return None
        except OSError as e:  # the vantage address is not ours to bind here
            logger.warning("no peer-region check of %s: %s", name, e)
            return None
        return _answers(check, name)

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="peer-check") as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


# --- the check-nodes request ------------------------------------------------------------------------------


class CheckNodesRequest(BaseModel):
    """The controller's request to the function placed in the client network: check these nodes' service
    ports, nothing else (no forwarder path is probed, no record is read, no metric is emitted).

    ``{"request": "check_nodes", "topology": {...}, "nodes": ["Server-A"], "timeout_seconds": 1.0}``;
    the answer is ``{"nodes": {name: {"ip", "reachable", "name", "latency_ms", "error"}}}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: Literal["check_nodes"] = CHECK_NODES
    topology: dict[str, Any]
    nodes: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(gt=0, le=30)


def answer_check_nodes(event: Mapping[str, Any]) -> dict[str, Any]:
    """Run a ``CheckNodesRequest`` (the handler of the function in the client network calls this): every
    node at once, from the client site's address. ConfigurationError for a malformed request or an
    unknown node. No AWS call."""
    from regionha.topology import TopologyError, parse_topology
    from regionha.watch.canary import client_source

    try:
        req = CheckNodesRequest.model_validate(dict(event))
        topology = parse_topology(req.topology, "check_nodes.topology")
        for name in req.nodes:
            node_by_name(topology, name)
    except (ValidationError, TopologyError, ConfigurationError) as e:
        raise ConfigurationError(f"check_nodes request: {e}") from e
    source = client_source(topology)
    with ThreadPoolExecutor(max_workers=len(req.nodes), thread_name_prefix="node-check") as pool:
        futures = {n: pool.submit(_check, topology, n, req.timeout_seconds, source) for n in req.nodes}
        return {"nodes": {n: asdict(f.result()) for n, f in futures.items()}}


def _request_check_nodes(topology: Topology, names: list[str], timeout: float) -> dict[str, NodeCheck]:
    """One ``check_nodes`` request to ``CHECK_NODES_FUNCTION`` (synchronous invoke). A failed invocation
    makes every check fail, which refuses a failover rather than making a blind one.
    IAM: lambda:InvokeFunction on that function.
    """
    from regionha.aws import Clients, stack_region

    function = os.environ[CHECK_FUNCTION_ENV]
    region = stack_region()
    request = CheckNodesRequest(topology=topology.to_json(), nodes=names, timeout_seconds=timeout)
    try:
        response = (
            Clients()
            .client("lambda", region)
            .invoke(FunctionName=function, InvocationType="RequestResponse", Payload=request.model_dump_json())
        )
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"{function}: {body}")
        nodes = body["nodes"]
        return {n: NodeCheck(**nodes[n]) for n in names}
    except Exception as e:  # any failure to check leaves the node unknown, i.e. unhealthy
        return {n: NodeCheck(str(topology.node(n).ip), False, None, 0.0, f"check_nodes function: {e}") for n in names}


# The region of the full stack's probe queue (template.yaml: the stack's own, or the peer's for a
# controller stack).
AGENT_REGION_ENV = "AGENT_REGION"


def _request_agent_check_nodes(topology: Topology, names: list[str], timeout: float) -> dict[str, NodeCheck]:
    """A real on-prem site: the client network's checks come from the on-prem agent (a check_nodes probe
    request, ``regionha.watch.agent_requests``). As with the function, any failure to get an answer makes
    every check fail with the reason, which refuses a failover rather than making a blind one.
    IAM: sqs:GetQueueUrl, sqs:SendMessage, dynamodb:GetItem on the probe reply table."""
    from regionha.aws import Clients, stack_region
    from regionha.watch import agent_requests

    region = os.environ.get(AGENT_REGION_ENV) or stack_region()
    try:
        body = agent_requests.ask_agent(topology, agent_requests.CHECK_NODES, clients=Clients(), region=region,
                                        timeout=timeout, nodes=names)
        nodes = body["nodes"]
        return {n: NodeCheck(**nodes[n]) for n in names}
    except Exception as e:  # any failure to check leaves the node unknown, i.e. unhealthy
        return {n: NodeCheck(str(topology.node(n).ip), False, None, 0.0, f"on-prem agent: {e}") for n in names}
