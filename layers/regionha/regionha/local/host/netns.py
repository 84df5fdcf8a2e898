"""The local runtime's own network namespace: loopback only, so no packet can leave the machine.

Each runtime makes a named namespace (``ip netns add regionha-<pid>-<n>``, so ``ip netns exec`` and
``regionha local exec`` can enter it), brings its ``lo`` up and enters it with ``setns(2)`` from the
thread that starts the runtime. A thread or child process inherits its creator's namespace, so
everything the runtime starts afterwards (the moto server and its request threads, the handlers,
named, the node servers, ``ip`` and ``tc``) lives in it, whatever a library does: the namespace has
no interface but ``lo`` and no route, so a send to any other address fails with ENETUNREACH inside
the kernel. Leaving restores the thread's previous namespace; deleting kills what is still inside
and removes the namespace, which takes every address, qdisc and filter on its ``lo`` with it.

``/etc/netns/NAME/resolv.conf`` names 127.0.0.1, where nothing of the runtime listens, so a
program run with ``ip netns exec NAME`` (which binds that file over ``/etc/resolv.conf``) cannot
even try the machine's nameserver. The runtime's own process keeps the host's ``/etc/resolv.conf``
(a mount namespace cannot be left again by a threaded process); inside the namespace that
nameserver is unreachable, and the runtime makes no lookups of names (``netguard.NoLookupServerMixin``).

Every namespace has an owner record ``/run/regionha/netns/NAME/owner.json`` (pid and process start
time); ``reap_stale()`` (run before every create) deletes namespaces whose owner is gone, so a
crashed runtime leaves nothing that breaks the next. Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from regionha.errors import ConfigurationError
from regionha.local.host.network import _state_lock as _flock

logger = logging.getLogger(__name__)

PREFIX = "regionha-"
NETNS_RUN = Path("/run/netns")  # where iproute2 keeps named namespaces (bind mounts of nsfs)
NETNS_ETC = Path("/etc/netns")  # files ``ip netns exec`` binds over /etc
STATE_DIR = Path("/run/regionha/netns")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 10
RESOLV_CONF = (
    "# regionha local runtime: this namespace holds only loopback and nothing answers here,\n"
    "# so a program run inside it cannot reach the machine's nameserver.\n"
    "nameserver 127.0.0.1\n"
    "options timeout:1 attempts:1\n"
)

_counter = itertools.count(1)
_libc: Any = None


class NamespaceError(ConfigurationError):
    """A namespace could not be made, entered or removed (not root, no iproute2, no setns)."""


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    # os.setns exists from Python 3.12; setns(2) via libc keeps 3.11 working.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns: {os.strerror(err)}")


def _ip(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NamespaceError(f"ip {' '.join(args)}: {e}") from e
    if check and done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_alive(record: dict[str, Any]) -> bool:
    try:
        pid, started = int(record["pid"]), int(record["start_time"])
    except (KeyError, TypeError, ValueError):
        return False
    return _start_time(pid) == started  # a reused pid has another start time


def _state_lock() -> contextlib.AbstractContextManager[None]:
    # The same flock discipline as the loopback owners' state (regionha.local.host.network).
    return _flock(STATE_DIR)


def namespaces() -> list[str]:
    """Names of every regionha namespace on the machine."""
    if not NETNS_RUN.is_dir():
        return []
    return sorted(p.name for p in NETNS_RUN.iterdir() if p.name.startswith(PREFIX))


def owner(name: str) -> dict[str, Any] | None:
    """The owner record of a namespace (pid, start_time, created), None if it has none."""
    try:
        return json.loads((STATE_DIR / name / "owner.json").read_text())
    except (OSError, ValueError):
        return None


def pids(name: str) -> list[int]:
    """Processes whose (main thread's) network namespace is ``name``."""
    out = _ip("netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _remove(name: str) -> None:
    """Kill what still runs inside, delete the namespace and its files. Idempotent."""
    for pid in pids(name):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if (NETNS_RUN / name).exists():
        _ip("netns", "delete", name)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    shutil.rmtree(STATE_DIR / name, ignore_errors=True)


def reap_stale() -> list[str]:
    """Delete every regionha namespace whose owner process is gone; returns their names."""
    reaped = []
    with _state_lock():
        for name in namespaces():
            record = owner(name)
            if record is not None and _owner_alive(record):
                continue
            try:
                _remove(name)
                reaped.append(name)
            except NamespaceError as e:
                logger.warning("stale namespace %s: %s", name, e)
        # Records whose namespace is already gone (deleted by hand).
        for path in STATE_DIR.iterdir() if STATE_DIR.is_dir() else ():
            if path.is_dir() and not (NETNS_RUN / path.name).exists():
                record = owner(path.name)
                if record is None or not _owner_alive(record):
                    shutil.rmtree(path, ignore_errors=True)
    if reaped:
        logger.info("removed stale network namespaces %s", reaped)
    return reaped


def current() -> str | None:
    """The regionha namespace the calling thread is in, or None."""
    try:
        here = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return None
    for name in namespaces():
        with contextlib.suppress(OSError):
            if os.stat(NETNS_RUN / name).st_ino == here:
                return name
    return None


class Namespace:
    """A named network namespace holding only loopback, owned by this process.

    ``with Namespace() as ns:`` creates it and moves the calling thread in; on exit the thread goes
    back and the namespace is deleted. ``create()``/``enter()``/``leave()``/``delete()`` do the same
    in steps. Not shared between threads: ``leave()`` must run in the thread that entered.
    """

    def __init__(self, name: str | None = None):
        self.name = name or f"{PREFIX}{os.getpid()}-{next(_counter)}"
        if not self.name.startswith(PREFIX):
            raise NamespaceError(f"namespace {self.name!r}: regionha's names start with {PREFIX!r}")
        self.directory = STATE_DIR / self.name
        self._saved_fd: int | None = None
        self._thread: int | None = None
        self.stale_reaped: list[str] = []

    def __enter__(self) -> Namespace:
        self.create()
        try:
            self.enter()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.leave()
        finally:
            self.delete()

    @property
    def exists(self) -> bool:
        return (NETNS_RUN / self.name).exists()

    def create(self) -> Namespace:
        """``ip netns add``, ``lo`` up, the owner record and the resolver file. Reaps stale ones first."""
        if os.geteuid() != 0:
            raise NamespaceError("a network namespace needs root (CAP_SYS_ADMIN)")
        if shutil.which("ip") is None:
            raise NamespaceError("iproute2's ip is not installed")
        self.stale_reaped = reap_stale()
        with _state_lock():
            self.directory.mkdir(parents=True, exist_ok=True)
            record = {"pid": os.getpid(), "start_time": _start_time(os.getpid()), "created": time.time()}
            (self.directory / "owner.json").write_text(json.dumps(record))
            etc = NETNS_ETC / self.name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(RESOLV_CONF)
            try:
                _ip("netns", "add", self.name)
                _ip("-n", self.name, "link", "set", "lo", "up")
            except NamespaceError:
                _remove(self.name)
                raise
        logger.info("network namespace %s (loopback only)", self.name)
        return self

    def enter(self) -> None:
        """Move the calling thread (and whatever it starts from now on) into the namespace."""
        if self._saved_fd is not None:
            raise NamespaceError(f"namespace {self.name}: already entered")
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(NETNS_RUN / self.name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(saved)
            raise NamespaceError(f"namespace {self.name}: {e}") from e
        try:
            _setns(target)
        except BaseException:
            os.close(saved)
            raise
        finally:
            os.close(target)
        self._saved_fd, self._thread = saved, threading.get_ident()

    def leave(self) -> None:
        """Back to the namespace the thread was in before ``enter()``. Idempotent."""
        if self._saved_fd is None:
            return
        if threading.get_ident() != self._thread:
            raise NamespaceError(f"namespace {self.name}: leave() from another thread than enter()")
        try:
            _setns(self._saved_fd)
        finally:
            os.close(self._saved_fd)
            self._saved_fd = self._thread = None

    def delete(self) -> None:
        """Kill what still runs inside, delete the namespace (its addresses, qdiscs, filters go with
        it) and its files. Idempotent; leave first."""
        with _state_lock():
            _remove(self.name)

    def exec_argv(self, command: list[str]) -> list[str]:
        """The command line that runs ``command`` inside the namespace, as a user would type it."""
        return ["ip", "netns", "exec", self.name, *command]

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, exists={self.exists})"
