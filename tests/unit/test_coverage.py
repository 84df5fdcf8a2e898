"""The on-prem resolver's coverage: its effective forwarder list against the render, each path asked alone.

Configs are the real render checked by the real ``named-checkconf -p`` (the text the agent reads);
forwarder paths are scripted DNS servers on loopback (tests/dnsfake.py), probed in local mode.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from regionha import netguard
from regionha.bind import NamedRuntime, render_onprem_conf
from regionha.errors import ConfigurationError
from regionha.watch.coverage import check_coverage, datapoints, main, read_canonical, zone_forwarders

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from dnsfake import FakeDNSServer, answer, drop  # noqa: E402
from localmode import local_mode  # noqa: E402, F401 - autouse fixture

A_IP = "10.0.110.10"
LABELS = ("tokyo-resolver/10.0.111.100", "tokyo-resolver/10.0.111.101", "osaka-bind")
IMAGES = ("127.0.111.100", "127.0.111.101", "127.1.111.10")


def canonical(tmp_path: Path, text: str) -> str:
    conf = tmp_path / "named.conf"
    conf.write_text(text)
    return read_canonical(str(conf))


def render(topology, ports: dict[str, int] | None = None, drop_addresses: tuple[str, ...] = ()) -> str:
    """The on-prem render in local form, each forwarder on its scripted server's port (BIND's per-address
    ``port``); ``drop_addresses`` removed from its zone forwarders (drift)."""
    runtime = NamedRuntime(directory="/tmp", upstream_port=5300)
    text = render_onprem_conf(topology, addr=netguard.to_local, runtime=runtime)
    for address in drop_addresses:
        text = text.replace(f"{address} port 5300; ", "")
    for address, port in (ports or {}).items():
        text = text.replace(f"{address} port 5300;", f"{address} port {port};")
    return text


def test_the_zone_forwarders_are_read_from_the_canonical_config(tmp_path, topology):
    text = canonical(tmp_path, render(topology))
    assert zone_forwarders(text, topology.dns.zone_fqdn) == [(ip, 5300) for ip in IMAGES]
    # Other names go to the client VPC's resolver (the options list), never to the paths.
    assert zone_forwarders(text, "example.com.") == [("127.2.0.2", 5300)]


@pytest.mark.parametrize(("zone_block", "expected"), [
    ('zone "cluster.local" { type forward; forward only; forwarders port 5353 { 127.0.0.5; 127.0.0.6 port 99; }; };',
     [("127.0.0.5", 5353), ("127.0.0.6", 99)]),
    ('zone "cluster.local" { type forward; forwarders { }; };', []),  # forwarding disabled for the zone
    ('zone "cluster.local" { type primary; file "cluster.db"; };', []),  # authoritative: nothing forwarded
    ('zone "other.local" { type forward; forwarders { 127.0.0.5; }; };', [("127.0.0.9", 53)]),
])
def test_zone_forwarders_follow_bind_inheritance(tmp_path, zone_block, expected):
    text = canonical(tmp_path, 'options { directory "/tmp"; forwarders { 127.0.0.9; }; };\n' + zone_block)
    assert zone_forwarders(text, "cluster.local.") == expected


def test_a_config_named_would_refuse_is_a_configuration_error(tmp_path):
    conf = tmp_path / "named.conf"
    conf.write_text("options { forwarders { not-an-address; }; };")
    with pytest.raises(ConfigurationError, match="named-checkconf"):
        read_canonical(str(conf))


class Paths:
    """A scripted DNS server on each forwarder path address's loopback image."""

    def __init__(self, stack: ExitStack, actions: dict[str, object] | None = None):
        actions = actions or {}
        self.ports = {ip: stack.enter_context(FakeDNSServer(actions.get(ip, answer(A_IP)), address=ip)).port
                      for ip in IMAGES}


def test_a_clean_config_covers_every_path(tmp_path, topology):
    with ExitStack() as stack:
        paths = Paths(stack)
        report = check_coverage(topology, canonical(tmp_path, render(topology, paths.ports)), timeout=1.0)
    assert report.ok and report.reasons() == []
    assert [(p.label, p.listed, p.answers) for p in report.paths] == [(label, True, True) for label in LABELS]
    points = {(d.name, d.dimensions.get("Path")): d.value for d in datapoints(report)}
    assert points == {**{("OnPremPathCovered", label): 1.0 for label in LABELS}, ("OnPremForwarderExtra", None): 0.0}


def test_a_path_dropped_from_the_forwarders_is_no_longer_covered(tmp_path, topology):
    with ExitStack() as stack:
        paths = Paths(stack)
        drifted = render(topology, paths.ports, drop_addresses=("127.1.111.10",))
        report = check_coverage(topology, canonical(tmp_path, drifted), timeout=1.0)
    osaka = {p.label: p for p in report.paths}["osaka-bind"]
    assert (osaka.listed, osaka.covered, osaka.outcome) == (False, False, None)
    assert not report.ok
    assert report.reasons() == [f"osaka-bind: 127.1.111.10 is not in the on-prem resolver's forwarders for "
                                f"{topology.dns.zone_fqdn} (config drift): the path is no longer used"]
    assert {d.dimensions.get("Path"): d.value for d in datapoints(report)}["osaka-bind"] == 0.0


def test_a_listed_path_that_does_not_answer_the_onprem_resolver_is_not_covered(tmp_path, topology):
    with ExitStack() as stack:
        paths = Paths(stack, {"127.1.111.10": drop()})
        report = check_coverage(topology, canonical(tmp_path, render(topology, paths.ports)), timeout=0.5)
    osaka = {p.label: p for p in report.paths}["osaka-bind"]
    assert (osaka.listed, osaka.answers, osaka.outcome) == (True, False, "timeout")


def test_an_unknown_forwarder_is_reported(tmp_path, topology):
    with ExitStack() as stack:
        paths = Paths(stack)
        osaka = f"127.1.111.10 port {paths.ports['127.1.111.10']};"
        text = render(topology, paths.ports).replace(osaka, f"{osaka} 127.9.9.9 port 5300;", 1)
        report = check_coverage(topology, canonical(tmp_path, text), timeout=1.0)
    assert report.extra == ("127.9.9.9",) and not report.ok


def test_the_agent_command_exits_1_on_drift_and_2_on_a_bad_config(tmp_path, topology, capsys):
    with ExitStack() as stack:
        paths = Paths(stack)
        conf = tmp_path / "onprem.conf"
        conf.write_text(render(topology, paths.ports, drop_addresses=("127.1.111.10",)))
        topo = REPO / "layers/regionha/regionha/topologies/reference.yaml"
        assert main(["--topology", str(topo), "--conf", str(conf), "--timeout", "1"]) == 1
        assert '"ok": false' in capsys.readouterr().out
        conf.write_text("options {")
        assert main(["--topology", str(topo), "--conf", str(conf)]) == 2
