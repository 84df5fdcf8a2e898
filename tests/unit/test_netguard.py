"""netguard: cloud -> loopback mapping, local mode, and the socket guard tripping before any send.

The guard tests never let a forbidden destination reach the kernel even if the guard were broken:
a tripwire sits *under* the guard (installed first, so the guard wraps it) and fails the test
instead of sending to anything that is not loopback. Under a working guard the tripwire is never
reached, and the socket stays unbound (port 0): the kernel never saw the call.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from regionha import netguard
from regionha.environment import Environment
from regionha.errors import ConfigurationError
from regionha.netguard import UnsafeDestination


@pytest.fixture(autouse=True)
def _local_mode_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(netguard.LOCAL_ENV, raising=False)
    yield
    netguard.uninstall_socket_guard()


LOCAL = Environment(local=True)


@pytest.mark.parametrize(
    ("cloud", "local"),
    [
        ("10.0.111.100", "127.0.111.100"),
        ("10.2.10.10", "127.2.10.10"),
        ("10.255.255.254", "127.255.255.254"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.1.110.10", "127.1.110.10"),
        ("198.18.0.5", "198.18.0.5"),
        ("198.19.255.1", "198.19.255.1"),
        ("::1", "::1"),
    ],
)
def test_to_local_maps_the_cloud_network_onto_loopback(cloud: str, local: str) -> None:
    assert netguard.to_local(cloud) == local


@pytest.mark.parametrize(
    "address", ["172.16.0.1", "192.168.1.1", "8.8.8.8", "198.20.0.1", "11.0.0.1", "2001:db8::1", "nope"]
)
def test_to_local_refuses_addresses_without_a_local_image(address: str) -> None:
    with pytest.raises(UnsafeDestination):
        netguard.to_local(address)


def test_unsafe_destination_is_a_configuration_error() -> None:
    assert issubclass(UnsafeDestination, ConfigurationError)


@pytest.mark.parametrize(
    ("cloud", "local"),
    [("10.2.10.0/24", "127.2.10.0/24"), ("10.0.0.0/16", "127.0.0.0/16"), ("127.2.0.0/16", "127.2.0.0/16")],
)
def test_to_local_network(cloud: str, local: str) -> None:
    assert netguard.to_local_network(cloud) == local


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "192.168.0.0/24", "10.0.0.0/7"])
def test_to_local_network_refuses_networks_outside_10_8(cidr: str) -> None:
    with pytest.raises(UnsafeDestination):
        netguard.to_local_network(cidr)


def test_local_mode_is_read_from_the_environment_or_passed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not netguard.local_mode_enabled()
    assert netguard.local_mode_enabled(LOCAL)
    assert not netguard.local_mode_enabled()  # passing it in switches nothing for anyone else
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    assert netguard.local_mode_enabled()
    assert not netguard.local_mode_enabled(Environment())


def test_outside_local_mode_addresses_pass_unchanged() -> None:
    # A Lambda in a VPC really talks to 10.x in AWS.
    assert netguard.resolve_target("10.0.111.100") == "10.0.111.100"
    netguard.check_destination("10.0.111.100")
    assert netguard.install_socket_guard() is False
    assert not netguard.socket_guard_installed()


def test_in_local_mode_resolve_target_maps_and_checks() -> None:
    assert netguard.resolve_target("10.1.111.10", LOCAL) == "127.1.111.10"
    assert netguard.resolve_target("127.0.0.1", LOCAL) == "127.0.0.1"
    with pytest.raises(UnsafeDestination):
        netguard.resolve_target("192.168.1.1", LOCAL)
    with pytest.raises(UnsafeDestination):
        netguard.check_destination("10.1.111.10", LOCAL)
    netguard.check_destination("198.18.0.1", LOCAL)


def test_in_the_local_environment_resolve_target_maps_and_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    assert netguard.resolve_target("10.1.111.10") == "127.1.111.10"
    with pytest.raises(UnsafeDestination):
        netguard.check_destination("10.1.111.10")


class Tripwire:
    """Stands under the guard in place of the kernel call for non-loopback destinations."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.reached: list[tuple[str, object]] = []
        for name in ("connect", "connect_ex", "sendto", "sendmsg"):
            monkeypatch.setattr(socket.socket, name, self._wrap(name, getattr(socket.socket, name)))

    def _wrap(self, name: str, real):
        def call(sock: socket.socket, *args: object):
            address = {"sendto": args[-1], "sendmsg": args[3] if len(args) > 3 else None}.get(name, args[0])
            self.reached.append((name, address))
            if isinstance(address, tuple) and not netguard.is_local_address(address[0]):
                pytest.fail(f"{name} to {address} reached the kernel call")
            return real(sock, *args)

        return call


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tripwire]:
    tripwire = Tripwire(monkeypatch)  # installed first: the guard wraps it
    assert netguard.install_socket_guard(LOCAL) is True
    yield tripwire
    # The guard must be removed before monkeypatch restores the real methods underneath it.
    netguard.uninstall_socket_guard()


