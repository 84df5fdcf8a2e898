"""Benchmark: EC2 stop event → record INSYNC on the standby → on-prem resolver answers the standby,
in the local runtime, against the record TTL (goal: within TTL + 3 s). Prints figures; asserts nothing.
Needs root.

    python benchmarks/failover.py [--runs N] [--ttl S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import dns.message
import dns.query

from regionha import netguard
from regionha.converge.dns import read_record
from regionha.failover import manual_switch
from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import load_topology
from regionha.watch.canary import client_source


def ask(server: str, source: str) -> list[str] | None:
    try:
        response = dns.query.udp(dns.message.make_query("sample.cluster.local.", "A"), server, timeout=1, source=source)
    except Exception:
        return None
    return [r.address for rrset in response.answer for r in rrset]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=5)
    args = parser.parse_args()
    topology = load_topology()
    record = topology.dns.record.model_copy(update={"ttl": args.ttl})
    topology = local_topology(topology.model_copy(update={"dns": topology.dns.model_copy(update={"record": record})}))
    primary, standby = topology.nodes[0], topology.nodes[1]
    to_record, to_answer = [], []
    with LocalRuntime(topology) as rt:
        if rt.build().status != "SUCCEEDED":
            print("build failed")
            return 1
        rt.settle()
        src = netguard.to_local(client_source(topology))
        onprem = netguard.to_local(topology.client.dns_server.ip)
        ec2 = rt.clients.ec2(topology.region_of(primary.vpc))
        (iid,) = [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=[{"Name": "tag:regionha:name", "Values": [primary.name]}])[
                "Reservations"
            ]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        table = rt.stack.physical_id("StateTable")
        for run in range(args.runs):
            while ask(onprem, src) != [str(primary.ip)]:
                time.sleep(0.1)
            t0 = time.monotonic()
            ec2.stop_instances(InstanceIds=[iid])
            insync = answered = None
            while time.monotonic() - t0 < args.ttl + 60 and answered is None:
                if insync is None and (read_record(topology, rt.clients) or {}).get("ip") == str(standby.ip):
                    insync = time.monotonic() - t0
                if ask(onprem, src) == [str(standby.ip)]:
                    answered = time.monotonic() - t0
                time.sleep(0.05)
            print(
                f"run {run + 1}: record on the standby after {insync:.2f} s, "
                f"on-prem answers it after {answered:.2f} s (TTL {args.ttl} s)",
                flush=True,
            )
            to_record.append(insync)
            to_answer.append(answered)
            ec2.start_instances(InstanceIds=[iid])
            rt.settle()
            time.sleep(1)
            # Failback is manual: move it back, past the hold-down, for the next run.
            manual_switch(topology, rt.clients, primary.name, table=table, table_region=rt.region)
    print(
        f"\nevent → record INSYNC on the standby: median {statistics.median(to_record):.2f} s, "
        f"max {max(to_record):.2f} s"
    )
    print(
        f"event → on-prem resolver answers the standby: median {statistics.median(to_answer):.2f} s, "
        f"max {max(to_answer):.2f} s; goal TTL + 3 = {args.ttl + 3} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
