"""A teardown stands the failover controllers down before it touches the record (moto, real controller).

The race it closes: the teardown deletes the record and then the zone; a controller that decided a
moment before (it saw "no record", or a dead node) writes the record back in between, and the zone
delete fails with HostedZoneNotEmpty. The mark is in the fence (DynamoDB), every Route 53 write needs a
write permit refused once the mark is there, and the next build removes it.
"""

from __future__ import annotations

import threading

import pytest
import test_failover as world  # the same world: moto, node services on loopback, template-shaped tables
from test_failover import (
    B_IP,
    FAST,
    STACK_REGION,
    T0,
    create_table,
    route53_writes,
    run,
    stop_node,
    stopped_event,
)

from regionha import failover, record
from regionha.converge.dns import read_record
from regionha.errors import ConfigurationError, TransientError, WaitTimeoutError
from regionha.failover import ControllerSettings, read_fence, resume_controllers, stand_down_controllers
from regionha.failover.fence import SEND_MARGIN_SECONDS, WRITE_PERMIT_SECONDS, StoodDown, permit_write

DEP = "regionha-ref"
# The world's fixtures, shared with test_failover.py.
local_only, node_services, moto_world = world.local_only, world.node_services, world.moto_world


def _tables(world, peer: str | None = None):
    own = ((world.table, STACK_REGION),)
    return own + (((peer, "ap-northeast-3"),) if peer else ())


def _stand_down(world, now: float, tables=None, attempt: int = 0, max_polls: int = 5):
    return stand_down_controllers(
        world.clients,
        tables or _tables(world),
        DEP,
        reason="teardown td-1",
        now=now,
        attempt=attempt,
        max_polls=max_polls,
    )


def test_a_stood_down_controller_writes_nothing_and_the_build_resumes_it(moto_world, node_services, call_counter):
    stop_node(moto_world, node_services, "Server-A")
    assert _stand_down(moto_world, T0)["ready"] is True  # no permit running: nothing to wait out
    writes = len(route53_writes(call_counter))

    result = run(moto_world, stopped_event(moto_world, "Server-A", T0 + 1), ControllerSettings(now=lambda: T0 + 2))

    assert result.decision.action == "ignore" and "stood down" in result.decision.reason, result.decision
    assert len(route53_writes(call_counter)) == writes
    assert read_record(moto_world.topology, moto_world.clients)["ip"] != B_IP
    # The next build (SaveInventory) removes the mark; the same event now moves the record.
    assert resume_controllers(moto_world.clients, _tables(moto_world), DEP) == [f"{STACK_REGION}/{moto_world.table}"]
    assert resume_controllers(moto_world.clients, _tables(moto_world), DEP) == []
    moved = run(
        moto_world,
        stopped_event(moto_world, "Server-A", T0 + 3),
        ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=lambda s: None, now=lambda: T0 + 4),
    )
    assert moved.moved and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP


def test_a_controller_in_flight_has_its_write_refused_when_the_mark_came_first(
    moto_world, node_services, call_counter, monkeypatch
):
    """The controller read the fence ("go") and decided to fail over; the teardown marks the fence
    before the controller's write: its permit is refused and Route 53 sees no write."""
    stop_node(moto_world, node_services, "Server-A")
    original = failover.controller.permit_write

    def teardown_first(*args, **kwargs):
        _stand_down(moto_world, T0 + 2)
        return original(*args, **kwargs)

    monkeypatch.setattr(failover.controller, "permit_write", teardown_first)
    writes = len(route53_writes(call_counter))
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0), ControllerSettings(now=lambda: T0 + 2))
    assert result.decision.action == "ignore" and "stand-down mark" in result.decision.reason
    assert len(route53_writes(call_counter)) == writes
    assert read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, DEP).generation == 0


