"""``regionha drill start|report`` against Step Functions executed by moto's ASL interpreter.

The state machines here are scaffolding for the command only: Pass states that hand back a report
the way the drill's last state does, so that what the command prints, writes and exits with can be
checked without running a drill.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from regionha.cli import executions as cli_executions
from regionha.cli import main

REGION = "ap-southeast-1"
ROLE = "arn:aws:iam::123456789012:role/drill"
T0 = 1_700_000_000.0


def canned_report(status: str = "PASSED") -> dict[str, Any]:
    return {
        "status": status,
        "scenario": "acceptance",
        "deployment": "regionha",
        "execution": "drill-x",
        "started_at": T0,
        "ended_at": T0 + 40,
        "steps": [
            {"name": "Preflight", "ok": True, "start": T0, "end": T0 + 1, "detail": {}},
            {"name": "FailNode", "ok": status == "PASSED", "start": T0 + 2, "end": T0 + 3,
             "detail": {"node": "Server-A"}},
        ],
        "recovery_seconds": {"osaka-bind": 11.5, "onprem": 12.0},
        "timeline": [
            {"t": T0 + 1, "step": "Preflight", "path": "osaka-bind", "outcome": "ok", "answer": "10.0.110.10",
             "node": "Server-A", "node_reachable": True},
            {"t": T0 + 14, "step": "Observe", "path": "osaka-bind", "outcome": "ok", "answer": "10.1.110.10",
             "node": "Server-B", "node_reachable": True},
        ],
        "faults": [{"kind": "node", "target": "Server-A", "start": T0 + 2.5, "end": T0 + 30}],
        "alarms": {"regionha-critical": {"expected": "quiet", "seen": ["OK"], "ok": True}},
        "restore": {"ok": True},
        "error": None,
    }


def machine(sfn: Any, name: str, states: dict[str, Any], start: str, timeout: int | None = 60) -> str:
    definition: dict[str, Any] = {"StartAt": start, "States": states}
    if timeout is not None:
        definition["TimeoutSeconds"] = timeout
    return sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"]


def reporting_machine(sfn: Any, report: dict[str, Any], name: str = "drill") -> str:
    """Preflight, then a Report state whose output is the report (its scenario taken from the input)."""
    parameters = {k: v for k, v in report.items() if k != "scenario"}
    parameters["scenario.$"] = "$.scenario"
    return machine(sfn, name, {
        "Preflight": {"Type": "Pass", "Result": {"ok": True}, "ResultPath": "$.preflight", "Next": "Report"},
        "Report": {"Type": "Pass", "Parameters": parameters, "End": True},
    }, "Preflight")


@pytest.fixture
def sfn(moto_aws: None) -> Any:
    return boto3.client("stepfunctions", region_name=REGION)


def finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    for _ in range(400):
        desc = sfn.describe_execution(executionArn=execution_arn)
        if desc["status"] != "RUNNING":
            return desc
        time.sleep(0.05)
    raise AssertionError(f"{execution_arn} did not finish")


class Lines(list):
    """Records progress lines the way ``regionha.cli.output.Out`` shows them (no terminal: no spinner)."""

    def line(self, text: str, style: str | None = None) -> None:
        self.append(text)

    def waiting(self, label: Any) -> None:
        return None


def start(*args: str) -> list[str]:
    return ["drill", "start", "--refresh", "0.05", "--yes", *args]


def test_start_follows_a_passing_drill_and_writes_its_report(sfn: Any, tmp_path: Path, capsys) -> None:
    arn = reporting_machine(sfn, canned_report())

    code = main(start("--state-machine-arn", arn, "--report-json", str(tmp_path / "r.json"),
                      "--html", str(tmp_path / "out" / "r.html")))

    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("no plan shown: cannot read stack regionha")  # --yes: the drill's preflight judges
    assert lines[1].startswith("started drill-") and lines[1].endswith(f"(acceptance) in AWS (region {REGION})")
    progress = [line.split(maxsplit=1)[1] for line in lines if line.strip().startswith("+")]
    assert progress[0] == "execution started"
    assert progress.index("enter Preflight") < progress.index("enter Report") < progress.index(
        "execution SUCCEEDED")
    assert any(p.startswith("exit  Preflight (") for p in progress)
    assert "regionha drill PASSED: scenario acceptance, deployment regionha" in out
    assert "recovery: osaka-bind 11.5 s, onprem 12.0 s" in out
    assert json.loads((tmp_path / "r.json").read_text())["recovery_seconds"] == {"osaka-bind": 11.5, "onprem": 12.0}
    assert "Drill PASSED" in (tmp_path / "out" / "r.html").read_text()
    execution = sfn.list_executions(stateMachineArn=arn)["executions"][0]
    assert execution["name"].startswith("drill-")
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "scenario": "acceptance"}


def test_a_failed_drill_exits_1_and_names_the_failed_step(sfn: Any, capsys) -> None:
    arn = reporting_machine(sfn, canned_report("FAILED"))

    code = main(start("--state-machine-arn", arn))

    out = capsys.readouterr().out
    assert code == 1
    assert "regionha drill FAILED" in out and "failed step: FailNode" in out


def test_cut_path_sends_the_path(sfn: Any, capsys) -> None:
    arn = reporting_machine(sfn, canned_report())

    code = main(start("--scenario", "cut-path", "--region-path", "osaka-bind", "--state-machine-arn", arn))

    assert code == 0
    assert "scenario cut-path" in capsys.readouterr().out
    execution = sfn.list_executions(stateMachineArn=arn)["executions"][0]
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "scenario": "cut-path", "region_path": "osaka-bind"}


def test_a_drill_ending_in_fail_is_reported_from_its_history(sfn: Any, tmp_path: Path, capsys) -> None:
    # The drill's failure branch reports, then ends in Fail: the execution has no output.
    arn = machine(sfn, "drill", {
        "Report": {"Type": "Pass", "Result": canned_report("FAILED"), "ResultPath": "$.report", "Next": "Failed"},
        "Failed": {"Type": "Fail", "Error": "DrillFailed", "Cause": "ObserveFailover timed out"},
    }, "Report")

    code = main(start("--state-machine-arn", arn, "--report-json", str(tmp_path / "r.json")))

    out = capsys.readouterr().out
    assert code == 1
    assert "ExecutionFailed: DrillFailed: ObserveFailover timed out" in out
    assert "regionha drill FAILED" in out
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "FAILED"


def drill_like_machine(sfn: Any, verdict: dict[str, Any]) -> str:
    """The drill's tail: Report leaves a verdict (and the S3 pointer) at $.report, then Succeed or Fail."""
    return machine(sfn, "drill", {
        "Report": {"Type": "Pass", "Result": verdict, "ResultPath": "$.report", "Next": "DecideOutcome"},
        "DecideOutcome": {"Type": "Choice", "Default": "DrillFailed", "Choices": [
            {"Variable": "$.report.status", "StringEquals": "PASSED", "Next": "DrillPassed"}]},
        "DrillPassed": {"Type": "Succeed"},
        "DrillFailed": {"Type": "Fail", "Error": "DrillFailed", "Cause": "its report says why"},
    }, "Report")


