"""``regionha topology validate|show`` through ``main([...])``: exit codes and what lands on which stream."""

from __future__ import annotations

import json
import socket
from importlib import resources
from pathlib import Path

import botocore.client
import botocore.endpoint
import pytest
import yaml

from regionha.cli import EXIT_INVALID, EXIT_OK, default_topology_path, main
from regionha.topology import DEFAULT_TOPOLOGY

REFERENCE_TEXT = resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY).read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def no_aws_and_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation is offline: any AWS API call or socket connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("topology commands must not call AWS or open a connection")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write(tmp_path: Path, content: str | bytes, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_the_no_aws_guard_can_fail() -> None:
    # Proof that the autouse fixture really catches a client call, so the tests below mean something.
    import boto3

    client = boto3.client("ec2", region_name="ap-northeast-1")
    with pytest.raises(AssertionError, match="must not call AWS"):
        client.describe_vpcs()


def test_validate_default_prints_one_ok_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "validate"]) == EXIT_OK
    out, err = capsys.readouterr()
    # The reference's zone is the article's cluster.local: valid, with the one mDNS warning.
    assert err.splitlines() == [
        f"{default_topology_path()}: dns.zone: warning: zone cluster.local. is under local., which RFC 6762 "
        "reserves for Multicast DNS: hosts running mDNS (macOS, Avahi, systemd-resolved) may ask the local link "
        "instead of the DNS server and never see the record; a zone under a domain you own avoids that"
    ]
    assert out.count("\n") == 1
    assert out.startswith(f"{default_topology_path()}: OK: deployment regionha-ref")
    assert "primary Server-A" in out


def test_validate_named_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, REFERENCE_TEXT)
    assert main(["topology", "validate", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"{path}: OK:")


def test_validate_reports_every_problem_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(REFERENCE_TEXT)
    data["vpcs"][0]["region"] = "ap-northeast-9"
    data["dns"]["record"]["ttl"] = -1
    data["forwarder_paths"][0]["ips"][1]["ip"] = "10.0.111.255"
    path = write(tmp_path, yaml.safe_dump(data))

    assert main(["topology", "validate", str(path)]) == EXIT_INVALID

    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: vpcs[0].region: unknown AWS region 'ap-northeast-9'",
        f"{path}: dns.record.ttl: TTL -1 is outside Route 53's range 0..2147483647",
        f"{path}: forwarder_paths[0].ips[1].ip: 10.0.111.255 is reserved by AWS in subnet A3 "
        "(10.0.111.0/24): "
        "the first four addresses and the last cannot be assigned",
    ]


def test_structure_problems_use_the_same_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(REFERENCE_TEXT)
    data["vpcs"][1]["colour"] = "blue"
    del data["client"]["dns_server"]["ip"]
    path = write(tmp_path, yaml.safe_dump(data))

    assert main(["topology", "validate", str(path)]) == EXIT_INVALID

    assert sorted(capsys.readouterr().err.splitlines()) == [
        f"{path}: client.dns_server.ip: required field is missing",
        f"{path}: vpcs[1].colour: unknown key",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("", "(file): is empty", id="empty"),
        pytest.param("# only a comment\n", "(file): is empty", id="only-comments"),
        pytest.param(
            b"deployment: x\n\xff\xfe\n",
            "(file): not UTF-8 text (invalid byte 0xff at offset 14)",
            id="not-utf8",
        ),
        pytest.param("vpcs: [\n", "(file): not valid YAML: line 2, column 1:", id="broken-yaml"),
        pytest.param("- a\n- b\n", "(top level): must be a mapping", id="yaml-list"),
        pytest.param(
            "just words\n", "(top level): must be a mapping of keys to values, not str", id="yaml-scalar"
        ),
        pytest.param(
            "a: 1\n---\nb: 2\n",
            "(file): not valid YAML: line 2, column 1: expected a single document",
            id="two-documents",
        ),
    ],
)
def test_bad_files_give_one_line_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, message: str
) -> None:
    path = write(tmp_path, content)
    assert main(["topology", "validate", str(path)]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"{path}: {message}")
    assert "Traceback" not in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["topology", "validate", str(path)]) == EXIT_INVALID
    assert capsys.readouterr().err == f"{path}: (file): cannot read: No such file or directory\n"


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "validate", str(tmp_path)]) == EXIT_INVALID
    assert capsys.readouterr().err == f"{tmp_path}: (file): cannot read: Is a directory\n"


def test_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # chmod 0 does not stop root (the tests run as root here), so the refusal is simulated.
    path = write(tmp_path, REFERENCE_TEXT)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert main(["topology", "validate", str(path)]) == EXIT_INVALID
    assert capsys.readouterr().err == f"{path}: (file): cannot read: Permission denied\n"


def test_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + REFERENCE_TEXT.encode())
    assert main(["topology", "validate", str(path)]) == EXIT_OK


def test_show_prints_the_normalised_topology_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "show"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["deployment"] == "regionha-ref"
    # Defaults the file leaves out are filled in: the output is the whole model.
    defaults = {
        "mode": "builtin", "failback": "manual", "hold_down_seconds": 60, "rto_budget_seconds": 300,
        "failure_threshold": 3, "check_interval_seconds": 2.0, "check_timeout_seconds": 1.0,
        "client_link_cut": "stay",
    }
    assert defaults.items() <= shown["failover"].items()
    assert shown["forwarder_paths"][0]["ips"][0] == {"subnet": "A3", "ip": "10.0.111.100"}


def test_show_refuses_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, REFERENCE_TEXT.replace("ttl: 60", "ttl: -1"))
    assert main(["topology", "show", str(path)]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: dns.record.ttl: TTL -1 is outside Route 53's range 0..2147483647\n"


@pytest.mark.parametrize("argv", [[], ["topology"], ["topology", "frobnicate"], ["nonsense"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: regionha" in capsys.readouterr().err
