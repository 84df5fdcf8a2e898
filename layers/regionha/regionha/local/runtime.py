"""The local runtime: the product's template, state machines and Lambdas on one machine.

Composes the parts: the emulated AWS (moto server + our handlers, provisioned from template.yaml),
the real DNS (VPC resolvers answering from Route 53 in moto, real ``named`` for every BIND server
the build launched, with the configs regionha renders), the nodes, the network (loopback images of
cloud addresses, tc silent drops for what security groups, network ACLs and instance states
forbid) and what moto does not emulate (schedules, EC2 state-change events, alarm evaluation),
all on one emulated clock.

The whole runtime lives in a network namespace of its own that holds only loopback
(``regionha.local.host.netns``): ``start()`` makes it and moves the starting thread in before anything
else starts, ``stop()`` moves the thread back and deletes it, so nothing the runtime or a library
under it does can send a packet off the machine. The socket guard (``regionha.netguard``) stays on
as a second line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from regionha import netguard
from regionha.aws import Clients
from regionha.environment import Environment
from regionha.errors import ConfigurationError
from regionha.failover.settings import peer_controller_region
from regionha.local.host.fleet import DNS_PORT, BindFleet
from regionha.topology import Topology
from regionha.watch.canary import canary_targets, client_source

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[4]
DEFAULT_TEMPLATE = REPO / "template.yaml"
STACK_NAME = "regionha"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def local_topology(
    topology: Topology, *, poll_seconds: int = 1, canary_timeout: float = 3.0, ttl: int | None = None
) -> Topology:
    """The topology as the local runtime runs it: short polls and optionally a shorter record TTL.

    Time compression distorts what runs in real time: BIND's forwarder fallback takes about 1.2 s per
    silent forwarder whatever the clock says (two Tokyo endpoint IPs can be silent at once), so the
    canary's probe timeout stays above that (else a legitimate fallback reads as "unresolvable").
    The record TTL needs no shortening: the VPC resolvers answer it in real seconds of the emulated
    clock (``clock.real_ttl``), so named's caches expire on the clock the alarms run on."""
    update: dict[str, Any] = {
        "waits": topology.waits.model_copy(update={"poll_seconds": poll_seconds}),
        "canary": topology.canary.model_copy(update={"timeout_seconds": canary_timeout}),
    }
    if ttl is not None:
        update["dns"] = topology.dns.model_copy(
            update={"record": topology.dns.record.model_copy(update={"ttl": ttl})}
        )
    return topology.model_copy(update=update)


@dataclass
class Execution:
    kind: str
    name: str
    arn: str
    status: str
    seconds: float
    output: Any = None
    error: str | None = None
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "arn": self.arn,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "output": self.output,
            "error": self.error,
            "cause": self.cause,
        }