@pytest.fixture
def stored(sfn: Any) -> Any:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="drill-reports", CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


@pytest.mark.parametrize(("status", "code"), [("PASSED", 0), ("FAILED", 1)])
def test_the_report_is_read_from_where_the_report_state_stored_it(
        sfn: Any, stored: Any, tmp_path: Path, capsys, status: str, code: int) -> None:
    report = canned_report(status)
    stored.put_object(Bucket="drill-reports", Key="reports/regionha/drill-x.json", Body=json.dumps(report))
    arn = drill_like_machine(sfn, {"status": status, "recovery_seconds": report["recovery_seconds"],
                                   "json": "s3://drill-reports/reports/regionha/drill-x.json"})

    exit_code = main(start("--state-machine-arn", arn, "--report-json", str(tmp_path / "r.json"),
                           "--html", str(tmp_path / "r.html")))

    out = capsys.readouterr().out
    assert exit_code == code
    assert f"regionha drill {status}: scenario acceptance" in out
    assert json.loads((tmp_path / "r.json").read_text()) == report  # the stored report, not the verdict
    assert "FailNode" in (tmp_path / "r.html").read_text()


def test_without_a_stored_report_the_verdict_is_reported(sfn: Any, stored: Any, capsys) -> None:
    arn = drill_like_machine(sfn, {"status": "PASSED", "recovery_seconds": {"osaka-bind@Server-B": 3.25},
                                   "json": "s3://drill-reports/reports/regionha/missing.json"})

    code = main(start("--state-machine-arn", arn))

    captured = capsys.readouterr()
    assert code == 0
    assert "cannot read the report s3://drill-reports/reports/regionha/missing.json" in captured.err
    assert "regionha drill PASSED" in captured.out and "osaka-bind@Server-B 3.2 s" in captured.out
    assert "only the verdict is known" in captured.out


