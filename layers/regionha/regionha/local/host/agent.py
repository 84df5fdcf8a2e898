"""The on-prem agent of the local runtime: the twin of its timer on the on-prem DNS server.

On a real site the agent runs ``python -m regionha.watch.coverage`` every minute on the on-prem DNS
server. Here the on-prem server is the BIND fleet's named for ``client.dns_server``: once every
emulated minute (on the runtime's one clock) this ticker reads that named's configuration (the file
it last loaded: ``NamedProcess`` writes it before every start and reload), runs the same
``check_coverage`` and puts the datapoints, stamped with the emulated minute, to the emulated
CloudWatch, where the alarm evaluator reads them. Nothing is published while the on-prem named is not
running (as on a site whose server is down: the alarms see missing data).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from regionha.local.clock import Clock, Ticker
from regionha.topology import Topology
from regionha.watch import coverage, metrics

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 60


class OnPremAgent(Ticker):
    """Checks the on-prem resolver's coverage every ``INTERVAL_SECONDS`` of emulated time.

    ``fleet`` is the runtime's ``BindFleet`` (its ``processes`` by server name); ``cloudwatch`` a
    client of the stack's region. ``tick()`` returns the report when it checked, else None.
    """

    def __init__(self, topology: Topology, fleet: Any, cloudwatch: Any, clock: Clock, interval: float = 0.25):
        super().__init__()
        self.topology = topology
        self.fleet = fleet
        self.cloudwatch = cloudwatch
        self.clock = clock
        self.interval = interval
        self._next: datetime | None = None
        self.last: coverage.CoverageReport | None = None

    def tick(self, now: datetime | None = None) -> coverage.CoverageReport | None:
        now = now or self.clock.now()
        if self._next is None:
            self._next = now
        if now < self._next:
            return None
        slot = self._next
        self._next = slot + timedelta(seconds=INTERVAL_SECONDS * (1 + (now - slot) // timedelta(seconds=60)))
        process = self.fleet.processes.get(self.topology.client.dns_server.name)
        if process is None or not process.running:
            return None
        report = coverage.check_coverage(self.topology, coverage.read_canonical(str(process.files.conf)))
        if not report.ok:
            # INFO, not WARNING: a drill's cut makes this true for a while, and the signal an operator
            # acts on is the onprem-coverage alarm the datapoints below feed, not a console line.
            logger.info("on-prem coverage: %s", "; ".join(report.reasons()))
        metrics.put_metric_data(coverage.datapoints(report), self.cloudwatch, timestamp=slot)
        self.last = report
        return report