class LocalRuntime:
    """Everything of ``regionha local``; ``start()`` then ``build()``; ``stop()`` undoes it all."""

    def __init__(
        self,
        topology: Topology,
        *,
        template: Path = DEFAULT_TEMPLATE,
        compression: float = 20.0,
        workdir: Path | None = None,
        progress: Progress = _quiet,
        reconcile_interval: float = 0.2,
    ):
        self.topology = topology
        self.template = Path(template)
        self.compression = compression
        self.workdir = Path(workdir) if workdir else Path("/tmp") / f"regionha-local-{os.getpid()}"
        self.progress = progress
        self.reconcile_interval = reconcile_interval
        if topology.client_vpc is None:
            # Its routing over given links, the user's DNS server and the on-prem agent are not emulated yet.
            raise ConfigurationError("the local runtime does not run a real on-prem client site (client.kind: "
                                     "onprem) yet: see docs/onprem.md, 'Not yet'")
        self.region = topology.region_of(topology.client.vpc)
        self.aws: Any = None
        self.stack: Any = None
        # The second failover controller: a controller-only stack in another cluster region.
        self.controller_stack: Any = None
        self.controller_region = peer_controller_region(topology, self.region)
        self.clients: Clients | None = None
        self.network: Any = None
        self.netns: Any = None
        self.world: Any = None
        self.fleet: BindFleet | None = None
        self.resolvers: list[Any] = []
        self.nodes: dict[str, Any] = {}
        self.clock: Any = None
        # Variables every emulated function (and this process) gets: regionha.environment's, the sink.
        self.sandbox: dict[str, str] = {}
        self.bus: Any = None
        self.schedules: Any = None
        self.emitter: Any = None
        self.alarms: Any = None
        self.agent: Any = None  # the on-prem agent's coverage check (local/host/agent.py)
        self.executions: list[Execution] = []
        self._saved_env: dict[str, str | None] = {}
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _setenv(self, key: str, value: str) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def start(self) -> LocalRuntime:
        if os.geteuid() != 0:
            raise ConfigurationError(
                "the local runtime needs root: it runs in a network namespace of its own, adds 127.x "
                "addresses to its lo and cuts paths with tc"
            )
        from regionha.local.aws.alarms import AlarmEvaluator
        from regionha.local.aws.events import Ec2StateChangeEmitter, EventBus, ScheduleRunner
        from regionha.local.aws.server import LocalAws
        from regionha.local.aws.vpcdns import VpcResolver, vpc_id_by_tags
        from regionha.local.clock import CompressedClock, real_ttl
        from regionha.local.host.netns import Namespace
        from regionha.local.host.network import LocalNetwork
        from regionha.local.host.nodes import NodeService
        from regionha.local.world import World

        self._started = True
        try:
            # First: every thread and process started below inherits the namespace.
            self.netns = Namespace().create()
            if self.netns.stale_reaped:
                self.progress(f"removed namespaces of runtimes that died: {', '.join(self.netns.stale_reaped)}")
            self.netns.enter()
            self.progress(
                f"network namespace {self.netns.name}: loopback only "
                f"(enter it with `regionha local exec -- CMD` or `ip netns exec {self.netns.name} CMD`)"
            )
            # What differs locally is handed to the product as its environment (regionha.environment):
            # local addressing and one emulated clock, set on every emulated function below and on this
            # process (its socket guard, and what `regionha local exec` runs).
            self.clock = CompressedClock(self.compression)
            self.sandbox = {
                **Environment(local=True, clock=self.clock).variables(),
                "REGIONHA_METRICS_SINK": "cloudwatch",
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
            self.workdir.mkdir(parents=True, exist_ok=True)
            for key, value in {**self.sandbox, "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}.items():
                self._setenv(key, value)
            netguard.install_socket_guard()

            self.progress("starting the emulated AWS (moto server with our Lambda handlers)")
            self.aws = LocalAws().start()
            self.stack = self.aws.deploy(
                self.template,
                stack_name=STACK_NAME,
                region=self.region,
                parameters={"Deployment": self.topology.deployment},
                sandbox=self.sandbox,
            )
            if self.controller_region:
                self.controller_stack = self.aws.deploy(
                    self.template,
                    stack_name=f"{STACK_NAME}-controller",
                    region=self.controller_region,
                    parameters={
                        "Deployment": self.topology.deployment,
                        "StackRole": "controller",
                        "PeerStateTable": self.stack.physical_id("StateTable"),
                        "PeerRegion": self.region,
                    },
                )
                self.progress(f"a second failover controller in {self.controller_region} (controller-only stack)")
            self.clients = self.aws.clients()
            self.progress(
                f"provisioned from {self.template.name}: {len(self.stack.functions)} functions, "
                f"{len(self.stack.state_machines)} state machines, {len(self.stack.rules)} rules, "
                f"{len(self.stack.alarms)} alarms"
            )

            self.network = LocalNetwork(self.netns.directory / "localnet")
            self.nodes = {
                n.name: NodeService(n.name, netguard.to_local(n.ip), n.port) for n in self.topology.nodes
            }
            self.world = World(self.topology, self.clients, self.network, self.nodes)
            self.world.ensure_addresses()
            for address in self._extra_addresses():
                self.network.add_address(address)

            route53 = self.clients.route53()
            for vpc in self.topology.vpcs:
                listen = [(netguard.to_local(vpc.resolver_ip()), DNS_PORT)]
                for path in self.topology.forwarder_paths:
                    if path.kind == "resolver_endpoint" and path.vpc == vpc.name:
                        listen += [(netguard.to_local(ip), DNS_PORT) for ip in path.addresses()]
                resolver = VpcResolver(
                    vpc.region,
                    vpc_id_by_tags(self.clients.ec2(vpc.region), self.topology.deployment, vpc.name),
                    route53,
                    listen,
                    name=vpc.name,
                    # One clock: DNS caches expire on the emulated time the alarms run on.
                    ttl=functools.partial(real_ttl, self.clock),
                )
                resolver.start()
                self.resolvers.append(resolver)
            self.progress(f"VPC resolvers on {', '.join(h for r in self.resolvers for h, _ in r.addresses)}")

            self.fleet = BindFleet(self.topology, self.clients, self.workdir, installs=self.world.package_install)
            self.world.run(self.reconcile_interval)
            self.fleet.run(self.reconcile_interval)

            self.bus = EventBus(self.clients, self.clock)
            regions = sorted({v.region for v in self.topology.vpcs})
            self.schedules = ScheduleRunner(
                self.clients, [self.region, *([self.controller_region] if self.controller_region else [])], self.clock
            )
            self.emitter = Ec2StateChangeEmitter(self.clients, regions, self.bus, self.clock)
            self.alarms = AlarmEvaluator(self.clients, [self.region], self.clock, event_bus=self.bus)
            self.aws.composite_alarms = self.alarms  # PutCompositeAlarm through the API (moto has none)
            for props in self.stack.alarms.values():
                if props.get("Type") == "composite":
                    self.alarms.put_composite_alarm(self.region, **props)
            from regionha.local.host.agent import OnPremAgent

            self.agent = OnPremAgent(self.topology, self.fleet, self.clients.client("cloudwatch", self.region),
                                     self.clock)
            for ticker in (self.schedules, self.emitter, self.alarms, self.agent):
                ticker.start()
            self.progress(f"schedules, EC2 events and alarms on a clock {self.compression:g}x faster than real")
        except BaseException:
            self.stop()
            raise
        return self

    def _extra_addresses(self) -> list[str]:
        """Addresses beyond the World's: VPC resolvers and the client-site address probes come from."""
        out = [netguard.to_local(v.resolver_ip()) for v in self.topology.vpcs]
        out.append(netguard.to_local(client_source(self.topology)))
        return out

    def stop(self) -> None:
        """Stop every thread and process, remove every address and tc filter, and delete the network
        namespace. Idempotent. Call it from the thread that called ``start()``."""
        if not self._started:
            return
        self._started = False
        for ticker in (self.schedules, self.emitter, self.alarms, self.agent):
            if ticker is not None:
                _safely(ticker.stop)
        if self.fleet is not None:
            _safely(self.fleet.stop)
        if self.world is not None:
            _safely(self.world.stop)
        for resolver in self.resolvers:
            _safely(resolver.stop)
        self.resolvers = []
        for node in self.nodes.values():
            _safely(node.stop)
        if self.network is not None:
            _safely(self.network.close)
        if self.aws is not None:
            _safely(self.aws.wait_for_events, 10)
            _safely(self.aws.stop)
        netguard.uninstall_socket_guard()
        if self.netns is not None:
            # Deleting the namespace removes whatever address, qdisc or process a failed stop left.
            _safely(self.netns.leave)
            _safely(self.netns.delete)
            self.netns = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    # -- state machines ----------------------------------------------------------------------------------

    def state_machine_arn(self, logical_id: str) -> str:
        return self.stack.physical_id(logical_id)

    def run_state_machine(
        self, logical_id: str, payload: dict[str, Any], *, kind: str, timeout: float = 600.0
    ) -> Execution:
        """Start an execution (always named) and wait, bounded, for it to finish."""
        sfn = self.clients.client("stepfunctions", self.region)
        name = f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        arn = sfn.start_execution(
            stateMachineArn=self.state_machine_arn(logical_id), name=name, input=json.dumps(payload)
        )["executionArn"]
        deadline = started + timeout
        while True:
            desc = sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                sfn.stop_execution(executionArn=arn, error="LocalTimeout", cause=f"over {timeout} s")
                desc = sfn.describe_execution(executionArn=arn)
                break
            time.sleep(0.05)
        output = json.loads(desc["output"]) if desc.get("output") else None
        execution = Execution(
            kind, name, arn, desc["status"], time.monotonic() - started, output,
            desc.get("error"), desc.get("cause"),
        )
        self.executions.append(execution)
        return execution

    def build(self, *, timeout: float = 600.0) -> Execution:
        return self.run_state_machine(
            "BuildStateMachine", {"topology": self.topology.to_json()}, kind="build", timeout=timeout
        )

    def teardown(self, *, timeout: float = 600.0) -> Execution:
        return self.run_state_machine(
            "TeardownStateMachine", {"topology": self.topology.to_json()}, kind="teardown", timeout=timeout
        )

    def settle(self) -> None:
        """Apply the AWS-side state now instead of at the next reconcile round."""
        self.world.reconcile()
        self.fleet.reconcile()

    # -- alarms --------------------------------------------------------------------------------------

    def alarm_states(self) -> dict[str, str]:
        """Every alarm's state: metric alarms from CloudWatch, composites from the evaluator (moto
        cannot store composite alarms)."""
        cw = self.clients.client("cloudwatch", self.region)
        states = {}
        for page in cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
            states.update({a["AlarmName"]: a["StateValue"] for a in page["MetricAlarms"]})
        states.update({c["AlarmName"]: c["StateValue"] for c in self.alarms.describe_composite_alarms(self.region)})
        return states

    def alarm_transitions(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """State updates of every alarm (oldest first), in emulated time, since ``since``."""
        out = []
        for name in self.alarm_states():
            for item in self.alarms.history(name, self.region, "StateUpdate"):
                if since is None or item["Timestamp"] >= since:
                    data = json.loads(item.get("HistoryData") or "{}")
                    out.append(
                        {
                            "alarm": name,
                            "time": item["Timestamp"].isoformat(),
                            "old": (data.get("oldState") or {}).get("stateValue"),
                            "new": (data.get("newState") or {}).get("stateValue"),
                        }
                    )
        return sorted(out, key=lambda t: t["time"])

    def wait_emulated(self, minutes: float, *, timeout: float = 120.0) -> None:
        """Sleep until ``minutes`` of emulated time have passed (bounded in real time)."""
        end = self.clock.now() + timedelta(minutes=minutes)
        deadline = time.monotonic() + timeout
        while self.clock.now() < end and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_alarm(self, name: str, state: str, *, minutes: float, timeout: float = 120.0) -> bool:
        """Wait, bounded in emulated minutes, until alarm ``name`` is in ``state``."""
        end = self.clock.now() + timedelta(minutes=minutes)
        deadline = time.monotonic() + timeout
        while self.clock.now() < end and time.monotonic() < deadline:
            if self.alarm_states().get(name) == state:
                return True
            time.sleep(0.1)
        return self.alarm_states().get(name) == state

    # -- what users see --------------------------------------------------------------------------------

    def dns_map(self) -> dict[str, str]:
        """Path name → local host:port of every forwarder path address and the on-prem resolver."""
        return {t.path: f"{netguard.to_local(t.server)}:{DNS_PORT}" for t in canary_targets(self.topology)}

    def state(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.aws.endpoint_url,
            "region": self.region,
            "deployment": self.topology.deployment,
            "dns": self.dns_map(),
            "nodes": {n.name: f"{netguard.to_local(n.ip)}:{n.port}" for n in self.topology.nodes},
            "client_source": netguard.to_local(client_source(self.topology)),
            "record": self.topology.dns.record.name,
            "state_machines": {
                lid: self.state_machine_arn(lid)
                for lid, r in self.stack.resources.items()
                if r.type == "AWS::StepFunctions::StateMachine"
            },
            "compression": self.compression,
            "pid": os.getpid(),
            "netns": self.netns.name,
        }


def _safely(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("while stopping: %s", getattr(fn, "__qualname__", fn))
