"""The emulated AWS of the local runtime: a moto server in this process that runs our real Lambda handlers.

moto's WSGI app (built as moto's own ``ThreadedMotoServer`` builds it) serves every AWS API on one
loopback port, with its Step Functions ASL interpreter switched on. A middleware in front of it answers
Lambda ``Invoke`` by calling the template's handler in this process (moto alone would need Docker), so
a state machine execution chains our real functions, and their errors reach ``Retry``/``Catch`` under
their exception class names, as on AWS.

Process-wide on purpose, while started: ``MOTO_PORT`` (the ASL interpreter's own clients call
``http://localhost:$MOTO_PORT``), ``AWS_ENDPOINT_URL`` and fake credentials (the handlers' boto3 calls),
and moto's user config. Each handler sees only its own function's environment
(regionha.local.aws.lambdas) and may call only what its role allows (regionha.local.aws.iam). Hence one
LocalAws per process at a time, and never together with ``mock_aws``. ``stop()`` restores all of it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer
from werkzeug.wrappers import Request, Response

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.alarm_rules import WarmUp
from regionha.local.aws.iam import LocalIam
from regionha.local.aws.lambdas import HandlerRegistry, InvocationOutcome, LocalFunction
from regionha.local.aws.models import share_botocore_models
from regionha.local.aws.provision import DEFAULT_REGION, Stack, provision
from regionha.netguard import NoLookupServerMixin

logger = logging.getLogger(__name__)

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing"}
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations/?$")
_CREDENTIAL_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/lambda/")
_MOTO_CONFIG = {
    # Separate stores for the two modes: this must be on before the first state machine is created.
    "stepfunctions": {"execute_state_machine": True},
    # Our middleware runs the code; moto must never try Docker.
    "lambda": {"use_docker": False},
}
_active_lock = threading.Lock()
_active: LocalAws | None = None


@dataclass(frozen=True)
class Invocation:
    """One Lambda invocation, as the local runtime's reports and tests see it."""

    function: str  # function name
    region: str
    request_id: str
    invocation_type: str  # RequestResponse | Event
    started: float  # time.time()
    ended: float
    error_type: str | None
    error_message: str | None
    timed_out: bool


def _json_error(status: int, error_type: str, message: str) -> Response:
    return Response(json.dumps({"Type": "User", "message": message}), status=status,
                    headers={"x-amzn-ErrorType": error_type}, content_type="application/json")


class _Server(NoLookupServerMixin, ThreadedWSGIServer):
    """werkzeug's threaded server (what ``make_server(threaded=True)`` builds), binding without a
    reverse lookup of its address."""


