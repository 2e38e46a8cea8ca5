"""Turns bench/run.sh's raw.jsonl into the markdown table of docs/PERFORMANCE.md.

Each figure is the median over the repetitions of one (scenario, server) pair; each wsguard figure
is also given as a ratio to the raw tokio-tungstenite baseline measured in the same run (so is the
fastwebsockets baseline's, for comparison).
"""

import json
import statistics
import sys
from collections import defaultdict

BASE = "baseline-tt"
# Servers in table order; `wsguard-before` is present when run.sh was given WSG_BEFORE (an older
# binary measured side by side with the current one); `wsguard-proxy` (the current binary with a
# `[proxy] connect` endpoint) in the handshake-proxy scenario only; `wsguard-api` (publications
# through the server API) and `wsguard-host` (an embedding host publishing) in api-publish only.
LABELS = (BASE, "baseline-fws", "wsguard-before", "wsguard", "wsguard-proxy", "wsguard-api", "wsguard-host")


def key(r):
    return ("wss " if r.get("tls") else "") + plain_key(r)


def plain_key(r):
    s = r["scenario"]
    if s in ("echo", "pipelined", "publish", "pipelined_publish"):
        return f"{s} c={r['conns']} w={r['window']}"
    if s.startswith("fanout") or s == "api_publish":
        return f"{s} subs={r['subs']}" + (f" rate={r['rate']:g}/s" if r["rate"] else f" w={r['window']}")
    if s == "handshake":
        return f"handshake c={r['conns']}"
    if s == "idle":
        return f"idle {r['conns']}"
    return s


def med(rows, field):
    vals = [r[field] for r in rows if isinstance(r.get(field), (int, float))]
    return statistics.median(vals) if vals else float("nan")


def fmt(x, digits=1):
    if x != x:  # NaN
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return "—" if not b or a != a or b != b else f"{a / b:.2f}×"


def main(path):
    groups = defaultdict(list)
    order = []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        k = key(r)
        if k not in order:
            order.append(k)
        groups[(k, r["label"])].append(r)

    print("| scenario | server | runs | ops/s | p50 µs | p99 µs | server CPU µs/op | CPU ratio | ops/s ratio | p99 ratio | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    idle_rows = []
    for k in order:
        if k.startswith(("idle", "wss idle")):
            idle_rows.append(k)
            continue
        b = groups.get((k, BASE), [])
        for label in LABELS:
            rows = groups.get((k, label), [])
            if not rows:
                continue
            ops, p50, p99, cpu = (med(rows, f) for f in ("ops_per_sec", "p50_us", "p99_us", "server_cpu_us_per_op"))
            errs = sum(r.get("errors", 0) for r in rows)
            if label == BASE:
                rc = ro = rp = ""
            else:
                rc = ratio(cpu, med(b, "server_cpu_us_per_op"))
                ro = ratio(ops, med(b, "ops_per_sec"))
                rp = ratio(p99, med(b, "p99_us"))
            print(f"| {k} | {label} | {len(rows)} | {fmt(ops)} | {fmt(p50)} | {fmt(p99)} | {fmt(cpu, 2)} | {rc} | {ro} | {rp} | {errs} |")
    # The security layer's cost per message: a schema-checked, acked publish against the raw
    # baseline's pipelined echo (a parse and a reply) of the same run and window.
    for k in order:
        if "pipelined_publish" not in k:
            continue
        echo_k = k.replace("pipelined_publish", "pipelined")
        echo_cpu = med(groups.get((echo_k, BASE), []), "server_cpu_us_per_op")
        for label in ("wsguard-before", "wsguard"):
            rows = groups.get((k, label), [])
            if rows and echo_cpu == echo_cpu:
                cpu = med(rows, "server_cpu_us_per_op")
                print()
                print(f"{label} {k}: {fmt(cpu, 2)} µs per message = {ratio(cpu, echo_cpu)} {BASE}'s {echo_k} ({fmt(echo_cpu, 2)} µs)")
    # The backend proxy's cost per handshake: `wsguard-proxy` against the plain wsguard handshake of
    # the same run (server CPU is wsguard's own; ops/s also includes the backend on the same core).
    for k in order:
        rows = groups.get((k, "wsguard-proxy"), [])
        plain = groups.get((k, "wsguard"), [])
        if rows and plain:
            cpu, plain_cpu = med(rows, "server_cpu_us_per_op"), med(plain, "server_cpu_us_per_op")
            print()
            print(
                f"wsguard-proxy {k}: {fmt(cpu, 2)} µs server CPU per handshake = {ratio(cpu, plain_cpu)} wsguard's "
                f"plain handshake ({fmt(plain_cpu, 2)} µs); handshakes/s {ratio(med(rows, 'ops_per_sec'), med(plain, 'ops_per_sec'))}, "
                f"p99 {ratio(med(rows, 'p99_us'), med(plain, 'p99_us'))}"
            )
    # A publication through the server API against the same publication by an embedding host
    # (ServerHandle::publish) of the same run: server CPU per publication and per delivery.
    for k in order:
        rows = groups.get((k, "wsguard-api"), [])
        host = groups.get((k, "wsguard-host"), [])
        if rows and host:
            pub, host_pub = med(rows, "server_cpu_us_per_publication"), med(host, "server_cpu_us_per_publication")
            per, host_per = med(rows, "server_cpu_us_per_op"), med(host, "server_cpu_us_per_op")
            print()
            print(
                f"wsguard-api {k}: {fmt(pub, 1)} µs server CPU per publication = {ratio(pub, host_pub)} the embedding "
                f"host's ({fmt(host_pub, 1)} µs); per delivery {fmt(per, 2)} µs against {fmt(host_per, 2)} µs "
                f"({ratio(per, host_per)}); p50 {fmt(med(rows, 'p50_us'))} µs against {fmt(med(host, 'p50_us'))} µs, "
                f"p99 {ratio(med(rows, 'p99_us'), med(host, 'p99_us'))}"
            )
    if idle_rows:
        print()
        print("| idle connections | server | runs | held | server RSS before KiB | after KiB | KiB per connection | ratio | connect s | errors |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k in idle_rows:
            b = groups.get((k, BASE), [])
            for label in LABELS:
                rows = groups.get((k, label), [])
                if not rows:
                    continue
                per = med(rows, "rss_kb_per_conn")
                rt = "" if label == BASE else ratio(per, med(b, "rss_kb_per_conn"))
                print(
                    f"| {k} | {label} | {len(rows)} | {fmt(med(rows, 'held'), 0)} | {fmt(med(rows, 'server_rss_before_kb'), 0)} "
                    f"| {fmt(med(rows, 'server_rss_after_kb'), 0)} | {fmt(per, 2)} | {rt} | {fmt(med(rows, 'connect_secs'), 1)} "
                    f"| {sum(r.get('errors', 0) for r in rows)} |"
                )


if __name__ == "__main__":
    main(sys.argv[1])