def test_guard_is_idempotent_and_removable(guarded: Tripwire) -> None:
    wrapped = socket.socket.connect
    assert netguard.install_socket_guard(LOCAL) is True
    assert socket.socket.connect is wrapped
    netguard.uninstall_socket_guard()
    assert not netguard.socket_guard_installed()
    assert socket.socket.connect is not wrapped


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda s: s.sendto(b"x", ("10.0.0.1", 53)), id="sendto"),
        pytest.param(lambda s: s.sendto(b"x", 0, ("10.0.0.1", 53)), id="sendto-flags"),
        pytest.param(lambda s: s.sendmsg([b"x"], [], 0, ("10.0.0.1", 53)), id="sendmsg"),
        pytest.param(lambda s: s.connect(("10.0.0.1", 53)), id="connect"),
        pytest.param(lambda s: s.sendto(b"x", ("<broadcast>", 53)), id="broadcast"),
    ],
)
def test_udp_to_a_cloud_address_trips_before_sending(guarded: Tripwire, send) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(UnsafeDestination):
            send(s)
        assert s.getsockname()[1] == 0, "the kernel bound a port, so it saw the send"
    assert guarded.reached == []


@pytest.mark.parametrize("address", ["192.168.1.1", "8.8.8.8", "172.16.0.1"])
@pytest.mark.parametrize("method", ["connect", "connect_ex"])
def test_tcp_connect_to_a_forbidden_address_trips_before_sending(guarded: Tripwire, address: str, method: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        with pytest.raises(UnsafeDestination):
            getattr(s, method)((address, 80))
        assert s.getsockname()[1] == 0
        with pytest.raises(OSError):
            s.getpeername()
    assert guarded.reached == []


def test_ipv6_destinations_other_than_loopback_trip(guarded: Tripwire) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for address in ("2001:db8::1", "::ffff:10.0.0.1", "::"):
            with pytest.raises(UnsafeDestination):
                s.sendto(b"x", (address, 53, 0, 0))
    assert guarded.reached == []


def test_create_connection_is_guarded_too(guarded: Tripwire) -> None:
    with pytest.raises(UnsafeDestination):
        socket.create_connection(("10.0.0.1", 80), timeout=0.5)
    assert guarded.reached == []


def test_loopback_traffic_still_flows_and_hostnames_resolve(guarded: Tripwire) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        server.settimeout(2)
        port = server.getsockname()[1]
        client.sendto(b"by-number", ("127.0.0.1", port))
        client.sendto(b"by-name", ("localhost", port))
        assert {server.recv(64), server.recv(64)} == {b"by-number", b"by-name"}
    # The guard handed the kernel the numeric address it checked, not the name.
    assert [a for _, a in guarded.reached] == [("127.0.0.1", port), ("127.0.0.1", port)]

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(("localhost", listener.getsockname()[1]), timeout=2):
            pass


def test_bytes_hosts_are_read_as_names_not_packed_addresses(guarded: Tripwire) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(UnsafeDestination):
            s.sendto(b"x", (b"10.0.0.1", 53))
        assert s.getsockname()[1] == 0
    assert guarded.reached == []