def _request_handler() -> type:
    """moto's request handler, logging each request at debug level instead of printing it to stderr."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietMotoRequestHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            logger.debug("%s %s -> %s", self.command, self.path, code)

    return QuietMotoRequestHandler


class LocalAws:
    """moto on 127.0.0.1 (a free port by default), with Lambda Invoke answered by our handlers.

    Typical use::

        with LocalAws() as aws:
            stack = aws.deploy("template.yaml", stack_name="regionha")
            sfn = aws.clients().client("stepfunctions", stack.region)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, event_join_timeout: float = 30.0):
        if not host.startswith("127."):
            raise ConfigurationError(f"the emulated AWS listens on loopback only, not {host}")
        self._host = host
        self._requested_port = port
        self._event_join_timeout = event_join_timeout
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._config_patch: Any = None
        self._saved_environ: dict[str, str | None] = {}
        self._registry = HandlerRegistry({})
        self.iam = LocalIam()
        self._lock = threading.Lock()
        self._invocations: list[Invocation] = []
        # Names of functions whose invocation has begun: a nested one (a Lambda invoking another) can
        # publish and move state before its record lands, so "was it invoked" is answered from here.
        self._started: set[str] = set()
        self._event_threads: list[threading.Thread] = []
        # Holds composite alarms (moto has no PutCompositeAlarm): the runtime sets its AlarmEvaluator.
        self.composite_alarms: Any = None

    # ---- lifecycle

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalAws is not started")
        return self._server.server_port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> LocalAws:
        """Start with empty moto backends; raises if another LocalAws of this process is running."""
        global _active
        from moto.core.config import default_user_config
        from moto.moto_api._internal.models import moto_api_backend
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        with _active_lock:
            if _active is not None:
                raise RuntimeError("a LocalAws is already running in this process (moto's state is global)")
            _active = self
        share_botocore_models()  # the server and the handlers of this process create clients all the time
        try:
            self._config_patch = mock.patch.dict(default_user_config, _MOTO_CONFIG)
            self._config_patch.start()
            moto_api_backend.reset()
            app = _InvokeMiddleware(_CompositeAlarmMiddleware(DomainDispatcherApplication(create_backend_app), self),
                                    self)
            self._server = _Server(self._host, self._requested_port, app, _request_handler())
            self._set_environ({
                "MOTO_PORT": str(self._server.server_port),
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_EC2_METADATA_DISABLED": "true",
                # Each region's EC2 backend would parse moto's thousands of default AMIs (about a
                # second of CPU per region); the build runs the AMI its SSM public parameter names.
                "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
                **FAKE_CREDENTIALS,
            })
            self._thread = threading.Thread(target=self._server.serve_forever, name="local-aws", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        logger.info("emulated AWS listening on %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stop serving, free the port, restore the environment and moto's config. Idempotent."""
        global _active
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            if thread is not None:
                server.shutdown()
                thread.join()
            server.server_close()
        with self._lock:
            pending, self._event_threads = self._event_threads, []
        for event_thread in pending:
            event_thread.join(self._event_join_timeout)
        self._restore_environ()
        self.iam.uninstall()
        if self._config_patch is not None:
            self._config_patch.stop()
            self._config_patch = None
        with _active_lock:
            if _active is self:
                _active = None

    def _set_environ(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._saved_environ.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_environ(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = {}

    # ---- clients, stacks, functions

    def clients(self) -> Clients:
        """A Clients factory on this endpoint with fake credentials (independent of the environment)."""
        session = boto3.session.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"])
        return Clients(session=session, endpoint_url=self.endpoint_url)

    def deploy(self, template_path: Path | str, *, stack_name: str = "regionha", region: str = DEFAULT_REGION,
               parameters: Mapping[str, Any] | None = None, sandbox: Mapping[str, str] | None = None) -> Stack:
        """Provision a SAM template into this emulation and serve its functions. Idempotent.

        ``sandbox``: variables set in every function's environment on top of the template's, the way
        Lambda sets ``AWS_REGION`` (the local runtime's ``REGIONHA_LOCAL``, ``REGIONHA_CLOCK``...)."""
        stack = provision(self.clients(), template_path, stack_name=stack_name, region=region,
                          parameters=parameters)
        registry = HandlerRegistry.from_template(template_path, region=region, parameters=parameters)
        functions = registry.bind(stack, sandbox=sandbox)
        # Each handler's calls are authorised against its own role, as expanded from the template.
        self.iam.load_roles(self.clients(), [f.role_arn for f in functions if f.role_arn], region)
        self.iam.install()
        self.register(functions)
        return stack

    def register(self, functions: Iterable[LocalFunction]) -> None:
        """Serve these functions' invocations, each with its own environment and role."""
        with self._lock:
            self._registry.add(functions)

    def function(self, name_or_arn: str, region: str = DEFAULT_REGION) -> LocalFunction | None:
        return self._registry.lookup(name_or_arn, region)

    @property
    def invocations(self) -> list[Invocation]:
        with self._lock:
            return list(self._invocations)

    def invoked_functions(self) -> set[str]:
        """The names of the functions invoked so far, running or done (``invocations`` lists only the
        finished ones)."""
        with self._lock:
            return set(self._started)

    def wait_for_events(self, timeout: float = 30.0) -> bool:
        """Wait for running Event (asynchronous) invocations; True if none is left running."""
        with self._lock:
            pending = list(self._event_threads)
        for event_thread in pending:
            event_thread.join(timeout)
        return not any(t.is_alive() for t in pending)

    # ---- invocation

    def endpoint_problem(self) -> str | None:
        """Why a handler's default boto3 client would not reach this server, or None if it would."""
        if self._server is None:
            return "LocalAws is not running"
        if os.environ.get("AWS_ENDPOINT_URL") != self.endpoint_url:
            return f"AWS_ENDPOINT_URL is {os.environ.get('AWS_ENDPOINT_URL')!r}, not {self.endpoint_url}"
        if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
            return "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is set"
        for key, value in os.environ.items():
            if key.startswith("AWS_ENDPOINT_URL_") and value != self.endpoint_url:
                return f"{key} is {value!r}"
        return None

    def invoke(self, function: LocalFunction, payload: bytes, invocation_type: str,
               invoked_arn: str | None = None) -> Response:
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
        problem = self.endpoint_problem()
        if problem is not None:
            # Network safety: a handler must never reach a real AWS endpoint; refuse to run it at all.
            logger.error("not running %s: %s", function.name, problem)
            return _json_error(500, "ServiceException", f"local runtime refused to run {function.name}: {problem}")
        if invocation_type == "DryRun":
            return Response(status=204, headers=headers)
        if invocation_type == "Event":
            thread = threading.Thread(target=self._run, args=(function, payload, "Event", request_id, invoked_arn),
                                      name=f"lambda-event-{function.name}", daemon=True)
            with self._lock:
                self._event_threads = [t for t in self._event_threads if t.is_alive()] + [thread]
            thread.start()
            return Response(status=202, headers=headers)
        if invocation_type != "RequestResponse":
            return _json_error(400, "InvalidParameterValueException", f"unknown InvocationType {invocation_type}")
        outcome = self._run(function, payload, invocation_type, request_id, invoked_arn)
        if outcome.error_type is not None:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return Response(outcome.payload, status=200, headers=headers, content_type="application/json")

    def _run(self, function: LocalFunction, payload: bytes, invocation_type: str, request_id: str,
             invoked_arn: str | None) -> InvocationOutcome:
        with self._lock:
            self._started.add(function.name)
        outcome = function.invoke(payload, request_id=request_id, invoked_function_arn=invoked_arn)
        record = Invocation(function.name, function.region, request_id, invocation_type, outcome.started,
                            outcome.ended, outcome.error_type, outcome.error_message, outcome.timed_out)
        with self._lock:
            self._invocations.append(record)
        if outcome.error_type is not None:
            # A RequestResponse error is the caller's to handle (Retry/Catch); an Event error has no caller.
            level = logging.ERROR if invocation_type == "Event" else logging.INFO
            logger.log(level, "%s %s invocation %s failed: %s: %s", function.name, invocation_type, request_id,
                       outcome.error_type, outcome.error_message)
        return outcome


class _InvokeMiddleware:
    """Answers `POST /2015-03-31/functions/{name}/invocations`; everything else goes to moto."""

    def __init__(self, app: Any, aws: LocalAws):
        self._app = app
        self._aws = aws

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        match = _INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        if environ.get("REQUEST_METHOD") != "POST" or match is None:
            return self._app(environ, start_response)
        request = Request(environ)
        name = match.group("function")
        credential = _CREDENTIAL_REGION.search(request.headers.get("Authorization", ""))
        region = credential.group("region") if credential else DEFAULT_REGION
        function = self._aws.function(name, region)
        if function is None:
            # Never fall through to moto: without Docker it would answer with a canned echo.
            response = _json_error(404, "ResourceNotFoundException",
                                   f"Function not found: {name} (no local handler in {region})")
        else:
            invoked_arn = name if name.startswith("arn:") else None
            invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            response = self._aws.invoke(function, request.get_data(), invocation_type, invoked_arn)
        return response(environ, start_response)


_CLOUDWATCH_TARGET = "GraniteServiceVersion20100801."


def _cloudwatch_error(code: str, message: str) -> Response:
    """A CloudWatch error in its JSON protocol (query compatible): the code in ``__type`` and in
    ``x-amzn-query-error``, where botocore reads it."""
    return Response(json.dumps({"__type": code, "message": message}), status=400,
                    headers={"x-amzn-query-error": f"{code};Sender"}, content_type="application/x-amz-json-1.0")
_ALARM_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/monitoring/")


class _CompositeAlarmMiddleware:
    """CloudWatch alarms through the same API where moto 5.2.5 falls short: composite alarms (it has no
    PutCompositeAlarm) and metric alarms' warm-up (it ignores ``WarmUpConfiguration``).

    PutCompositeAlarm defines the alarm in the runtime's evaluator; PutMetricAlarm's warm-up is checked
    (a malformed one is CloudWatch's ValidationError) and, once moto has stored the alarm, recorded there;
    DeleteAlarms deletes its composites there (as CloudWatch: one composite per call), forgets the
    metric alarms' warm-ups, and passes the other names on to moto; DescribeAlarms gets each metric
    alarm's ``WarmUpConfiguration`` and ``EvaluationState`` added, and, asked for composite alarms, the
    evaluator's added to moto's answer, filtered by AlarmNames or AlarmNamePrefix. Only the JSON protocol
    boto3 uses (``X-Amz-Target``) is handled; the query protocol goes to moto unchanged.
    """

    def __init__(self, app: Any, aws: LocalAws):
        self._app = app
        self._aws = aws

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target[len(_CLOUDWATCH_TARGET):] if target.startswith(_CLOUDWATCH_TARGET) else None
        store = self._aws.composite_alarms
        if operation not in ("PutCompositeAlarm", "PutMetricAlarm", "DeleteAlarms", "DescribeAlarms") or (
                store is None and operation != "PutCompositeAlarm"):
            return self._app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        params = json.loads(body or b"{}")
        credential = _ALARM_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = credential.group("region") if credential else DEFAULT_REGION
        if operation == "PutCompositeAlarm":
            if store is None:
                response = _cloudwatch_error("InvalidAction", "composite alarms need the local runtime's evaluator")
            else:
                try:
                    store.put_composite_alarm(region, **params)
                    response = Response(b"{}", status=200, content_type="application/x-amz-json-1.0")
                except (ConfigurationError, KeyError) as e:
                    response = _cloudwatch_error("ValidationError", str(e))
            return response(environ, start_response)
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        if operation == "PutMetricAlarm":
            return self._put_metric_alarm(environ, start_response, store, region, params)
        if operation == "DeleteAlarms":
            try:
                rest = store.delete_composite_alarms(region, params.get("AlarmNames") or [])
            except ConfigurationError as e:
                return _cloudwatch_error("ValidationError", str(e))(environ, start_response)
            store.delete_metric_alarms(region, rest)
            if not rest:
                return Response(b"{}", status=200, content_type="application/x-amz-json-1.0")(environ, start_response)
            body = json.dumps({**params, "AlarmNames": rest}).encode()
            environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
            return self._app(environ, start_response)
        return self._describe(environ, start_response, store, region, params)

    def _moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda _: None

        raw = b"".join(self._app(environ, capture))
        return captured.get("status", "500 INTERNAL SERVER ERROR"), captured.get("headers", []), raw

    def _put_metric_alarm(self, environ: dict[str, Any], start_response: Any, store: Any, region: str,
                          params: dict[str, Any]) -> Iterable[bytes]:
        try:
            WarmUp.from_api(params.get("WarmUpConfiguration"))
        except ConfigurationError as e:
            return _cloudwatch_error("ValidationError", str(e))(environ, start_response)
        status, headers, raw = self._moto(environ)
        if status.startswith("200"):
            store.put_metric_alarm(region, **params)
        start_response(status, headers)
        return [raw]

    def _describe(self, environ: dict[str, Any], start_response: Any, store: Any, region: str,
                  params: dict[str, Any]) -> Iterable[bytes]:
        status, headers, raw = self._moto(environ)
        if not status.startswith("200"):
            start_response(status, headers)
            return [raw]
        answer = json.loads(raw or b"{}")
        answer["MetricAlarms"] = [{**a, **store.metric_alarm_extras(region, a["AlarmName"])}
                                  for a in answer.get("MetricAlarms", [])]
        if "CompositeAlarm" in (params.get("AlarmTypes") or []):
            names, prefix = params.get("AlarmNames"), params.get("AlarmNamePrefix")
            composites = [
                {k: (v.timestamp() if hasattr(v, "timestamp") else v) for k, v in c.items()}
                for c in store.describe_composite_alarms(region)
                if (not names or c["AlarmName"] in names) and (not prefix or c["AlarmName"].startswith(prefix))
                and (not params.get("StateValue") or c["StateValue"] == params["StateValue"])
            ]
            answer["CompositeAlarms"] = [*answer.get("CompositeAlarms", []), *composites]
        out = json.dumps(answer).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(out)))])
        return [out]
