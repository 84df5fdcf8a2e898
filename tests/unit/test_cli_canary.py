"""``regionha canary run`` says, before it sends anything, that it probes the real network and where."""

from __future__ import annotations

import pytest

from regionha import cli, netguard
from regionha.watch import canary


@pytest.fixture
def real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(netguard.LOCAL_ENV, raising=False)


def test_a_real_network_run_lists_every_destination_before_the_first_probe(real_network, monkeypatch, capsys):
    seen_before_probe: list[str] = []

    def no_probe(*args, **kwargs):
        seen_before_probe.append(capsys.readouterr().err)
        raise KeyboardInterrupt  # stop here: nothing is sent

    monkeypatch.setattr(canary, "run_canary", no_probe)

    cli.main(["canary", "run", "--expect", "10.1.110.10", "--server-map", "onprem=192.0.2.53:5353"])

    notice = seen_before_probe[0]
    assert "probing the REAL network" in notice
    for destination in ("10.0.111.100:53", "10.0.111.101:53", "10.1.111.10:53", "192.0.2.53:5353",
                        "10.0.110.10:80", "10.1.110.10:80"):
        assert destination in notice
    assert "10.2.10.10:53" not in notice  # the on-prem resolver's probes go to the --server-map address
    assert "Route 53" not in notice  # --expect: the record is not read


def test_local_mode_prints_no_real_network_notice(monkeypatch, capsys):
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    monkeypatch.setattr(canary, "run_canary", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        cli.main(["canary", "run", "--expect", "10.1.110.10"])
    finally:
        netguard.uninstall_socket_guard()
    assert "REAL network" not in capsys.readouterr().err


def test_help_names_the_modes_and_regionha_local(capsys):
    with pytest.raises(SystemExit):
        cli.main(["canary", "run", "--help"])
    out = capsys.readouterr().out
    assert "REGIONHA_LOCAL=1" in out and "real network" in out and "regionha local exec" in out
