"""The on-prem site's DNS server configuration comes from the product (docs/onprem.md, "Your DNS
server"): ``render_onprem_conf`` without a client VPC, and ``regionha onprem named-conf`` printing it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from regionha.bind import NamedRuntime, render_onprem_conf
from regionha.cli import main
from regionha.topology import load_topology

SITE_FILE = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/onprem-site.yaml"
SITE = load_topology(SITE_FILE)


def _options(conf: str) -> str:
    return re.search(r"^options \{\n(.*?)^\};", conf, re.M | re.S).group(1)


def test_the_site_server_forwards_only_the_zone_to_every_path_with_caches_bounded_by_the_ttl():
    conf = render_onprem_conf(SITE)
    zone = conf[conf.index('zone "site.internal" {'):]
    assert "forward only;" in zone
    assert "forwarders { 10.60.111.100 port 53; 10.60.111.101 port 53; 10.61.111.10 port 53; };" in zone
    options = _options(conf)
    for line in ("max-cache-ttl 60;", "max-ncache-ttl 60;", "servfail-ttl 1;", "stale-answer-enable no;"):
        assert line in options
    # No upstream of regionha's for other names (the user's server decides), and validation stays on
    # for them: only the private zone is exempt.
    assert "forwarders" not in options and "forward only" not in options
    assert 'validate-except { "site.internal"; };' in options and "dnssec-validation no" not in options


def test_an_upstream_given_is_forwarded_to_forward_only():
    options = _options(render_onprem_conf(SITE, upstream=["10.62.10.1"]))
    assert "forward only;" in options and "forwarders { 10.62.10.1 port 53; };" in options


def test_a_vpc_site_still_forwards_the_rest_to_its_vpc_resolver():
    options = _options(render_onprem_conf(load_topology()))
    assert "forwarders { 10.2.0.2 port 53; };" in options


@pytest.mark.skipif(shutil.which("named-checkconf") is None, reason="named-checkconf not installed")
def test_named_checkconf_accepts_it(tmp_path):
    conf = tmp_path / "named.conf"
    conf.write_text(render_onprem_conf(SITE, runtime=NamedRuntime(directory=str(tmp_path))))
    found = subprocess.run(["named-checkconf", str(conf)], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stdout + found.stderr


def test_the_cli_prints_the_render(capsys):
    assert main(["onprem", "named-conf", "--topology", str(SITE_FILE)]) == 0
    assert capsys.readouterr().out == render_onprem_conf(SITE)


def test_the_cli_refuses_a_bad_upstream_plainly(capsys):
    assert main(["onprem", "named-conf", "--topology", str(SITE_FILE), "--upstream", "dns.example"]) == 2
    assert "dns.example" in capsys.readouterr().err