def test_an_execution_without_report_exits_1_with_its_error(sfn: Any, tmp_path: Path, capsys) -> None:
    arn = machine(sfn, "drill", {"Boom": {"Type": "Fail", "Error": "LockHeld", "Cause": "drill-1 holds it"}},
                  "Boom")

    code = main(start("--state-machine-arn", arn, "--report-json", str(tmp_path / "r.json")))

    assert code == 1
    assert "FAILED without a drill report (LockHeld: drill-1 holds it)" in capsys.readouterr().out
    assert not (tmp_path / "r.json").exists()


def test_an_execution_timing_out_is_a_failure(sfn: Any, capsys) -> None:
    arn = machine(sfn, "drill", {"Observe": {"Type": "Wait", "Seconds": 5, "End": True}}, "Observe", timeout=1)

    code = main(start("--state-machine-arn", arn))

    out = capsys.readouterr().out
    assert code == 1
    assert "ExecutionTimedOut" in out and "TIMED_OUT without a drill report" in out


def test_following_is_bounded_by_the_state_machine_timeout(sfn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = machine(sfn, "drill", {"Observe": {"Type": "Wait", "Seconds": 3, "End": True}}, "Observe", timeout=1)
    monkeypatch.setattr(cli_executions, "WAIT_GRACE_SECONDS", -0.8)  # stop following before the execution ends
    assert cli_executions.wait_bound(sfn, arn) == pytest.approx(0.2)
    execution = sfn.start_execution(stateMachineArn=arn, name="drill-bounded")["executionArn"]
    lines = Lines()

    desc = cli_executions.follow(sfn, execution, cli_executions.wait_bound(sfn, arn), lines, 0.05)

    assert desc["status"] == "RUNNING"
    assert lines[-1].endswith("enter Observe")
    finished(sfn, execution)


def test_without_timeout_seconds_the_default_bound_applies(sfn: Any) -> None:
    arn = machine(sfn, "drill", {"Done": {"Type": "Succeed"}}, "Done", timeout=None)

    assert cli_executions.wait_bound(sfn, arn) == cli_executions.DEFAULT_WAIT_SECONDS


def test_no_wait_returns_at_once(sfn: Any, capsys) -> None:
    arn = reporting_machine(sfn, canned_report())

    code = main(start("--state-machine-arn", arn, "--no-wait"))

    out = capsys.readouterr().out
    assert code == 0
    assert "regionha drill report arn:aws:states:" in out and "enter" not in out


def test_the_state_machine_comes_from_the_stack_output(sfn: Any, capsys) -> None:
    arn = reporting_machine(sfn, canned_report())
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"DrillStateMachineArn": {"Value": arn}},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="regionha", TemplateBody=json.dumps(template))

    code = main(start("--region", REGION, "--no-wait"))

    assert code == 0
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1


