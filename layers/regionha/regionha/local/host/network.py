"""Loopback addresses and silent-drop cuts on ``lo``, with iproute2's ``ip`` and ``tc`` (needs root).

A cut must look like a lost VPN or a security group that says no: the sender hears nothing at all, no
ICMP, no RST. Pausing a server is not that (the kernel still queues its datagrams and completes TCP
handshakes), so the runtime drops the packets on their way into ``lo`` instead:

- the root qdisc of ``lo`` becomes an HTB (handle ``7268:``, the marker of everything we own there)
  whose unclassified traffic takes HTB's unshaped direct queue, so loopback works as before;
- one class ``7268:1`` ends in a ``pfifo limit 0``, which drops every packet it is given;
- one u32 filter per blocked flow (its own ``pref``) sends matching packets into that class.

This kernel has no ``act_gact`` (so no ``action drop``), no flower and no nftables/iptables tools;
HTB, pfifo and u32 are built in. Dropping only the client->server direction is enough, for TCP too:
the SYN never arrives, and on an established connection the client's segments vanish.

Several ``LocalNetwork`` owners (processes, or objects of one process) may share ``lo``: each records
what it made in a small state file under ``/run/regionha/localnet`` and every change happens under an
``flock`` there, so filter priorities are never handed out twice. ``cleanup_stale()`` removes what
owners that died (a crash, a kill -9) left behind; the last owner out removes the qdisc, which puts
``lo`` back to its default ``noqueue``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from regionha.errors import ConfigurationError
from regionha.netguard import LOCAL_NETS_V4, LOOPBACK_NET

logger = logging.getLogger(__name__)

DEV = "lo"
QDISC = "7268:"  # "rh"; the handle is the marker of our qdisc, its class and filters
BLACKHOLE_CLASS = "7268:1"
BLACKHOLE_QDISC = "7269:"
ADDRESS_LABEL = "lo:rha"  # the marker of loopback addresses we added
STATE_DIR = Path("/run/regionha/localnet")
FIRST_PREF = 100
COMMAND_TIMEOUT = 10

Proto = Literal["udp", "tcp", "any"]
_IP_PROTOCOL = {"udp": 17, "tcp": 6}


class NetworkCommandError(ConfigurationError):
    """``ip`` or ``tc`` refused a change (not root, a foreign qdisc on lo, ...)."""


@dataclass(frozen=True)
class Flow:
    """Packets from ``src_net`` to ``dst`` (optionally one protocol and destination port), all local."""

    src_net: str
    dst: str
    proto: Proto = "any"
    dport: int | None = None

    def __post_init__(self) -> None:
        try:
            src = ipaddress.IPv4Network(self.src_net, strict=False)
            dst = ipaddress.IPv4Address(self.dst)
        except ValueError as e:
            raise ConfigurationError(f"flow {self}: {e}") from e
        if not any(src.subnet_of(n) for n in LOCAL_NETS_V4) or not any(dst in n for n in LOCAL_NETS_V4):
            raise ConfigurationError(f"flow {self}: only 127.0.0.0/8 and 198.18.0.0/15 can be cut locally")
        if self.proto not in ("udp", "tcp", "any"):
            raise ConfigurationError(f"flow {self}: proto must be udp, tcp or any")
        if self.dport is not None and not 1 <= self.dport <= 65535:
            raise ConfigurationError(f"flow {self}: dport out of range")
        # Normalized, so that equal flows compare equal in set differences.
        object.__setattr__(self, "src_net", str(src))
        object.__setattr__(self, "dst", str(dst))

    def u32_matches(self) -> list[list[str]]:
        """One u32 match list per filter; a port without a protocol means both TCP and UDP."""
        base = ["match", "ip", "src", self.src_net, "match", "ip", "dst", f"{self.dst}/32"]
        if self.proto == "any" and self.dport is None:
            return [base]
        protos = ["udp", "tcp"] if self.proto == "any" else [self.proto]
        out = []
        for proto in protos:
            m = [*base, "match", "ip", "protocol", str(_IP_PROTOCOL[proto]), "0xff"]
            if self.dport is not None:
                # u32's "ip dport" assumes a 20-byte IP header: loopback traffic carries no IP options.
                m += ["match", "ip", "dport", str(self.dport), "0xffff"]
            out.append(m)
        return out

    def __str__(self) -> str:
        port = f":{self.dport}" if self.dport is not None else ""
        return f"{self.proto} {self.src_net} -> {self.dst}{port}"


def _run(args: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkCommandError(f"{' '.join(args)}: {e}") from e
    if done.returncode != 0:
        raise NetworkCommandError(f"{' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _tc_batch(lines: list[str]) -> None:
    if lines:
        _run(["tc", "-batch", "-"], stdin="\n".join(lines) + "\n")


def lo_addresses() -> dict[str, str]:
    """IPv4 addresses on lo and their labels."""
    out = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", DEV]) or "[]")
    return {a["local"]: a.get("label", DEV) for link in out for a in link.get("addr_info", [])}


def _root_qdisc() -> dict[str, Any] | None:
    for q in json.loads(_run(["tc", "-j", "qdisc", "show", "dev", DEV]) or "[]"):
        if q.get("root"):
            return q
    return None


def _our_qdisc_present() -> bool:
    q = _root_qdisc()
    return q is not None and q.get("kind") == "htb" and q.get("handle") == QDISC


def filter_prefs() -> set[int]:
    """Priorities of the filters under our qdisc (empty when it is absent)."""
    if not _our_qdisc_present():
        return set()
    return {f["pref"] for f in json.loads(_run(["tc", "-j", "filter", "show", "dev", DEV, "parent", QDISC]) or "[]")}


def _ensure_qdisc() -> None:
    q = _root_qdisc()
    if q is not None and q.get("kind") == "htb" and q.get("handle") == QDISC:
        return
    if q is not None and q.get("kind") != "noqueue":
        raise NetworkCommandError(f"lo has a root qdisc regionha did not make ({q.get('kind')} {q.get('handle')})")
    try:
        _tc_batch(
            [
                # default 0: unclassified packets take HTB's direct queue, which is never shaped.
                f"qdisc add dev {DEV} root handle {QDISC} htb default 0 direct_qlen 10000",
                f"class add dev {DEV} parent {QDISC} classid {BLACKHOLE_CLASS} htb rate 8bit quantum 1514",
                f"qdisc add dev {DEV} parent {BLACKHOLE_CLASS} handle {BLACKHOLE_QDISC} pfifo limit 0",
            ]
        )
    except NetworkCommandError:
        _delete_qdisc()
        raise


def _delete_qdisc() -> bool:
    if not _our_qdisc_present():
        return False
    _run(["tc", "qdisc", "del", "dev", DEV, "root", "handle", QDISC])
    return True


def _delete_prefs(prefs: Iterable[int]) -> None:
    present = filter_prefs()
    for pref in sorted(set(prefs) & present):
        _run(["tc", "filter", "del", "dev", DEV, "parent", QDISC, "pref", str(pref), "protocol", "ip", "u32"])


def _delete_addresses(addresses: Iterable[str]) -> list[str]:
    """Delete those of ``addresses`` that still carry our label; returns the ones deleted."""
    present = lo_addresses()
    deleted = []
    for ip in addresses:
        if present.get(ip) == ADDRESS_LABEL:
            _run(["ip", "addr", "del", f"{ip}/32", "dev", DEV])
            deleted.append(ip)
    return deleted


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _owner_files(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("*.json"))


def _cleanup_stale_locked(state_dir: Path) -> dict[str, Any]:
    removed: dict[str, Any] = {"addresses": [], "filters": 0, "qdisc": False}
    for path in _owner_files(state_dir):
        try:
            state = json.loads(path.read_text())
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            state, pid = {}, -1
        if pid > 0 and _pid_alive(pid):
            continue
        prefs = state.get("prefs", [])
        _delete_prefs(prefs)
        removed["filters"] += len(prefs)
        removed["addresses"] += _delete_addresses(state.get("addresses", []))
        path.unlink(missing_ok=True)
    if not _owner_files(state_dir):
        # No owner is left: anything carrying our markers is debris (even if a state file was lost).
        removed["addresses"] += _delete_addresses(
            [ip for ip, label in lo_addresses().items() if label == ADDRESS_LABEL]
        )
        removed["qdisc"] = _delete_qdisc()
    if removed["addresses"] or removed["filters"] or removed["qdisc"]:
        logger.info("removed stale local network objects: %s", removed)
    return removed


def cleanup_stale(state_dir: Path | str = STATE_DIR) -> dict[str, Any]:
    """Remove the addresses and filters of owners that are gone; with no owner left, also the qdisc
    and every address labelled ``lo:rha``. Returns what it removed."""
    state_dir = Path(state_dir)
    with _state_lock(state_dir):
        return _cleanup_stale_locked(state_dir)


class LocalNetwork:
    """The loopback addresses and silent-drop cuts one runtime owns. Close it (or use ``with``)."""

    def __init__(self, state_dir: Path | str = STATE_DIR):
        self._state_dir = Path(state_dir)
        self._state_file = self._state_dir / f"{os.getpid()}-{id(self):x}.json"
        self._lock = threading.Lock()
        self._addresses: list[str] = []
        self._filters: dict[Flow, list[int]] = {}
        self._swept = False

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, _state_lock(self._state_dir):
            if not self._swept:
                _cleanup_stale_locked(self._state_dir)
                self._swept = True
            yield

    def _save(self) -> None:
        if not self._addresses and not self._filters:
            self._state_file.unlink(missing_ok=True)
            return
        state = {"pid": os.getpid(), "addresses": self._addresses, "prefs": self._prefs()}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_file)

    def _prefs(self) -> list[int]:
        return sorted(p for prefs in self._filters.values() for p in prefs)

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    @property
    def blocked(self) -> frozenset[Flow]:
        return frozenset(self._filters)

    def add_address(self, ip: str) -> bool:
        """Put ``ip`` (in 127.0.0.0/8) on lo as a /32. False when it is already there (then it is not
        ours and ``close()`` leaves it alone)."""
        address = ipaddress.IPv4Address(str(ip))
        if address not in LOOPBACK_NET:
            raise ConfigurationError(f"{address}: only 127.0.0.0/8 addresses go on lo")
        with self._locked():
            if str(address) in lo_addresses():
                return False
            # Recorded before the change, so that a crash in between still leaves a trace to clean.
            self._addresses.append(str(address))
            self._save()
            try:
                _run(["ip", "addr", "add", f"{address}/32", "dev", DEV, "label", ADDRESS_LABEL])
            except NetworkCommandError:
                self._addresses.remove(str(address))
                self._save()
                raise
            return True

    def remove_address(self, ip: str) -> None:
        with self._locked():
            if str(ip) in self._addresses:
                _delete_addresses([str(ip)])
                self._addresses.remove(str(ip))
                self._save()

    def set_blocked(self, flows: Iterable[Flow]) -> dict[str, list[str]]:
        """Silently drop exactly ``flows``; everything else passes. Only the difference to the flows
        blocked now is applied (new cuts first, then the lifted ones), so re-applying is cheap."""
        wanted = frozenset(flows)
        with self._locked():
            add = sorted(wanted - self._filters.keys(), key=str)
            lift = sorted(self._filters.keys() - wanted, key=str)
            if add:
                self._add_filters(add)
            if lift:
                _delete_prefs(p for f in lift for p in self._filters[f])
                for f in lift:
                    del self._filters[f]
                self._save()
        if add or lift:
            logger.info("cuts: +%s -%s", [str(f) for f in add], [str(f) for f in lift])
        return {"added": [str(f) for f in add], "lifted": [str(f) for f in lift]}

    def _add_filters(self, flows: list[Flow]) -> None:
        _ensure_qdisc()
        used = filter_prefs() | {p for prefs in self._filters.values() for p in prefs}
        free = (p for p in range(FIRST_PREF, 0xFFFF) if p not in used)
        lines = []
        for flow in flows:
            prefs = []
            for matches in flow.u32_matches():
                pref = next(free)
                prefs.append(pref)
                lines.append(
                    f"filter add dev {DEV} parent {QDISC} pref {pref} protocol ip u32 "
                    f"{' '.join(matches)} classid {BLACKHOLE_CLASS}"
                )
            self._filters[flow] = prefs
        self._save()
        try:
            _tc_batch(lines)
        except NetworkCommandError:
            # tc -batch stops at the first failure: keep what was made, undo half-made flows.
            present = filter_prefs()
            for flow in flows:
                if not set(self._filters[flow]) <= present:
                    _delete_prefs(self._filters.pop(flow))
            self._save()
            raise

    def close(self) -> None:
        """Remove every address and filter this object made; the last owner also removes the qdisc.
        Idempotent."""
        with self._locked():
            _delete_prefs(self._prefs())
            self._filters.clear()
            _delete_addresses(self._addresses)
            self._addresses.clear()
            self._save()
            _cleanup_stale_locked(self._state_dir)
