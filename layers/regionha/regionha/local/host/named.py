"""One real BIND ``named`` process of the local runtime: its own directory, checked config, bounded start and stop.

``NamedProcess`` runs ``named -g -4 -c CONF`` (as root, without ``-u``) for one rendered named.conf:

- every instance lives in a directory of its own (a temporary one by default) holding the config, the
  pid file, the session key, the rndc key (``rndc-confgen -a -A hmac-sha256``, made only when the
  config uses it), named's working files and ``named.log`` (named's stderr: with ``-g`` it logs there);
- the config must pass ``named-checkconf`` and a network safety check (``check_stays_local``) before
  named is started: it may only ever forward to loopback (127.0.0.0/8) or 198.18.0.0/15, never recurse
  from the root hints, so no packet leaves the machine;
- ``start()`` returns once named answers a query on its listen address (any rcode), within a bound;
  ``stop()`` sends SIGTERM, then SIGKILL after a bound, and reaps. Every live instance is also stopped
  at interpreter exit, and named is started with a parent-death signal, so it dies with the Python
  process even on a SIGKILL (see ``kill_with_parent``).

named listens only on addresses that exist on an interface: for a 127.x address other than 127.0.0.1,
the caller first puts it on ``lo`` (``regionha.local.host.network.LocalNetwork``).
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.query

from regionha.errors import ConfigurationError, TransientError

if TYPE_CHECKING:
    from regionha.bind import NamedRuntime

log = logging.getLogger(__name__)

READY_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
_PROBE_TIMEOUT = 0.2
_LOCAL_NETS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("198.18.0.0/15"))
# Lists of addresses named sends to, in ``named-checkconf -p`` form: ``forwarders {\n\t1.2.3.4 port 53;\n};``
_DESTINATION_BLOCKS = r"\b(forwarders|primaries|masters|server-addresses|also-notify)\s+\{(.*?)\};"


class NamedStartError(TransientError):
    """named did not come up (it exited, or did not answer in time); the message ends with its log."""


@dataclass(frozen=True)
class NamedFiles:
    """Where one instance keeps its files; a rendered config refers to these paths."""

    directory: Path
    key_name: str

    @property
    def conf(self) -> Path:
        return self.directory / "named.conf"

    @property
    def pid_file(self) -> Path:
        return self.directory / "named.pid"

    @property
    def session_keyfile(self) -> Path:
        return self.directory / "session.key"

    @property
    def key_file(self) -> Path:
        return self.directory / "rndc.key"

    @property
    def log(self) -> Path:
        return self.directory / "named.log"


Conf = str | Callable[[NamedFiles], str]


def check_stays_local(canonical: str) -> None:
    """Refuse a config that could make named send packets off the machine.

    ``canonical`` is ``named-checkconf -p`` output. Accepted: ``recursion no``, or ``forward only`` in
    the options with no ``forward first`` anywhere (so named never iterates from the root hints), and
    every address named sends to (forwarders, primaries, server-addresses, also-notify) in 127.0.0.0/8
    or 198.18.0.0/15. Views are not looked into, so refused.
    """
    if re.search(r"^view\s", canonical, re.MULTILINE):
        raise ConfigurationError("named.conf: views are not supported by the local runtime")
    options = re.search(r"^options \{\n(.*?)^\};", canonical, re.MULTILINE | re.DOTALL)
    body = options.group(1) if options else ""
    if not re.search(r"^\s*recursion no;", body, re.MULTILINE):
        if not re.search(r"^\s*forward only;", body, re.MULTILINE):
            raise ConfigurationError(
                "named.conf: a recursive server must have 'forward only;' in its options, or it would"
                " query the internet root servers"
            )
        if re.search(r"\bforward first;", canonical):
            raise ConfigurationError("named.conf: 'forward first' falls back to the internet root servers")
    for kind, block in re.findall(_DESTINATION_BLOCKS, canonical, re.DOTALL):
        for entry in block.split(";"):
            first = entry.split()[0] if entry.split() else ""
            try:
                ip = ipaddress.ip_address(first.strip('"'))
            except ValueError:
                continue  # a named list (primaries "x";) or a key; its addresses are checked where defined
            if not any(ip in net for net in _LOCAL_NETS):
                raise ConfigurationError(f"named.conf: {kind} address {ip} is not a local address")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def checkconf(conf: Path) -> str:
    """``named-checkconf`` the file; return its canonical form (``-p``), raise ConfigurationError if bad.

    The canonical form includes included key secrets: check it, do not log it.
    """
    result = _run(["named-checkconf", "-p", str(conf)])
    if result.returncode != 0:
        message = (result.stdout + result.stderr).strip()
        raise ConfigurationError(f"named-checkconf {conf}: {message}")
    return result.stdout


class NamedProcess:
    """A ``named`` for one config, listening on ``listen`` (host, port).

    ``conf`` is the config text, or a function of the instance's ``NamedFiles`` that renders it (the
    usual way: the config names the directory, pid file and keys). ``directory`` None means a fresh
    temporary directory, removed again by ``stop()``; a given directory is kept.

    ``kill_with_parent`` starts named under ``setpriv --pdeathsig KILL``: the kernel kills named when
    the *thread* that started it ends, so start it from a thread that lives as long as the instance
    should (the main thread, usually), or pass False.
    """

    def __init__(
        self,
        name: str,
        conf: Conf,
        listen: tuple[str, int],
        *,
        directory: Path | str | None = None,
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        kill_with_parent: bool = True,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigurationError(f"named instance name {name!r}: letters, digits, '_', '.', '-' only")
        self.name = name
        self.listen = (str(listen[0]), int(listen[1]))
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.kill_with_parent = kill_with_parent
        self._conf = conf
        self._own_directory = directory is None
        self._directory = Path(directory) if directory is not None else None
        self._files: NamedFiles | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> NamedProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def files(self) -> NamedFiles:
        """The instance's paths; the directory is made on first use."""
        if self._files is None:
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix=f"regionha-named-{self.name}-"))
            self._directory.mkdir(parents=True, exist_ok=True)
            self._files = NamedFiles(self._directory, key_name=f"rndc-{self.name}")
        return self._files

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.files.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def prepare(self) -> str:
        """Write the config (and the rndc key it needs), check it; return the canonical text."""
        files = self.files
        text = self._conf(files) if callable(self._conf) else self._conf
        if ("controls" in text or str(files.key_file) in text) and not files.key_file.exists():
            result = _run(
                ["rndc-confgen", "-a", "-A", "hmac-sha256", "-k", files.key_name, "-c", str(files.key_file)]
            )
            if result.returncode != 0:
                message = (result.stdout + result.stderr).strip()
                raise ConfigurationError(f"rndc-confgen for {self.name}: {message}")
        files.conf.write_text(text)
        canonical = checkconf(files.conf)
        check_stays_local(canonical)
        return canonical

    def start(self) -> None:
        """Check the config, start named and wait (bounded) until it answers; nothing if already running."""
        with self._lock:
            if self.running:
                return
            self._reap()
            try:
                self._start_locked()
            except BaseException:
                # Whatever failed (config, exec, readiness), no process and no temporary directory stay.
                self._stop_locked()
                raise

    def _start_locked(self) -> None:
        self.prepare()
        files = self.files
        # -4: the local runtime is IPv4 loopback only; named must not touch the host's IPv6 addresses.
        command = ["named", "-g", "-4", "-c", str(files.conf)]
        if self.kill_with_parent:
            command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
        with files.log.open("ab") as log_file:
            self._process = subprocess.Popen(
                command,
                cwd=files.directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Outside our process group, a terminal's Ctrl-C reaches only us; we stop named in order.
                start_new_session=True,
            )
        _LIVE.add(self)
        log.info("named %s started (pid %d) on %s:%d", self.name, self._process.pid, *self.listen)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._process.poll() is not None:
                raise NamedStartError(
                    f"named {self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if self.answers():
                return
            if time.monotonic() >= deadline:
                raise NamedStartError(
                    f"named {self.name} did not answer on {self.listen[0]}:{self.listen[1]} within"
                    f" {self.ready_timeout}s (is the address on an interface?):\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def answers(self) -> bool:
        """Whether named answers a query on its listen address, with any rcode.

        The query is ``version.bind`` CH TXT without recursion desired: named answers it itself and
        never forwards it anywhere.
        """
        query = dns.message.make_query("version.bind.", "TXT", "CH")
        query.flags &= ~dns.flags.RD
        host, port = self.listen
        try:
            dns.query.udp(query, host, port=port, timeout=_PROBE_TIMEOUT)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def reload(self, conf: Conf | None = None) -> None:
        """Reload the (optionally new) config with SIGHUP after checking it; the cache is emptied too."""
        with self._lock:
            if not self.running:
                raise NamedStartError(f"named {self.name} is not running")
            if conf is not None:
                self._conf = conf
            self.prepare()
            assert self._process is not None
            self._process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after ``stop_timeout``, reap; remove our temporary directory. Idempotent."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("named %s ignored SIGTERM for %.1fs; killing it", self.name, self.stop_timeout)
                    process.kill()
                    process.wait(timeout=self.stop_timeout)
            log.info("named %s stopped (exit %s)", self.name, process.returncode)
            self._process = None
        _LIVE.discard(self)
        if self._own_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            self._files = None

    def _reap(self) -> None:
        # A named that died by itself: collect it before starting another.
        if self._process is not None and self._process.poll() is not None:
            self._process = None


class _LiveSet:
    """The running instances, stopped at interpreter exit so that no named outlives the runtime."""

    def __init__(self) -> None:
        self._items: set[NamedProcess] = set()
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    def add(self, item: NamedProcess) -> None:
        with self._lock:
            self._items.add(item)

    def discard(self, item: NamedProcess) -> None:
        with self._lock:
            self._items.discard(item)

    def stop_all(self) -> None:
        with self._lock:
            items = list(self._items)
        for item in items:
            try:
                item.stop()
            except Exception:  # at exit, keep going: the next instance must still be stopped
                log.exception("stopping named %s at exit failed", item.name)


_LIVE = _LiveSet()


def local_runtime(
    files: NamedFiles, *, port: int, upstream_port: int, controls: tuple[str, int] | None = None
) -> NamedRuntime:
    """A ``regionha.bind.NamedRuntime`` that puts the instance's files in its own directory.

    ``controls`` (address, port) adds an rndc channel keyed by the instance's own key.
    """
    from regionha.bind import Controls, NamedRuntime

    channel = None
    if controls is not None:
        channel = Controls(controls[0], controls[1], files.key_name, str(files.key_file))
    return NamedRuntime(
        directory=str(files.directory),
        pid_file=str(files.pid_file),
        session_keyfile=str(files.session_keyfile),
        port=port,
        upstream_port=upstream_port,
        controls=channel,
    )
