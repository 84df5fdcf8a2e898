"""How the controller talks to the world: retries, waits, the clock and the metrics sink."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regionha.watch import metrics

if TYPE_CHECKING:
    from regionha.topology import Topology


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and equal jitter: attempt n waits within [d/2, d],
    d = min(cap, base * 2**n), so waits grow while concurrent callers spread out."""

    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0

    def delay(self, attempt: int) -> float:
        d = min(self.cap_seconds, self.base_seconds * 2**attempt)
        return d / 2 + random.uniform(0, d / 2)


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller talks to the world; the defaults are the Lambda's."""

    service_check: bool = True
    wait_seconds: float = 60.0
    poll_seconds: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Waits and event times follow one clock (emulated in the local runtime, see metrics.now/sleep).
    sleep: Callable[[float], None] = metrics.sleep
    now: Callable[[], float] = field(default=lambda: metrics.now().timestamp())
    cloudwatch: Any = None  # for the PutMetricData sink
    # Check a node from its peer region too (None: wherever the controller dials the nodes itself).
    peer_check: bool | None = None
    # Dials one node pair for the interconnect refusal (None: regionha.watch.interconnect.default_check).
    interconnect_check: Callable[..., Any] | None = None
    # The other controllers' state tables, (table, region): their fences are read (never written) so
    # that a move by any controller holds every controller down (docs/failover.md).
    peer_tables: tuple[tuple[str, str], ...] = ()



def peer_controller_region(topology: Topology, stack_region: str) -> str | None:
    """Where the second failover controller (a controller-only stack) goes: a cluster region other than
    the stack's, the first standby's region first (the region that must carry on when the primary's is
    lost). None when every node is in the stack's region (a second controller there adds nothing)."""
    ordered = [*(n for n in topology.nodes if n.name != topology.primary.name), topology.primary]
    regions = [topology.region_of(n.vpc) for n in ordered]
    return next((r for r in regions if r != stack_region), None)
