"""The on-prem resolver's coverage in the local runtime (issue 13 item 3), with the real on-prem named.

GIVEN a built deployment whose watch runs (canary rounds, the on-prem agent every emulated minute):
a clean run keeps every coverage alarm OK; WHEN the on-prem named's forwarder list drifts (the Osaka
path removed and named reloaded), THEN every canary probe still passes (Tokyo answers: the blind spot)
but ``onprem-coverage-osaka-bind`` goes to ALARM; restoring the render clears it.
"""

from __future__ import annotations

import pytest

from regionha import bind, netguard
from regionha.local.host.named import local_runtime
from regionha.watch.alarms import alarm_name, coverage_down, path_down
from regionha.watch.canary import FORWARDER_PATH, canary_targets

pytestmark = pytest.mark.integration

OSAKA = "osaka-bind"


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@pytest.fixture(scope="module")
def runtime(start_runtime):
    return start_runtime(settle=True)


def onprem_render(rt, *, without: str | None = None):
    """The fleet's local render of the on-prem named.conf, optionally without one forwarder address."""
    osaka_image = netguard.to_local(next(p.ip for p in rt.topology.forwarder_paths if p.name == OSAKA))

    def render(files) -> str:
        text = bind.render_onprem_conf(rt.topology, addr=netguard.to_local,
                                       runtime=local_runtime(files, port=53, upstream_port=53))
        return text.replace(f"{osaka_image} port 53; ", "") if without else text

    return render


def coverage_alarms(rt) -> dict[str, str]:
    states = rt.alarm_states()
    labels = [t.path for t in canary_targets(rt.topology) if t.kind == FORWARDER_PATH]
    return {label: states.get(alarm_name(rt.topology.deployment, coverage_down(label).suffix)) for label in labels}


def test_a_clean_deployment_is_covered_through_every_path(runtime):
    runtime.wait_emulated(4)
    report = runtime.agent.last
    assert report is not None and report.ok, report and report.reasons()
    assert set(coverage_alarms(runtime).values()) == {"OK"}


def test_a_drifted_forwarder_list_alarms_while_every_canary_probe_passes(runtime):
    onprem = runtime.fleet.processes[runtime.topology.client.dns_server.name]
    since = runtime.clock.now()
    onprem.reload(onprem_render(runtime, without=OSAKA))
    try:
        name = alarm_name(runtime.topology.deployment, coverage_down(OSAKA).suffix)
        assert runtime.wait_alarm(name, "ALARM", minutes=5), runtime.agent.last and runtime.agent.last.reasons()
        fired_after = (runtime.clock.now() - since).total_seconds()
        print(f"\nonprem-coverage-{OSAKA}: ALARM {fired_after:.0f} emulated s after the drift")
        assert [r for r in runtime.agent.last.reasons() if r.startswith(f"{OSAKA}:")]
        # The blind spot this closes: the canary still sees every path and the on-prem resolver healthy.
        states = runtime.alarm_states()
        assert states[alarm_name(runtime.topology.deployment, path_down(OSAKA).suffix)] == "OK"
        assert states[alarm_name(runtime.topology.deployment, "onprem-down")] == "OK"
        assert {k: v for k, v in coverage_alarms(runtime).items() if k != OSAKA} == \
            dict.fromkeys([k for k in coverage_alarms(runtime) if k != OSAKA], "OK")
    finally:
        onprem.reload(onprem_render(runtime))
    assert runtime.wait_alarm(name, "OK", minutes=5)