def test_drill_report_renders_a_finished_execution(sfn: Any, tmp_path: Path, capsys) -> None:
    arn = reporting_machine(sfn, canned_report())
    execution = sfn.start_execution(stateMachineArn=arn, name="drill-done", input='{"scenario": "acceptance"}')
    finished(sfn, execution["executionArn"])

    code = main(["drill", "report", execution["executionArn"], "--html", str(tmp_path / "r.html")])

    assert code == 0
    assert capsys.readouterr().out.startswith("regionha drill PASSED")
    page = (tmp_path / "r.html").read_text()
    assert "osaka-bind" in page and "11.5 s" in page


def test_drill_report_falls_back_to_the_stored_report(sfn: Any, stored: Any, tmp_path: Path, capsys) -> None:
    # Stopped from the console: no output, no report in the history, but the drill stored one in S3.
    arn = machine(sfn, "drill", {"Stopped": {"Type": "Fail", "Error": "Aborted", "Cause": "stopped"}}, "Stopped")
    execution = sfn.start_execution(stateMachineArn=arn, name="drill-stopped")["executionArn"]
    finished(sfn, execution)
    s3 = stored
    s3.put_object(Bucket="drill-reports", Key="reports/regionha/drill-other.json",
                  Body=json.dumps(canned_report("PASSED")))
    s3.put_object(Bucket="drill-reports", Key="reports/regionha/drill-stopped.json",
                  Body=json.dumps(canned_report("FAILED")))

    without = main(["drill", "report", execution])
    with_bucket = main(["drill", "report", execution, "--bucket", "drill-reports",
                        "--report-json", str(tmp_path / "r.json")])

    out = capsys.readouterr().out
    assert (without, with_bucket) == (1, 1)
    assert "FAILED without a drill report (Aborted: stopped)" in out
    assert "regionha drill FAILED" in out
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "FAILED"


def test_drill_report_of_a_running_execution_has_no_report_yet(sfn: Any, capsys) -> None:
    # Long enough to still run on a loaded machine; finished() below waits for it.
    arn = machine(sfn, "drill", {"Observe": {"Type": "Wait", "Seconds": 4, "End": True}}, "Observe")
    execution = sfn.start_execution(stateMachineArn=arn, name="drill-running")["executionArn"]

    code = main(["drill", "report", execution])

    assert code == 1
    assert "still RUNNING" in capsys.readouterr().out
    finished(sfn, execution)


@pytest.mark.parametrize(("argv", "message"), [
    (start("--scenario", "cut-path"), "--scenario cut-path needs --region-path NAME"),
    (start("--region-path", "osaka-bind"), "--region-path applies to --scenario cut-path only"),
    (start("--local-state", "/nonexistent/local-state.json"), "/nonexistent/local-state.json does not exist"),
    (start("--state-machine-arn", f"arn:aws:states:{REGION}:123456789012:stateMachine:absent"), "DoesNotExist"),
    (start("--region", REGION), "cannot read stack regionha"),
    (["drill", "report", "drill-20240101"], "is not an execution ARN"),
    (["drill", "report", f"arn:aws:states:{REGION}:123456789012:execution:drill:absent"], "cannot read execution"),
])
def test_bad_input_exits_2_with_a_message(sfn: Any, capsys, argv: list[str], message: str) -> None:
    code = main(argv)

    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert "started" not in captured.out


@pytest.mark.parametrize(("state", "message"), [
    ("not json", "cannot be read as JSON"),
    ({"region": REGION, "state_machines": {}}, "needs endpoint_url and region"),
    ({"endpoint_url": "http://198.51.100.7:5000", "region": REGION, "state_machines": {}}, "not a loopback"),
    ({"endpoint_url": "http://127.0.0.1:5000", "region": REGION}, "needs state_machines"),
    ({"endpoint_url": "http://127.0.0.1:5000", "region": REGION, "state_machines": {}}, "names no DrillStateMachine"),
])
def test_a_bad_local_state_file_exits_2(tmp_path: Path, capsys, state: Any, message: str) -> None:
    path = tmp_path / "local-state.json"
    path.write_text(state if isinstance(state, str) else json.dumps(state))

    code = main(start("--local-state", str(path)))

    assert code == 2
    assert message in capsys.readouterr().err


