"""The template's Lambda handlers, imported from their source directories and called in this process.

Every function of a SAM template is found from its ``CodeUri`` + ``Handler`` (after the SAM transform, so
``Globals`` apply), imported lazily on its first invocation under a module name of its own (all our
handlers live in files called ``app.py``), and called with a ``LambdaContext`` lookalike that carries
what Powertools reads.

Environment variables: handlers run in threads of one process, so a variable cannot differ between
functions. The functions' resolved ``Environment.Variables`` are merged into one set that is applied to
``os.environ`` once; two functions giving one variable different values is a ConfigurationError, raised
when the functions are bound to a provisioned stack (before anything runs).
"""

from __future__ import annotations

import importlib.util
import json
import logging
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
from regionha.local.provision import DEFAULT_REGION, translate

if TYPE_CHECKING:
    from regionha.local.provision import Stack, StackFunction

logger = logging.getLogger(__name__)

# A flat name: a dotted one would need a parent package in sys.modules.
_MODULE_PREFIX = "regionha_local_function"


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
    timed_out: bool  # ran longer than the function's Timeout (logged, not enforced)


@dataclass
class LocalFunction:
    """One provisioned function bound to its handler code."""

    logical_id: str
    name: str
    arn: str
    region: str
    code_dir: Path | None
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
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
                self._callable = self._import()
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

    def invoke(self, payload: bytes, *, request_id: str | None = None,
               invoked_function_arn: str | None = None) -> InvocationOutcome:
        """Run the handler on a JSON payload the way the Lambda runtime does; never raises."""
        request_id = request_id or str(uuid.uuid4())
        started_wall, started = time.time(), time.monotonic()
        error_type = error_message = None
        try:
            event = json.loads(payload) if payload else {}
        except json.JSONDecodeError as e:
            body, error_type, error_message = _error_body("Runtime.UnmarshalError", str(e), [])
        else:
            try:
                handler = self.load()
            except Exception as e:  # an import failure is the invocation's error, as in Lambda
                body, error_type, error_message = _error_body(
                    "Runtime.ImportModuleError", f"Unable to import module {self.handler!r}: {e}", _trace(e))
            else:
                context = LambdaContext(self, request_id, invoked_function_arn or self.arn, started)
                try:
                    result = handler(event, context)
                except Exception as e:
                    body, error_type, error_message = _error_body(type(e).__name__, str(e), _trace(e))
                else:
                    try:
                        body = json.dumps(result).encode()
                    except (TypeError, ValueError) as e:
                        body, error_type, error_message = _error_body("Runtime.MarshalError", str(e), [])
        duration = time.monotonic() - started
        timed_out = duration > self.timeout
        if timed_out:
            # Threads cannot be killed; Lambda would have stopped this one with "Task timed out".
            logger.warning("%s ran %.1f s, longer than its Timeout of %d s", self.name, duration, self.timeout)
        return InvocationOutcome(body, error_type, error_message, started_wall, started_wall + duration, timed_out)


def _trace(error: BaseException) -> list[str]:
    # Skip our own calling frame: Lambda's stackTrace starts in the handler.
    tb = error.__traceback__.tb_next if error.__traceback__ is not None else None
    return [line.rstrip("\n") for line in traceback.format_tb(tb)]


def _error_body(error_type: str, message: str, stack: list[str]) -> tuple[bytes, str, str]:
    body = json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": stack}).encode()
    return body, error_type, message


def merged_environment(functions: Iterable[StackFunction | LocalFunction]) -> dict[str, str]:
    """The one environment all functions share in this process; conflicting values are an error."""
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    for function in functions:
        for key, value in function.environment.items():
            if key in merged and merged[key] != value:
                raise ConfigurationError(
                    f"environment variable {key} is {merged[key]!r} for {owners[key]} but {value!r} for "
                    f"{function.logical_id}; the local runtime runs all handlers in one process, so a "
                    "variable must have one value stack-wide (pass per-function values in the event)")
            merged[key] = value
            owners.setdefault(key, function.logical_id)
    return merged


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

    def bind(self, stack: Stack) -> list[LocalFunction]:
        """Attach the provisioned names/ARNs and resolved environment to each function's code.

        Raises ConfigurationError if the stack and the template disagree, or if two functions need
        different values for one environment variable.
        """
        bound = []
        for logical_id, function in stack.functions.items():
            spec = self.specs.get(logical_id)
            if spec is None:
                raise ConfigurationError(f"{logical_id} was provisioned but is not in the registry's template")
            bound.append(LocalFunction(logical_id=logical_id, name=function.name, arn=function.arn,
                                       region=function.region, code_dir=spec.code_dir, handler=spec.handler,
                                       timeout=function.timeout, memory=function.memory,
                                       environment=dict(function.environment)))
        self.add(bound)
        return bound

    def add(self, functions: Iterable[LocalFunction]) -> None:
        """Serve more functions (e.g. another stack's); refused if their environment conflicts."""
        functions = list(functions)
        merged_environment([*self._functions.values(), *functions])
        self._functions.update({(f.region, f.name): f for f in functions})

    @property
    def functions(self) -> list[LocalFunction]:
        return list(self._functions.values())

    def environment(self) -> dict[str, str]:
        return merged_environment(self._functions.values())

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