def test_a_permit_taken_before_the_mark_is_waited_out_and_its_write_lands_before_the_teardown_goes_on(
    moto_world, node_services
):
    """The other order: the controller took its permit, then the teardown marked the fence. The teardown
    is not ready until the permit has run out, and by then the controller's write is in and recorded."""
    stop_node(moto_world, node_services, "Server-A")
    clock = {"now": T0 + 2}
    permitted, marked = threading.Event(), threading.Event()
    original = record.swap_record

    def slow_swap(*args, **kwargs):
        permitted.set()
        assert marked.wait(10)
        return original(*args, **kwargs)

    settings = ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=lambda s: None, now=lambda: clock["now"])
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(record, "swap_record", slow_swap)
        t = threading.Thread(
            target=lambda: results.update(r=run(moto_world, stopped_event(moto_world, "Server-A", T0), settings))
        )
        t.start()
        assert permitted.wait(10)
        first = _stand_down(moto_world, T0 + 3)
        marked.set()
        t.join(30)
    assert first["ready"] is False and "write permit" in next(iter(first["statuses"].values()))
    assert results["r"].moved and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    # The mark stays through the controller's fence update (UpdateItem, not a whole-item put).
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, DEP)
    assert fence.generation == 1 and fence.stand_down == "teardown td-1"
    # Ready once the permit has ended, at most WRITE_PERMIT_SECONDS after the controller took it.
    assert _stand_down(moto_world, T0 + 2 + WRITE_PERMIT_SECONDS, attempt=1)["ready"] is True


def test_a_write_is_not_sent_once_the_permit_is_nearly_over(moto_world, node_services, call_counter, monkeypatch):
    """A write (a throttling retry, say) is not sent with less than the send margin left of the permit:
    the teardown's wait covers every write that is sent."""
    stop_node(moto_world, node_services, "Server-A")
    clock = {"now": T0 + 2}
    original = failover.controller.permit_write

    def slow_after_permit(*args, **kwargs):
        original(*args, **kwargs)
        clock["now"] = kwargs["until"] - SEND_MARGIN_SECONDS + 0.1  # the controller stalled meanwhile

    monkeypatch.setattr(failover.controller, "permit_write", slow_after_permit)
    writes = len(route53_writes(call_counter))
    with pytest.raises(TransientError, match="write permit ran out"):
        run(moto_world, stopped_event(moto_world, "Server-A", T0), ControllerSettings(now=lambda: clock["now"]))
    assert len(route53_writes(call_counter)) == writes


def test_the_peer_controllers_table_carries_the_mark_too(moto_world, node_services, call_counter):
    """The controller stack in the other region reads the build stack's fence as its peer: a mark there
    stands it down even when its own table has none (the twin's one-way peering)."""
    peer = create_table("StateTable", "regionha-state-full")
    stop_node(moto_world, node_services, "Server-A")
    _stand_down(moto_world, T0, tables=((peer, STACK_REGION),))
    writes = len(route53_writes(call_counter))
    settings = ControllerSettings(now=lambda: T0 + 2, peer_tables=((peer, STACK_REGION),))
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0 + 1), settings)
    assert "stood down" in result.decision.reason and len(route53_writes(call_counter)) == writes
    ddb = moto_world.clients.client("dynamodb", STACK_REGION)
    with pytest.raises(StoodDown):
        permit_write(ddb, peer, DEP, writer="ap-northeast-3", until=T0 + 30)
    permit_write(ddb, moto_world.table, DEP, writer="ap-northeast-3", until=T0 + 30)  # own table: no mark


def test_a_manual_switch_is_refused_while_stood_down(moto_world):
    _stand_down(moto_world, T0)
    with pytest.raises(ConfigurationError, match="build again"):
        failover.manual_switch(
            moto_world.topology,
            moto_world.clients,
            "Server-B",
            table=moto_world.table,
            table_region=STACK_REGION,
            settings=FAST,
        )


def test_the_stand_down_wait_is_bounded(moto_world):
    permit_write(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, DEP, writer="x", until=T0 + 30)
    with pytest.raises(WaitTimeoutError, match="write permit"):
        _stand_down(moto_world, T0, attempt=4, max_polls=5)


def test_the_wait_outlasts_a_write_permit_whatever_the_topologys_waits(topology):
    from regionha.failover import stand_down_polls
    from regionha.topology.model import Waits

    for poll, polls in ((5, 60), (0, 1), (1, 3), (10, 2)):
        t = topology.model_copy(update={"waits": Waits(poll_seconds=poll, max_polls=polls)})
        assert stand_down_polls(t) * max(poll, 1) > WRITE_PERMIT_SECONDS
        assert stand_down_polls(t) >= polls
