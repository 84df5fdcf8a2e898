"""What a drill leaves for people: the alarm proof after restore (bounded wait for the watched
alarms to be OK again), the report (JSON + HTML to S3, a summary to SNS, metrics DrillPassed and
RecoverySeconds) and the lock given back.

IAM: cloudwatch:DescribeAlarms, s3:PutObject, sns:Publish, cloudwatch:PutMetricData, dynamodb:DeleteItem.
"""

from __future__ import annotations

import json
import time
from typing import Any

from regionha.drill.judge import PASSED, compose_report
from regionha.drill.lock import release_lock
from regionha.drill.probing import Prober
from regionha.drill.proof import OK_STATE, alarm_proof
from regionha.watch import metrics


class Publisher(Prober):
    """check_alarms, report, release: the drill's last three states."""

    def check_alarms(self) -> dict[str, Any]:
        """Wait (bounded) for the watched alarms to be OK again, then judge the alarm proof."""
        record = self.load()
        names = list(self.alarms.watch_alarms)
        timeout = self.settings.alarm_ok_timeout if self.settings else 0
        poll = self.settings.poll_interval if self.settings else 1.0
        deadline = time.monotonic() + timeout
        states = self.alarm_states()
        self._log_alarms("check-alarms", time.time(), states)
        while any(states.get(n) != OK_STATE for n in names if n in states) and time.monotonic() < deadline:
            self.sleep(poll)
            states = self.alarm_states()
            self._log_alarms("check-alarms", time.time(), states)
        proof = alarm_proof(record, self.alarms, states)
        record["alarms"] = proof["alarms"]
        record["alarm_proof"] = proof["summary"]
        self.save()
        return proof["summary"]

    def report(self) -> dict[str, Any]:
        record = self.load()
        report = compose_report(record, self.timeline())
        base = f"reports/{self.deployment}/{self.execution}"
        out: dict[str, Any] = {"status": report["status"], "recovery_seconds": report["recovery_seconds"]}
        if self.env.bucket:
            s3 = self.clients.client("s3", self.env.region)
            s3.put_object(Bucket=self.env.bucket, Key=f"{base}.json", ContentType="application/json",
                          Body=json.dumps(report, indent=1, default=str).encode())
            out["json"] = f"s3://{self.env.bucket}/{base}.json"
            s3.put_object(Bucket=self.env.bucket, Key=f"{base}.html", ContentType="text/html; charset=utf-8",
                          Body=render_html(report).encode())
            out["html"] = f"s3://{self.env.bucket}/{base}.html"
        if self.env.topic:
            subject, text = summary(report)
            where = out.get("json") or "(no reports bucket)"
            self.clients.client("sns", self.env.region).publish(
                TopicArn=self.env.topic, Subject=subject, Message=f"{text}\nreport: {where}")
        dims = {"Deployment": self.deployment}
        points = [metrics.Datapoint("DrillPassed", float(report["status"] == PASSED), "Count", dims)]
        points += [metrics.Datapoint("RecoverySeconds", r["seconds"], "Seconds", dims | {"Path": r["path"]})
                   for r in record.get("recovery", []) if r["seconds"] is not None]
        metrics.emit(points, region=self.env.region, cloudwatch=self.clients.client("cloudwatch", self.env.region))
        return out

    def release(self) -> dict[str, Any]:
        released = release_lock(self.clients, self.env, self.deployment, self.execution)
        return {"released": released}


def render_html(report: dict[str, Any]) -> str:
    """The report's HTML page (regionha.drill.report)."""
    from regionha.drill.report import render_html as render

    return render(report)


def summary(report: dict[str, Any]) -> tuple[str, str]:
    """(SNS subject, text)."""
    from regionha.drill.report import summary_subject, summary_text

    return summary_subject(report), summary_text(report)
