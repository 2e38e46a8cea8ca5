"""Turns bench/run.sh's raw.jsonl into the markdown table of docs/PERFORMANCE.md.

Each figure is the median over the repetitions of one (scenario, server) pair; each wsguard figure
is also given as a ratio to the raw tokio-tungstenite baseline measured in the same run (so is the
fastwebsockets baseline's, for comparison). A scenario run without that baseline (the history and
handshake-proxy ones) gives its ratios to `wsguard` of the same run instead. The history scenarios
then get their own section: each figure of `wsguard-history` and its ratio to `wsguard`, memory per
stored publication, and recovery against live delivery.
"""

import json
import statistics
import sys
from collections import defaultdict

BASE = "baseline-tt"
# Servers in table order; `wsguard-before` is present when run.sh was given WSG_BEFORE (an older
# binary measured side by side with the current one); `wsguard-proxy` (the current binary with a
# `[proxy] connect` endpoint) in the handshake-proxy scenario only; `wsguard-history` (the current
# binary with channel history on, bench/config/history.toml) in the history scenarios only;
# `wsguard-api` (publications through the server API) and `wsguard-host` (an embedding host
# publishing) in api-publish only.
LABELS = (BASE, "baseline-fws", "wsguard-before", "wsguard", "wsguard-proxy", "wsguard-history", "wsguard-api", "wsguard-host")
HISTORY = "wsguard-history"
# Scenarios with their own tables (not ops, latency and CPU per op).
OWN_TABLES = ("idle", "history_memory", "history_recover")


def key(r):
    tag = f"{r['tag']}: " if r.get("tag") else ""
    return tag + ("wss " if r.get("tls") else "") + plain_key(r)


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
    if s == "cluster":
        return f"cluster rate={r['rate']:g}/s"
    if s == "churn":
        return f"churn c={r['conns']}"
    if s == "history_memory":
        return f"history_memory {r['channels']}x{r['per_channel']}"
    if s == "history_recover":
        return f"history_recover n={r['messages']} w={r['window']}"
    return s


