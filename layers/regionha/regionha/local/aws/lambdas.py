"""The template's Lambda handlers, imported from their source directories and called in this process.

Every function of a SAM template is found from its ``CodeUri`` + ``Handler`` (after the SAM transform, so
``Globals`` apply), imported lazily on its first invocation under a module name of its own (all our
handlers live in files called ``app.py``), and called with a ``LambdaContext`` lookalike that carries
what Powertools reads.

Environment variables: handlers run in threads of one process, but each sees only its own function's
resolved ``Environment.Variables`` (plus what Lambda itself sets: ``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_REGION``...), as in its own sandbox on AWS. ``os.environ`` is made invocation-aware once
(:func:`isolate_environments`): while a handler runs, reads in its thread (and in threads it starts) see
the process environment overlaid with its function's variables; another function's variables are never
visible. Outside any invocation ``os.environ`` behaves as usual.

Timeouts: a handler that runs past its function's ``Timeout`` fails the invocation as Lambda reports it
(``FunctionError`` with the payload ``{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: ...
Error: Task timed out after N.NN seconds"}``, see the Lambda developer guide, "Troubleshoot invocation
issues", timeouts), and the caller gets that answer at the deadline. A Python thread cannot be killed: the
late handler is stopped at its next AWS call (refused as from a frozen sandbox) or at its next bytecode
(an asynchronous exception), whichever comes first.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from regionha.errors import ConfigurationError
from regionha.local.aws.sam import DEFAULT_REGION, translate

if TYPE_CHECKING:
    from regionha.local.aws.provision import Stack

logger = logging.getLogger(__name__)

# A flat name: a dotted one would need a parent package in sys.modules.
_MODULE_PREFIX = "regionha_local_function"

SANDBOX_TIMEDOUT = "Sandbox.Timedout"


class SandboxStopped(BaseException):  # noqa: N818 - the name says what happened, like SystemExit
    """Raised inside a handler that outlived its timeout; BaseException so ``except Exception`` lets it pass."""


@dataclass
class ActiveInvocation:
    """The invocation a thread is running on behalf of: whose role and environment apply."""

    function: LocalFunction
    request_id: str
    environ: dict[str, str]  # the function's variables and Lambda's own, overlaid on the process's
    removed: set[str] = field(default_factory=set)
    expired: threading.Event = field(default_factory=threading.Event)


CURRENT_INVOCATION: contextvars.ContextVar[ActiveInvocation | None] = contextvars.ContextVar(
    "regionha_local_invocation", default=None)


def current_invocation() -> ActiveInvocation | None:
    """The invocation running in this thread (or in the thread that started it), None outside handlers."""
    return CURRENT_INVOCATION.get()


class _InvocationEnviron(os._Environ):  # type: ignore[name-defined,misc]
    """os.environ, overlaid in each invocation's threads with that function's own variables."""

    def __getitem__(self, key: str) -> str:
        active = CURRENT_INVOCATION.get()
        if active is not None:
            if key in active.removed:
                raise KeyError(key)
            if key in active.environ:
                return active.environ[key]
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        active = CURRENT_INVOCATION.get()
        if active is None:
            super().__setitem__(key, value)
            return
        active.removed.discard(key)
        active.environ[key] = str(value)

    def __delitem__(self, key: str) -> None:
        active = CURRENT_INVOCATION.get()
        if active is None:
            super().__delitem__(key)
            return
        if key not in self:
            raise KeyError(key)
        active.environ.pop(key, None)
        active.removed.add(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        active = CURRENT_INVOCATION.get()
        if active is None:
            yield from super().__iter__()
            return
        seen = set()
        for key in [*super().__iter__(), *active.environ]:
            if key not in seen and key not in active.removed:
                seen.add(key)
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True


_isolation_lock = threading.Lock()


def isolate_environments() -> None:
    """Make os.environ invocation-aware and let threads started by a handler inherit its invocation.

    Idempotent and process-wide (the object stays the same, so ``from os import environ`` and default
    arguments bound to it see the overlay too). Harmless outside invocations.
    """
    with _isolation_lock:
        if type(os.environ) is not _InvocationEnviron:
            os.environ.__class__ = _InvocationEnviron
        if getattr(threading.Thread.start, "_regionha_inherits", False):
            return
        original_start = threading.Thread.start

        def start(self: threading.Thread) -> None:
            # A handler's worker threads (ThreadPoolExecutor) act for the same invocation, as on AWS.
            if CURRENT_INVOCATION.get() is not None:
                context, run = contextvars.copy_context(), self.run
                self.run = lambda: context.run(run)  # type: ignore[method-assign]
            original_start(self)

        start._regionha_inherits = True  # type: ignore[attr-defined]
        threading.Thread.start = start  # type: ignore[method-assign]


def _raise_in_thread(thread: threading.Thread, exception: type[BaseException]) -> None:
    """Ask CPython to raise `exception` in `thread` at its next bytecode (no effect while it blocks in C)."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exception))


