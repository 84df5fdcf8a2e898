"""DispatchCanary: read what the canary needs from AWS APIs, then run it inside the client network.

Scheduled by EventBridge once a minute. The canary itself runs in the client VPC (placed there by the
build), where it can reach the forwarder paths but, like any VPC Lambda without a NAT or endpoints, no
AWS API. So this function (outside any VPC) reads the topology from the inventory once, then runs a
round every 10 s until the next schedule (``regionha.watch.rounds``), each in a thread of its own so a
slow round never delays the next: each round reads the truth from Route 53 and invokes the canary
synchronously with both and the round's slot time; the canary only probes and emits EMF metrics
stamped with that time (high resolution, for the 10-second alarms).

The build invokes it once with ``{"rounds": 12, "until_all_succeed": true, "interval_seconds": P}``
before it makes the alarms (``statemachines/build.asl.json``, FirstCanaryRound): rounds every P seconds
(the topology's ``waits.poll_seconds``, as every bounded wait of the build; 0: one round) until one finds
every path and node answering, for at most a minute, because the nodes' services may still be starting (on AWS their
user-data takes about a minute). The build's summary reports it (``all_succeeded``, ``rounds``); the
alarms' warm-up (``regionha.watch.alarms``) covers the rest.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.errors import TransientError
from regionha.payload import clients, require_env, stack_region
from regionha.watch import canary, metrics, rounds

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-dispatch-canary")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    aws = clients()
    topology = canary.stack_topology(aws)
    if topology.client.onprem:
        # A real on-prem site: its on-prem agent runs the canary there; from here every path would fail.
        return {"skipped": "on-prem site: the on-prem agent publishes the canary (docs/onprem.md)"}
    lam = aws.client("lambda", stack_region())
    interval = float(os.environ.get("CANARY_ROUND_SECONDS") or rounds.ROUND_SECONDS)

    def round_once(slot: datetime) -> dict[str, Any]:
        truth = canary.read_truth(topology, aws)
        payload = {
            "topology": topology.to_json(),
            "truth": {"ip": truth.ip, "ttl": truth.ttl, "node": truth.node},
            # The round's slot time: its metrics are stamped with it (10-second alarm periods).
            "time": slot.astimezone(UTC).isoformat(),
        }
        response = lam.invoke(FunctionName=require_env("CANARY_FUNCTION"), InvocationType="RequestResponse",
                              Payload=json.dumps(payload))
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            # No heartbeat from here on this minute: the canary-silent alarm says so.
            raise TransientError(f"canary run failed: {body}")
        logger.info("canary round", extra={"slot": payload["time"], "truth": payload["truth"],
                                           "all_succeeded": body.get("all_succeeded")})
        return {"truth": payload["truth"], "duration_ms": body.get("duration_ms"),
                "all_succeeded": bool(body.get("all_succeeded")),
                "paths": {p["path"]: p.get("success") for p in body.get("paths", [])}}

    start = rounds.event_time(event) or metrics.now()
    # {"rounds": n} (the build's first rounds): n rounds instead of a whole minute's; with
    # "until_all_succeed", one at a time, stopping at the first that finds everything answering.
    count = event.get("rounds") if isinstance(event, dict) else None
    span = min(interval * count, rounds.SPAN_SECONDS) if isinstance(count, int) and count > 0 else rounds.SPAN_SECONDS
    if isinstance(event, dict) and event.get("until_all_succeed"):
        given = event.get("interval_seconds")
        wait = float(given) if isinstance(given, int | float) and not isinstance(given, bool) else interval
        every = wait if wait > 0 else interval
        # At most `count` rounds within a minute; 0 (a topology whose build does not wait): one round.
        bound = min(every * count, rounds.SPAN_SECONDS) if wait > 0 and isinstance(count, int) and count > 0 else every
        done = [r.result for r in rounds.run_rounds(start, round_once, now=metrics.now, sleep=metrics.sleep,
                                                      interval=every, span=bound,
                                                      until=lambda r: r["all_succeeded"])]
        return {**(done[-1] if done else {}), "rounds": len(done)}
    # Each round starts at its slot even while an earlier one still waits for a silent path, so every
    # 10-second period gets its datapoints (stamped with the slot) however long a probe takes.
    with ThreadPoolExecutor(max_workers=rounds.slots(interval, span), thread_name_prefix="canary-round") as pool:
        started = rounds.run_rounds(start, lambda slot: pool.submit(round_once, slot), now=metrics.now,
                                    sleep=metrics.sleep, interval=interval, span=span)
        done = [r.result.result() for r in started]
    return {**(done[-1] if done else {}), "rounds": len(done)}
