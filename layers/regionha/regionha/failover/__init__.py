"""Failover: the cluster's "AWS DNS resource", event-driven, checked every few seconds, fenced, and safe
with a controller in each cluster region.

- ``decide``: the pure decision (no AWS call, no clock): ``decide``, ``screen``, ``Trigger``, ``NodeHealth``,
  ``Decision``.
- ``health``: the nodes' instance states and service-port checks (client network and peer region), and
  the ``check_nodes`` request the controller sends the function placed in the client network.
- ``fence``: the DynamoDB item that remembers the moves that happened (hold-down, duplicates, stale events).
- ``resource``: ``activate`` / ``monitor`` / ``deactivate``, the resource-agent view of the record.
- ``controller``: ``run_controller`` (one evaluation), ``watch`` (the sub-minute loop), ``manual_switch``.
- ``settings``: ``ControllerSettings``, ``RetryPolicy``.

The record itself is found, read and written by ``regionha.record``; Route 53's compare-and-swap is the
arbiter between controllers.

Seams: ``check_node`` and ``service_endpoint`` are looked up here, on the package, at call time, so
``failover.check_node = fake`` makes every port check of the controller use ``fake``.
"""

from __future__ import annotations

from regionha.failover.controller import ControllerResult, controller_inventory, manual_switch, run_controller, watch
from regionha.failover.decide import (
    EC2_STATE_CHANGE,
    SCHEDULED_EVENT,
    Action,
    Decision,
    NodeHealth,
    Trigger,
    TriggerKind,
    decide,
    node_named,
    screen,
    trigger_from_event,
)
from regionha.failover.fence import FENCE_SK, Fence, claim_fence, read_fence
from regionha.failover.health import (
    CHECK_NODES,
    CheckNodesRequest,
    answer_check_nodes,
    instance_node_map,
    node_health,
    node_instances,
    peer_source,
    service_endpoint,
)
from regionha.failover.resource import THROTTLING_CODES, RecordStatus, activate, deactivate, monitor
from regionha.failover.settings import ControllerSettings, RetryPolicy
from regionha.failover.standdown import (
    controller_tables,
    resume_controllers,
    stand_down_controllers,
    stand_down_polls,
)
from regionha.watch.canary import NodeCheck, check_node

__all__ = [
    "CHECK_NODES",
    "EC2_STATE_CHANGE",
    "FENCE_SK",
    "SCHEDULED_EVENT",
    "THROTTLING_CODES",
    "Action",
    "CheckNodesRequest",
    "ControllerResult",
    "ControllerSettings",
    "Decision",
    "Fence",
    "NodeCheck",
    "NodeHealth",
    "RecordStatus",
    "RetryPolicy",
    "Trigger",
    "TriggerKind",
    "activate",
    "answer_check_nodes",
    "check_node",
    "claim_fence",
    "controller_inventory",
    "controller_tables",
    "deactivate",
    "decide",
    "instance_node_map",
    "manual_switch",
    "monitor",
    "node_health",
    "node_instances",
    "node_named",
    "peer_source",
    "read_fence",
    "resume_controllers",
    "run_controller",
    "screen",
    "service_endpoint",
    "stand_down_controllers",
    "stand_down_polls",
    "trigger_from_event",
    "watch",
]
