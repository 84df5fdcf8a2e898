"""Finding a finished drill execution's report, and concluding a ``drill start|report`` with it.

The drill's ``Report`` state puts the report JSON in S3 and leaves ``{"status", "recovery_seconds",
"json": "s3://..."}`` at ``$.report``; an execution that ends in ``DrillFailed`` has no output at all. So
the report is looked for in the execution output, then in the outputs of its states (newest first): a
whole report inline, else the S3 object the ``json`` pointer names, else (``--bucket``)
``reports/<deployment>/<execution name>.json``, else the bare status and recovery figures.

IAM: states:GetExecutionHistory; s3:GetObject (and s3:ListBucket with --bucket).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regionha.cli.executions import details, execution_json, new_events
from regionha.cli.output import EXIT_FAILED, EXIT_OK, Out, one_line
from regionha.cli.target import Target

EXIT_PASSED = EXIT_OK


def _parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _nested(value: Any, depth: int = 2) -> Iterator[dict[str, Any]]:
    """The value and the objects a level or two down (``{"report": ...}``, a Lambda ``Payload``)."""
    value = _parsed(value)
    if isinstance(value, dict):
        yield value
        if depth > 0:
            for nested in value.values():
                yield from _nested(nested, depth - 1)


def _verdict(value: dict[str, Any]) -> bool:
    return value.get("status") in ("PASSED", "FAILED")


def report_in(value: Any) -> dict[str, Any] | None:
    """A whole report: a verdict with steps, scenario or timeline."""
    return next((v for v in _nested(value) if _verdict(v) and ("steps" in v or "scenario" in v
                                                                or "timeline" in v)), None)


def pointer_in(value: Any) -> str | None:
    """The ``s3://bucket/key`` of a stored report, as the Report state leaves it."""
    return next((v["json"] for v in _nested(value) if _verdict(v) and isinstance(v.get("json"), str)
                 and v["json"].startswith("s3://")), None)


def verdict_in(value: Any) -> dict[str, Any] | None:
    """A bare verdict (the Report state's summary, or MarkReportFailed's ``{"status": "FAILED"}``)."""
    return next((v for v in _nested(value) if _verdict(v)), None)


def _history_outputs(sfn: Any, execution_arn: str) -> Iterator[Any]:
    """State outputs and failure causes, newest first."""
    for event in reversed(new_events(sfn, execution_arn, 0)):
        found = details(event)
        for key in ("output", "cause"):
            if found.get(key):
                yield found[key]


def _s3_object(clients: Any, region: str, url: str) -> dict[str, Any] | None:
    """A report stored at ``s3://bucket/key``. IAM: s3:GetObject."""
    from botocore.exceptions import ClientError

    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        body = clients.client("s3", region).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as e:
        print(f"regionha drill: cannot read the report {url}: {e}", file=sys.stderr)
        return None
    return report_in(body)


def _s3_report(clients: Any, region: str, bucket: str, name: str) -> dict[str, Any] | None:
    """``reports/<deployment>/<name>.json`` in the bucket. IAM: s3:ListBucket, s3:GetObject."""
    s3 = clients.client("s3", region)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="reports/"):
        for item in page.get("Contents") or []:
            if item["Key"].endswith(f"/{name}.json"):
                return _s3_object(clients, region, f"s3://{bucket}/{item['Key']}")
    return None


def find_report(target: Target, desc: dict[str, Any], bucket: str | None = None) -> dict[str, Any] | None:
    """The execution's report (see the module docstring for where it is looked for)."""
    verdict = None

    def places() -> Iterator[Any]:
        yield desc.get("output")
        yield from _history_outputs(target.sfn, desc["executionArn"])

    for value in places():
        report = report_in(value)
        if report is None and (url := pointer_in(value)):
            report = _s3_object(target.clients, target.region, url)
        if report is not None:
            return report
        verdict = verdict or verdict_in(value)
    if bucket:
        report = _s3_report(target.clients, target.region, bucket, desc["name"])
        if report is not None:
            return report
    if verdict is not None:
        # Only the verdict survived (no bucket, or the report could not be stored): say so in the report.
        return {"status": verdict["status"], "execution": desc["name"],
                "recovery_seconds": verdict.get("recovery_seconds") or {},
                "error": verdict.get("error") or "only the verdict is known: the full report was not stored"}
    return None


def write_outputs(report: dict[str, Any], json_path: Path | None, html_path: Path | None, out: Out) -> None:
    from regionha.drill.report import render_html

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        out.line(f"report JSON: {json_path}")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        out.line(f"report HTML: {html_path}")


def conclude(target: Target, desc: dict[str, Any], args: argparse.Namespace, out: Out,
             extra: dict[str, Any] | None = None) -> int:
    from regionha.drill.report import summary_text

    document: dict[str, Any] = {"execution": execution_json(desc), "report": None} | (extra or {})
    if desc["status"] == "RUNNING":
        out.text(f"execution {desc['executionArn']} is still RUNNING; no report yet "
                 f"(read it later with `regionha drill report {desc['executionArn']}`)", "yellow")
        out.result(document)
        return EXIT_FAILED
    report = find_report(target, desc, getattr(args, "bucket", None))
    document["report"] = report
    out.result(document)
    if report is None:
        reason = ": ".join(one_line(p) for p in (desc.get("error"), desc.get("cause")) if p)
        out.text(f"execution {desc['status']} without a drill report" + (f" ({reason})" if reason else ""),
                 "bold red")
        return EXIT_FAILED
    passed = report.get("status") == "PASSED" and desc["status"] == "SUCCEEDED"
    for i, text in enumerate(summary_text(report).splitlines()):
        out.text(text, ("bold green" if passed else "bold red") if i == 0 else None)
    write_outputs(report, args.report_json, args.report_html, out)
    return EXIT_PASSED if passed else EXIT_FAILED