def scenario_of(rows_by_key, k):
    rows = next((rows for (key_, _), rows in rows_by_key.items() if key_ == k), [])
    return rows[0]["scenario"] if rows else ""


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

    if any(not k.startswith(("idle", "wss idle", "cluster", "churn")) for k in order):
        print("| scenario | server | runs | ops/s | p50 µs | p99 µs | server CPU µs/op | CPU ratio | ops/s ratio | p99 ratio | errors |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    idle_rows = []
    for k in order:
        scenario = scenario_of(groups, k)
        if scenario in OWN_TABLES:
            if scenario == "idle":
                idle_rows.append(k)
            continue
        if k.startswith(("cluster", "churn")):
            continue  # their own tables, below
        base = BASE if groups.get((k, BASE)) else "wsguard"
        b = groups.get((k, base), [])
        for label in LABELS:
            rows = groups.get((k, label), [])
            if not rows:
                continue
            ops, p50, p99, cpu = (med(rows, f) for f in ("ops_per_sec", "p50_us", "p99_us", "server_cpu_us_per_op"))
            errs = sum(r.get("errors", 0) for r in rows)
            if label == base:
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
    cluster_table(order, groups)
    churn_table(order, groups)
    history_section(groups, order)


# The cluster runs' labels (run.sh's cluster_case), in table order.
CLUSTER_LABELS = ("one-node", "publish-only", "redis", "nats")


def cluster_table(order, groups):
    """Each node's CPU in the cluster runs, against the single-node runs of the same script.

    The receiving node's CPU per delivery is divided by the one-node run's (a local delivery); the
    publishing node's CPU per publication by the publish-only run's (a local publish, nobody
    subscribed on that node), and what the broker adds is that difference over the local publish.
    """
    for k in order:
        if not k.startswith("cluster"):
            continue
        local = groups.get((k, "one-node"), [])
        alone = groups.get((k, "publish-only"), [])
        local_delivery = med(local, "sub_cpu_us_per_delivery")
        local_publish = med(alone, "pub_cpu_us_per_publication")
        print()
        print(
            f"| {k} | runs | subs | deliveries/s | p50 µs | p99 µs | p99.9 µs | receiving node µs/delivery | ratio to one node "
            "| publishing node µs/publication | ratio to local publish | broker adds | ack p50 µs | ack p99 µs | lost | errors |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label in CLUSTER_LABELS:
            rows = groups.get((k, label), [])
            if not rows:
                continue
            two = label in ("redis", "nats")
            has_subs, nan = label != "publish-only", float("nan")
            delivery = med(rows, "sub_cpu_us_per_delivery")
            publish = med(rows, "pub_cpu_us_per_publication")
            # The one-node run's publishing process is the receiving one: its CPU per publication
            # includes every delivery, so only the publish-only and two-node runs show that column.
            pub_cell = fmt(publish, 2) if label != "one-node" else "—"
            adds = "—"
            if two and local_publish == local_publish and local_publish:
                adds = f"{(publish - local_publish) / local_publish:.2f}×"
            lost = sum(r.get("lost", 0) for r in rows)
            print(
                f"| {label} | {len(rows)} | {fmt(med(rows, 'subs'), 0)} | {fmt(med(rows, 'ops_per_sec') if has_subs else nan)} "
                f"| {fmt(med(rows, 'p50_us') if has_subs else nan)} | {fmt(med(rows, 'p99_us') if has_subs else nan)} "
                f"| {fmt(med(rows, 'p999_us') if has_subs else nan)} "
                f"| {fmt(delivery, 2) if has_subs else '—'} | {ratio(delivery, local_delivery) if two else ''} "
                f"| {pub_cell} | {ratio(publish, local_publish) if two else ''} | {adds} "
                f"| {fmt(med(rows, 'ack_p50_us'))} | {fmt(med(rows, 'ack_p99_us'))} | {lost} | {sum(r.get('errors', 0) for r in rows)} |"
            )


def churn_table(order, groups):
    """Connection churn: cycles per second, server CPU per cycle and the server's RSS growth."""
    for k in order:
        if not k.startswith("churn"):
            continue
        print()
        print(
            "| churn | server | runs | cycles | cycles/s | p50 µs | p99 µs | server CPU µs/cycle | RSS start KiB | end KiB "
            "| after close KiB | growth B/100k cycles | slope B/100k cycles | errors |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label in LABELS:
            rows = groups.get((k, label), [])
            if not rows:
                continue
            print(
                f"| {k} | {label} | {len(rows)} | {fmt(med(rows, 'ops'), 0)} | {fmt(med(rows, 'ops_per_sec'))} "
                f"| {fmt(med(rows, 'p50_us'))} | {fmt(med(rows, 'p99_us'))} | {fmt(med(rows, 'server_cpu_us_per_op'), 2)} "
                f"| {fmt(med(rows, 'rss_start_kb'), 0)} | {fmt(med(rows, 'rss_end_kb'), 0)} | {fmt(med(rows, 'rss_settled_kb'), 0)} "
                f"| {fmt(med(rows, 'rss_growth_bytes_per_100k'), 0)} | {fmt(med(rows, 'rss_slope_bytes_per_100k'), 0)} "
                f"| {sum(r.get('errors', 0) for r in rows)} |"
            )


def history_section(groups, order):
    """Each history figure of `wsguard-history` with its ratio to `wsguard` of the same run."""
    keys = [k for k in order if any(groups.get((k, label)) for label in (HISTORY,))]
    if not keys:
        return
    print()
    print(f"History ({HISTORY}: the same configuration with channel history on; ratios to wsguard, history off):")
    for k in keys:
        scenario = scenario_of(groups, k)
        rows, plain = groups.get((k, HISTORY), []), groups.get((k, "wsguard"), [])
        if scenario in OWN_TABLES or not plain:
            continue
        cpu, plain_cpu = med(rows, "server_cpu_us_per_op"), med(plain, "server_cpu_us_per_op")
        what = "delivery" if scenario.startswith("fanout") else "publish"
        p50, p99 = med(rows, "p50_us"), med(rows, "p99_us")
        print(
            f"- {k}: {fmt(cpu, 2)} µs server CPU per {what} = {ratio(cpu, plain_cpu)} wsguard's ({fmt(plain_cpu, 2)} µs); "
            f"ops/s {ratio(med(rows, 'ops_per_sec'), med(plain, 'ops_per_sec'))}; "
            f"p50 {fmt(p50)} µs ({ratio(p50, med(plain, 'p50_us'))}), p99 {fmt(p99)} µs ({ratio(p99, med(plain, 'p99_us'))})"
        )
    memory_table(groups, [k for k in keys if scenario_of(groups, k) == "history_memory"])
    recovery_table(groups, [k for k in keys if scenario_of(groups, k) == "history_recover"])


def memory_table(groups, keys):
    """Server memory per stored publication: RSS growth over the publications history stores, net of
    the growth of `wsguard` (history off) publishing the same, and the history gauge's own count."""
    for k in keys:
        print()
        print("| history memory | server | runs | published | stored | payload B | RSS growth KiB | RSS B per publication | errors |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        per_pub = {}
        for label in ("wsguard", HISTORY):
            rows = groups.get((k, label), [])
            if not rows:
                continue
            for r in rows:
                r["rss_growth_bytes"] = (r["server_rss_after_kb"] - r["server_rss_before_kb"]) * 1024
                r["rss_bytes_per_pub"] = r["rss_growth_bytes"] / r["published"] if r.get("published") else float("nan")
                if r.get("history_messages_after") is not None:
                    r["stored"] = r["history_messages_after"] - r["history_messages_before"]
                    r["gauge_bytes"] = r["history_bytes_after"] - r["history_bytes_before"]
            per_pub[label] = med(rows, "rss_bytes_per_pub")
            print(
                f"| {k} | {label} | {len(rows)} | {fmt(med(rows, 'published'), 0)} | {fmt(med(rows, 'stored'), 0)} "
                f"| {fmt(med(rows, 'payload_bytes_mean'))} | {fmt(med(rows, 'rss_growth_bytes') / 1024, 0)} "
                f"| {fmt(per_pub[label])} | {sum(r.get('errors', 0) for r in rows)} |"
            )
        rows = groups.get((k, HISTORY), [])
        if not rows:
            continue
        payload = med(rows, "payload_bytes_mean")
        per_stored = med([{"v": r["rss_growth_bytes"] / r["stored"]} for r in rows if r.get("stored")], "v")
        gauge = med([{"v": r["gauge_bytes"] / r["stored"]} for r in rows if r.get("stored")], "v")
        print()
        print(
            f"{HISTORY} {k}: {fmt(per_stored)} B of server RSS per stored publication "
            f"({ratio(per_stored, payload)} its {fmt(payload)}-byte payload); wsguard's own growth for the same "
            f"publications {fmt(per_pub.get('wsguard', float('nan')))} B each"
        )
        net = per_stored - per_pub.get("wsguard", float("nan"))
        print(
            f"  net of it: {fmt(net)} B per stored publication ({ratio(net, payload)} the payload); "
            f"wsguard_history_bytes counts {fmt(gauge)} B each (RSS / gauge {ratio(per_stored, gauge)})"
        )


def recovery_table(groups, keys):
    """Recovering N publications with `since` against receiving the same N live: time and server CPU
    per message. Live delivery's CPU is the live phase's (publish + delivery) less the publish-only
    phase's (the same N published with nobody subscribed)."""
    for k in keys:
        rows = groups.get((k, HISTORY), [])
        for r in rows:
            live, publish = r.get("live_cpu_us_per_msg"), r.get("publish_cpu_us_per_msg")
            # A failed run (errors > 0) has no figures: it is counted, not averaged.
            if isinstance(live, (int, float)) and isinstance(publish, (int, float)):
                r["delivery_cpu_us_per_msg"] = live - publish
        rec_ms, live_ms = med(rows, "recover_ms_p50"), med(rows, "live_ms_p50")
        rec_cpu, live_cpu = med(rows, "recover_cpu_us_per_msg"), med(rows, "live_cpu_us_per_msg")
        delivery_cpu, pub_cpu = med(rows, "delivery_cpu_us_per_msg"), med(rows, "publish_cpu_us_per_msg")
        print()
        print(
            "| recovery | server | runs | rounds | recover ms p50 | p99 | live ms p50 | p99 | time ratio "
            "| CPU µs per recovered | per live delivery | ratio | live incl. publish | publish only | errors |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {k} | {HISTORY} | {len(rows)} | {fmt(med(rows, 'rounds'), 0)} | {fmt(rec_ms, 2)} | {fmt(med(rows, 'recover_ms_p99'), 2)} "
            f"| {fmt(live_ms, 2)} | {fmt(med(rows, 'live_ms_p99'), 2)} | {ratio(rec_ms, live_ms)} | {fmt(rec_cpu, 2)} "
            f"| {fmt(delivery_cpu, 2)} | {ratio(rec_cpu, delivery_cpu)} | {fmt(live_cpu, 2)} | {fmt(pub_cpu, 2)} "
            f"| {sum(r.get('errors', 0) for r in rows)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