@dataclass(frozen=True)
class HandlerSpec:
    """Where one function's code is, as the template says it (before provisioning names it)."""

    logical_id: str
    code_dir: Path | None
    handler: str  # "app.lambda_handler": module path inside code_dir, then the function


class LambdaContext:
    """What the Lambda Python runtime passes as `context`, for one invocation."""

    def __init__(self, function: LocalFunction, request_id: str, invoked_function_arn: str, started: float):
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = function.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"local/[$LATEST]{request_id.replace('-', '')}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = started + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvocationOutcome:
    """The result of one handler call: a JSON payload, or the error Lambda would report for it."""

    payload: bytes
    error_type: str | None  # the exception's class name, or Lambda's Runtime.* error names
    error_message: str | None
    started: float  # time.time()
    ended: float
    timed_out: bool  # ran longer than the function's Timeout: the error is Sandbox.Timedout


@dataclass
class LocalFunction:
    """One provisioned function bound to its handler code."""

    logical_id: str
    name: str
    arn: str
    region: str
    code_dir: Path | None
    handler: str
    timeout: float  # seconds, as the template's Timeout
    memory: int
    environment: dict[str, str]
    role_arn: str | None = None  # the execution role: what its AWS calls are authorised against
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _callable: Callable[[Any, Any], Any] | None = field(default=None, repr=False)

    @property
    def module_name(self) -> str:
        # Unique per function: every handler file is called app.py.
        return f"{_MODULE_PREFIX}__{re.sub(r'[^0-9A-Za-z_]', '_', f'{self.region}_{self.name}')}"

    def load(self) -> Callable[[Any, Any], Any]:
        """Import the handler once; concurrent first invocations wait for the same import."""
        with self._lock:
            if self._callable is None:
                # Module-level code runs in the function's own sandbox: its environment, its role.
                isolate_environments()
                active = current_invocation()
                token = None
                if active is None or active.function is not self:
                    token = CURRENT_INVOCATION.set(ActiveInvocation(self, "init", self.lambda_environment()))
                try:
                    self._callable = self._import()
                finally:
                    if token is not None:
                        CURRENT_INVOCATION.reset(token)
            return self._callable

    def _import(self) -> Callable[[Any, Any], Any]:
        if self.code_dir is None:
            raise ConfigurationError(f"{self.logical_id}: code is not a local directory, nothing to run")
        module_path, _, attribute = self.handler.rpartition(".")
        if not module_path or not attribute:
            raise ConfigurationError(f"{self.logical_id}: Handler {self.handler!r} is not <module>.<function>")
        source = self.code_dir.joinpath(*module_path.split(".")).with_suffix(".py")
        spec = importlib.util.spec_from_file_location(self.module_name, source)
        if spec is None or spec.loader is None or not source.is_file():
            raise ConfigurationError(f"{self.logical_id}: handler module {source} not found")
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(self.module_name, None)
            raise
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise ConfigurationError(f"{self.logical_id}: {source} has no callable {attribute!r}")
        return handler

    def lambda_environment(self) -> dict[str, str]:
        """What this function's process sees on AWS: its variables and the ones Lambda sets itself."""
        return {
            **self.environment,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
        }

    def invoke(self, payload: bytes, *, request_id: str | None = None,
               invoked_function_arn: str | None = None) -> InvocationOutcome:
        """Run the handler on a JSON payload the way the Lambda runtime does; never raises.

        The handler runs in a thread of its own with this function's environment; past ``timeout``
        seconds the invocation fails with ``Sandbox.Timedout`` at once and the handler is stopped.
        """
        isolate_environments()
        request_id = request_id or str(uuid.uuid4())
        started_wall, started = time.time(), time.monotonic()
        active = ActiveInvocation(self, request_id, self.lambda_environment())
        result: list[tuple[bytes, str | None, str | None]] = []

        def run() -> None:
            CURRENT_INVOCATION.set(active)
            with contextlib.suppress(SandboxStopped):  # the caller already has its Sandbox.Timedout answer
                result.append(self._call(payload, request_id, invoked_function_arn, started))

        # A copy of the caller's context: a nested invocation (a handler invoking another function)
        # must not leak its identity back into the caller's thread.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,),
                                  name=f"lambda-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        duration = time.monotonic() - started
        if worker.is_alive() or not result:
            active.expired.set()
            _raise_in_thread(worker, SandboxStopped)
            logger.warning("%s timed out after %.2f s (Timeout %s s); the invocation failed with %s",
                           self.name, self.timeout, self.timeout, SANDBOX_TIMEDOUT)
            message = f"RequestId: {request_id} Error: Task timed out after {float(self.timeout):.2f} seconds"
            body = json.dumps({"errorType": SANDBOX_TIMEDOUT, "errorMessage": message}).encode()
            return InvocationOutcome(body, SANDBOX_TIMEDOUT, message, started_wall, started_wall + duration, True)
        body, error_type, error_message = result[0]
        return InvocationOutcome(body, error_type, error_message, started_wall, started_wall + duration, False)

    def _call(self, payload: bytes, request_id: str, invoked_function_arn: str | None,
              started: float) -> tuple[bytes, str | None, str | None]:
        try:
            event = json.loads(payload) if payload else {}
        except json.JSONDecodeError as e:
            return _error_body("Runtime.UnmarshalError", str(e), [])
        try:
            handler = self.load()
        except Exception as e:  # an import failure is the invocation's error, as in Lambda
            return _error_body("Runtime.ImportModuleError", f"Unable to import module {self.handler!r}: {e}",
                               _trace(e))
        context = LambdaContext(self, request_id, invoked_function_arn or self.arn, started)
        try:
            result = handler(event, context)
        except Exception as e:
            return _error_body(type(e).__name__, str(e), _trace(e))
        try:
            return json.dumps(result).encode(), None, None
        except (TypeError, ValueError) as e:
            return _error_body("Runtime.MarshalError", str(e), [])