def test_scenario_is_checked_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["drill", "start", "--scenario", "everything"])

    assert exit_.value.code == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err


def test_progress_names_the_state_a_task_failed_in() -> None:
    started = datetime(2024, 1, 1)
    lines = Lines()
    progress = cli_executions.Progress(started, lines.line)
    events = [
        {"type": "TaskStateEntered", "timestamp": started + timedelta(seconds=2),
         "stateEnteredEventDetails": {"name": "CutPath"}},
        {"type": "LambdaFunctionFailed", "timestamp": started + timedelta(seconds=3),
         "lambdaFunctionFailedEventDetails": {"error": "ConfigurationError", "cause": "no NACL\nfor B3"}},
        {"type": "TaskStateExited", "timestamp": started + timedelta(seconds=3.5),
         "stateExitedEventDetails": {"name": "CutPath"}},
        {"type": "TaskStateEntered", "timestamp": started + timedelta(seconds=4),
         "stateEnteredEventDetails": {"name": "Restore"}},
        {"type": "LambdaFunctionFailed", "timestamp": started + timedelta(seconds=5),
         "lambdaFunctionFailedEventDetails": {"error": "DrillAborted", "cause": json.dumps({
             "errorType": "DrillAborted", "errorMessage": "critical alarm went to ALARM",
             "stackTrace": ["  File \"app.py\", line 1"]})}},
        {"type": "ExecutionFailed", "timestamp": started + timedelta(seconds=6),
         "executionFailedEventDetails": {"error": "DrillFailed"}},
    ]

    for event in events:
        progress.show(event)

    assert lines == [
        "    +2.0s  enter CutPath",
        "    +3.0s  LambdaFunctionFailed in CutPath: ConfigurationError: no NACL for B3",
        "    +3.5s  exit  CutPath (1.5 s)",
        "    +4.0s  enter Restore",
        "    +5.0s  LambdaFunctionFailed in Restore: DrillAborted: critical alarm went to ALARM",
        "    +6.0s  ExecutionFailed: DrillFailed",
    ]


def test_against_a_local_runtime_state_file(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from inprocess import LocalAws

    with LocalAws() as aws:
        endpoint = aws.endpoint_url
        sfn = boto3.client("stepfunctions", region_name=REGION, endpoint_url=aws.endpoint_url)
        arn = reporting_machine(sfn, canned_report())
        state = tmp_path / "local-state.json"
        state.write_text(json.dumps({"endpoint_url": aws.endpoint_url, "region": REGION,
                                     "state_machines": {"DrillStateMachine": arn}}))
        # No credentials anywhere: the command brings its own for the local runtime, never a real profile.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

        code = main(start("--local-state", str(state)))
        executions = sfn.list_executions(stateMachineArn=arn)["executions"]

    out = capsys.readouterr().out
    assert code == 0
    assert f"in local runtime at {endpoint}" in out and "regionha drill PASSED" in out
    assert len(executions) == 1


def test_on_a_terminal_progress_has_colour_and_a_spinner_with_the_elapsed_time(
        sfn: Any, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    # rich treats FORCE_COLOR as a terminal; without it (every other test here) the lines are plain.
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    arn = machine(sfn, "drill", {
        "Observe": {"Type": "Wait", "Seconds": 2, "Next": "Report"},
        "Report": {"Type": "Pass", "Result": canned_report(), "End": True}}, "Observe")

    code = main(start("--state-machine-arn", arn))

    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b[" in out  # ANSI styles
    assert "in Observe · " in out and " s" in out  # the spinner's label: the state and the seconds waited
    assert "execution SUCCEEDED" in out
