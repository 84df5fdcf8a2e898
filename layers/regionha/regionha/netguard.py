"""Where packets may go: cloud addresses mapped to loopback, and a socket guard for the local runtime.

In AWS a Lambda in a VPC really talks to 10.x addresses, so outside local mode every function here
passes addresses through. In local mode (``REGIONHA_LOCAL=1`` in the invocation's own environment, see
:mod:`regionha.environment`, or an ``Environment(local=True)`` passed in) the whole
10.0.0.0/8 maps onto 127.0.0.0/8 (10.a.b.c -> 127.a.b.c), and only loopback (127.0.0.0/8, ::1) and
the benchmarking range 198.18.0.0/15 (used inside network namespaces of our own) are reachable.
``install_socket_guard()`` enforces that for every Python socket of the process, before the kernel
sees the destination, so a mapping bug becomes an ``UnsafeDestination`` instead of a packet.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from typing import Any

# LOCAL_ENV re-exported: the variable that turns local mode on.
from regionha.environment import LOCAL_ENV as LOCAL_ENV
from regionha.environment import Environment, current
from regionha.errors import ConfigurationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLOUD_NET = ipaddress.IPv4Network("10.0.0.0/8")
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
NAMESPACE_NET = ipaddress.IPv4Network("198.18.0.0/15")
LOCAL_NETS_V4 = (LOOPBACK_NET, NAMESPACE_NET)


class UnsafeDestination(ConfigurationError):
    """A destination the local runtime must never send to (anything but loopback and 198.18.0.0/15)."""


def local_mode_enabled(env: Environment | None = None) -> bool:
    """Whether ``env`` (default: the running invocation's, :func:`regionha.environment.current`) is local."""
    return (env or current()).local


def _parse(address: str | IPAddress) -> IPAddress:
    try:
        return ipaddress.ip_address(str(address).strip())
    except ValueError as e:
        raise UnsafeDestination(f"{address!r} is not an IP address") from e


def is_local_address(address: str | IPAddress) -> bool:
    """True for 127.0.0.0/8, ::1, 198.18.0.0/15 (also written as IPv4-mapped IPv6)."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return ip == ipaddress.IPv6Address("::1")
        ip = ip.ipv4_mapped
    return any(ip in net for net in LOCAL_NETS_V4)


def to_local(address: str | IPAddress) -> str:
    """10.a.b.c -> 127.a.b.c; loopback and 198.18.0.0/15 pass unchanged; anything else is refused.

    172.16.0.0/12 and 192.168.0.0/16 have no loopback image: a topology using them cannot run locally.
    """
    ip = _parse(address)
    if is_local_address(ip):
        return str(ip)
    if isinstance(ip, ipaddress.IPv4Address) and ip in CLOUD_NET:
        return str(ip + (int(LOOPBACK_NET.network_address) - int(CLOUD_NET.network_address)))
    raise UnsafeDestination(f"{ip} has no local image: only 10.0.0.0/8 maps onto loopback")


def to_local_network(cidr: str | ipaddress.IPv4Network) -> str:
    """The loopback image of a cloud network, e.g. 10.2.10.0/24 -> 127.2.10.0/24."""
    try:
        net = ipaddress.IPv4Network(str(cidr), strict=False)
    except ValueError as e:
        raise UnsafeDestination(f"{cidr!r} is not an IPv4 network") from e
    if any(net.subnet_of(n) for n in LOCAL_NETS_V4):
        return str(net)
    if not net.subnet_of(CLOUD_NET):
        raise UnsafeDestination(f"{net} has no local image: only 10.0.0.0/8 maps onto loopback")
    return f"{to_local(net.network_address)}/{net.prefixlen}"


def check_destination(address: str | IPAddress, env: Environment | None = None) -> None:
    """In local mode, refuse anything but loopback and 198.18.0.0/15; outside local mode, allow all."""
    if local_mode_enabled(env) and not is_local_address(_parse(address)):
        raise UnsafeDestination(f"refusing to send to {address}: local mode allows only 127.0.0.0/8 and 198.18.0.0/15")


def resolve_target(address: str | IPAddress, env: Environment | None = None) -> str:
    """The address to actually talk to: the cloud address in AWS, its loopback image in local mode."""
    env = env or current()
    if not env.local:
        return str(address)
    local = to_local(address)
    check_destination(local, env)
    return local


# --- the socket guard -------------------------------------------------------------------------------

_GUARDED = ("connect", "connect_ex", "sendto", "sendmsg")
_MISSING = object()
_saved: dict[str, Any] = {}
_guard_lock = threading.Lock()


def _numeric(sock: socket.socket, address: Any) -> Any:
    """Resolve a hostname the way the kernel call would, check it, and return the numeric address.

    The checked address is the one handed to the kernel, so a resolver answer cannot change between
    the check and the send.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return address
    host, port, *rest = address
    if isinstance(host, bytes | bytearray):
        # ipaddress would read 4 or 16 bytes as a packed address; the kernel call reads a name.
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError as e:
            raise UnsafeDestination(f"socket guard: unreadable host {host!r}") from e
    try:
        ip = ipaddress.ip_address(host)
    except (ValueError, TypeError):
        if host in ("", "<broadcast>"):
            # The kernel reads these as INADDR_ANY / INADDR_BROADCAST: not a loopback destination.
            raise UnsafeDestination(f"socket guard: refusing {host!r} as a destination in local mode") from None
        infos = socket.getaddrinfo(host, port, sock.family, sock.type)
        if not infos:
            raise UnsafeDestination(f"{host!r} does not resolve") from None
        resolved = infos[0][4]
        ip = ipaddress.ip_address(resolved[0])
        host = resolved[0]
    if not is_local_address(ip):
        raise UnsafeDestination(f"socket guard: refusing to send to {ip} (port {port}) in local mode")
    return (host, port, *rest)


def _guard(name: str, original: Any) -> Any:
    if name in ("connect", "connect_ex"):

        def guarded(self: socket.socket, address: Any) -> Any:
            return original(self, _numeric(self, address))

    elif name == "sendto":

        def guarded(self: socket.socket, *args: Any) -> Any:
            # sendto(data, address) or sendto(data, flags, address)
            if len(args) in (2, 3):
                args = (*args[:-1], _numeric(self, args[-1]))
            return original(self, *args)

    else:

        def guarded(self: socket.socket, *args: Any) -> Any:
            # sendmsg(buffers[, ancdata[, flags[, address]]])
            if len(args) >= 4 and args[3] is not None:
                args = (*args[:3], _numeric(self, args[3]), *args[4:])
            return original(self, *args)

    guarded.__name__ = name
    guarded.__qualname__ = f"socket.{name}"
    return guarded


def install_socket_guard(env: Environment | None = None) -> bool:
    """Wrap socket.socket's connect, connect_ex, sendto and sendmsg so that, in local mode, any
    AF_INET/AF_INET6 destination outside loopback and 198.18.0.0/15 raises ``UnsafeDestination``.

    Idempotent. Outside local mode (``env``, default: the process's environment now) it does nothing
    and returns False (a Lambda in AWS must reach 10.x).
    Covers every socket made through ``socket.socket`` (urllib3, dnspython, asyncio, ssl); a child
    process is not covered: give it local addresses only.
    """
    if not local_mode_enabled(env):
        return False
    with _guard_lock:
        if _saved:
            return True
        for name in _GUARDED:
            if not hasattr(socket.socket, name):
                continue
            _saved[name] = socket.socket.__dict__.get(name, _MISSING)
            setattr(socket.socket, name, _guard(name, getattr(socket.socket, name)))
    return True


def uninstall_socket_guard() -> None:
    with _guard_lock:
        for name, previous in _saved.items():
            if previous is _MISSING:
                delattr(socket.socket, name)
            else:
                setattr(socket.socket, name, previous)
        _saved.clear()


def socket_guard_installed() -> bool:
    return bool(_saved)


# --- servers that never look names up ---------------------------------------------------------------


class NoLookupServerMixin:
    """For ``http.server.HTTPServer`` subclasses (werkzeug's too): bind without ``socket.getfqdn()``.

    ``HTTPServer.server_bind`` sets ``server_name = socket.getfqdn(host)``, a reverse lookup that
    glibc sends to the nameserver of ``/etc/resolv.conf`` for any address ``/etc/hosts`` does not
    know (127.0.110.10 included), inside the C library where the socket guard cannot see it. The
    literal address is all a loopback server needs as its name. Put it first in the bases.
    """

    server_address: Any

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # type: ignore[arg-type]
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port