def _trace(error: BaseException) -> list[str]:
    # Skip our own calling frame: Lambda's stackTrace starts in the handler.
    tb = error.__traceback__.tb_next if error.__traceback__ is not None else None
    return [line.rstrip("\n") for line in traceback.format_tb(tb)]


def _error_body(error_type: str, message: str, stack: list[str]) -> tuple[bytes, str, str]:
    body = json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": stack}).encode()
    return body, error_type, message


class HandlerRegistry:
    """The template's functions: their code (from the template) and, once bound, their emulated names."""

    def __init__(self, specs: Mapping[str, HandlerSpec]):
        self.specs = dict(specs)
        self._functions: dict[tuple[str, str], LocalFunction] = {}  # (region, name) ->

    @classmethod
    def from_template(cls, template_path: Path | str, *, region: str = DEFAULT_REGION,
                      parameters: Mapping[str, Any] | None = None) -> HandlerRegistry:
        translation = translate(template_path, region=region, parameters=parameters)
        specs = {}
        for logical_id, resource in translation.resources.items():
            if resource.get("Type") != "AWS::Lambda::Function":
                continue
            props = resource.get("Properties") or {}
            specs[logical_id] = HandlerSpec(logical_id, translation.local_path(props.get("Code")),
                                            props.get("Handler", ""))
        return cls(specs)

    def bind(self, stack: Stack, *, sandbox: Mapping[str, str] | None = None) -> list[LocalFunction]:
        """Attach the provisioned names/ARNs, role and resolved environment to each function's code;
        ``sandbox`` variables are set on top of each function's own (what the runtime itself sets).

        Raises ConfigurationError if the stack and the template disagree.
        """
        bound = []
        for logical_id, function in stack.functions.items():
            spec = self.specs.get(logical_id)
            if spec is None:
                raise ConfigurationError(f"{logical_id} was provisioned but is not in the registry's template")
            bound.append(LocalFunction(logical_id=logical_id, name=function.name, arn=function.arn,
                                       region=function.region, code_dir=spec.code_dir, handler=spec.handler,
                                       timeout=function.timeout, memory=function.memory,
                                       environment={**function.environment, **(sandbox or {})},
                                       role_arn=function.role_arn))
        self.add(bound)
        return bound

    def add(self, functions: Iterable[LocalFunction]) -> None:
        """Serve more functions (e.g. another stack's); each keeps its own environment."""
        self._functions.update({(f.region, f.name): f for f in functions})

    @property
    def functions(self) -> list[LocalFunction]:
        return list(self._functions.values())

    def lookup(self, function: str, region: str) -> LocalFunction | None:
        """A function by name, full ARN or partial ARN (`123456789012:function:name`), qualifier ignored."""
        name = function
        if function.startswith("arn:"):
            parts = function.split(":")
            region, name = parts[3], parts[6] if len(parts) > 6 else ""
        elif ":function:" in function:
            name = function.split(":function:", 1)[1]
        name = name.split(":", 1)[0]
        return self._functions.get((region, name))
