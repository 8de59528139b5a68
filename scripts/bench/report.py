"""The report of `make bench`: the table of runs, the ratios to their twins and baselines,
the storage a create and a keyed create add to tasks, overload, cold start, idle RSS and the
targets met or missed; printed, and written whole to docs/results/bench.md unless only some
scenarios ran."""

import statistics
import time

from harness.report import command, machine, write

from .workloads import (BASELINES, BINARY, CONNECTIONS, ONLY, OVERLOAD, OVERLOAD_P99, OVERLOAD_RSS, POOLED,
                        ROUNDS, SCENARIOS, SECONDS, STANDBY_CPU, STANDBY_SHARE, TWINS, VARIANTS, VIA_PGBOUNCER,
                        VIA_STANDBY, WARMUP)

STANDBY = f"get_by_id {VIA_STANDBY}"

# The variables that change what `make bench` measures, named in the report's command.
VARIABLES = ["BENCH_SECONDS", "BENCH_WARMUP", "BENCH_CONNECTIONS", "BENCH_BINARY", "BENCH_ENV", "BENCH_QUICK",
             "BENCH_ONLY", "BENCH_CURVE", "BENCH_CURVE_SECONDS", "BENCH_PAIRS", "BENCH_PAIR_SECONDS",
             "BENCH_VARIANTS", "BENCH_ROUNDS"]


def ratio_of(bench, name, connections):
    """A scenario's req/s over its twin's (or its baseline's), and the least wanted; for
    STANDBY, its server CPU per request over get_by_id's from the primary."""
    key = "rps"
    if name in BASELINES:
        other, least = BASELINES[name]
    elif name.endswith(VIA_PGBOUNCER):  # its cost: no target
        other, least = name.removesuffix(" " + VIA_PGBOUNCER), None
    elif name == STANDBY:  # its target is a most: see report
        other, least, key = "get_by_id", None, "cpu_us"
    else:
        other, least = TWINS[name][0], 1.5 if name == "get_by_id" else 1.0
    mine, theirs = bench.results.get((name, connections)), bench.results.get((other, connections))
    if not mine or not theirs:
        return None
    return other, mine[key] / theirs[key], least


def report(bench, cold_ms, idle_mib):
    """Prints the report of `bench`'s runs, and writes it to docs/results/bench.md."""
    out = ["| scenario | conns | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
           "| peak RSS MiB | requests per statement |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, connections, r in bench.rows:
        cpu_us = f"{r['cpu_us']:.1f}" if r["cpu_us"] is not None else "—"
        rss = f"{r['peak_rss']:.1f}" if r["peak_rss"] is not None else "—"
        batch = f"{r['batch']:.1f}" if r["batch"] is not None else "—"
        out.append(f"| {name} | {connections} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                   f"| {r['errors']} | {cpu_us} | {rss} | {batch} |")
    out.append("")
    ratios, standby = {}, []
    for connections in CONNECTIONS:
        parts = []
        pooled = [f"{name} {VIA_PGBOUNCER}" for name in POOLED]
        for name in SCENARIOS + pooled + [STANDBY]:
            compared = name in TWINS or name in BASELINES or name in pooled or name == STANDBY
            ratio = ratio_of(bench, name, connections) if compared else None
            if ratio:
                other, value, least = ratio
                what = ", server CPU per request" if name == STANDBY else ""
                pairs = sorted(bench.pairs.get((name, connections), []))
                if pairs:
                    # The target is judged on the pairs run in turn.
                    median = statistics.median(pairs)
                    parts.append(f"{name} ÷ {other}{what} = **{median:.2f}** (median of {len(pairs)} "
                                 f"pairs in turn, {pairs[0]:.2f}–{pairs[-1]:.2f}; "
                                 f"{value:.2f} in the table)")
                    value = median
                else:
                    parts.append(f"{name} ÷ {other}{what} = **{value:.2f}**")
                if name == STANDBY:
                    standby.append((value, connections))
                    parts[-1] += f", {bench.standby_share * 100:.1f} % of its reads served by the standby"
                if least is not None:
                    ratios.setdefault((name, other, least), []).append((value, connections))
        if parts:
            out.append(f"- {connections} connections: " + ", ".join(parts))
        storage = [bench.storage[n, connections] for n in ("create", "keyed_create")
                   if (n, connections) in bench.storage]
        if len(storage) == 2 and None not in storage:
            plain, keyed = storage
            rate = bench.results["keyed_create", connections]["rps"]
            out.append(f"- storage, {connections} connections: a create grows tasks by {plain:.0f} bytes (table "
                       f"and indexes, after VACUUM), a keyed create by {keyed:.0f} bytes: a key costs "
                       f"{keyed - plain:.0f} bytes; at the keyed run's {rate:.0f} creates/s, tasks grows "
                       f"{keyed * rate / 1e6:.1f} MB a second")
        elif None in storage:
            out.append(f"- storage, {connections} connections: not measured, as tasks had had updates or "
                       "deletes (the runs before), whose space creates reuse")
    for connections in OVERLOAD:
        r = bench.results.get(("get_by_id", connections))
        if r:
            connect, read, written, timeout = r["socket"]
            out.append(f"- overload, get_by_id at {connections} connections: socket errors "
                  f"{sum(r['socket'])} (connect {connect}, read {read}, write {written}, "
                  f"timeout {timeout}), non-2xx {r['non_2xx']} of {r['requests']} answers "
                  f"({r['answered']:.0f}/s; {r['over_capacity']} connections over "
                  f"MAX_CONNECTIONS), p99 {r['p99']:.1f} ms, peak RSS {r['peak_rss']:.1f} MiB")
    out.append(f"- cold start (spawn → first 200 on /health, migrations applied): **{cold_ms:.1f} ms**")
    out.append(f"- idle RSS: **{idle_mib:.1f} MiB**")
    took = time.perf_counter() - bench.started
    out += [f"- the whole run took {took:.0f} s", "", "Targets:", ""]

    def target(label, values, ok, form):
        """One line of the targets: the numbers, by connections, and met or missed."""
        if not values:
            return
        shown = ", ".join(form.format(v) + (f" at {c}" if c else "") for v, c in values)
        out.append(f"- {label}: {shown}: {'met' if all(ok(v) for v, _ in values) else '**missed**'}")

    for (name, other, least), values in ratios.items():
        target(f"{name} ≥ {least} × {other}", values, lambda v: v >= least, "{:.2f}")
    target(f"{STANDBY} ≤ {STANDBY_CPU:.2f} × the primary's server CPU per request", standby,
           lambda v: v <= STANDBY_CPU, "{:.2f}")
    target(f"{STANDBY}: ≥ {STANDBY_SHARE * 100:.0f} % of its reads served by the standby",
           [(bench.standby_share * 100, CONNECTIONS[0])] if bench.standby_share is not None else [],
           lambda v: v >= STANDBY_SHARE * 100, "{:.1f} %")
    cpu = [("get_by_id", 15), ("list", 40), ("list_status", 40)]
    for name, most in cpu:
        values = [(bench.results[name, c]["cpu_us"], c) for c in CONNECTIONS if (name, c) in bench.results]
        target(f"server CPU ≤ {most} µs per {name}", values, lambda v: v <= most, "{:.1f} µs")
    overload = [(bench.results["get_by_id", c], c) for c in OVERLOAD if ("get_by_id", c) in bench.results]
    target("0 socket errors under overload", [(sum(r["socket"]), c) for r, c in overload],
           lambda v: v == 0, "{}")
    target(f"p99 of get_by_id ≤ {OVERLOAD_P99} ms under overload", [(r["p99"], c) for r, c in overload],
           lambda v: v <= OVERLOAD_P99, "{:.1f} ms")
    target(f"peak RSS ≤ {OVERLOAD_RSS} MiB under overload", [(r["peak_rss"], c) for r, c in overload],
           lambda v: v <= OVERLOAD_RSS, "{:.1f} MiB")
    target("cold start ≤ 50 ms", [(cold_ms, None)], lambda v: v <= 50, "{:.1f} ms")
    target("idle RSS ≤ 10 MiB", [(idle_mib, None)], lambda v: v <= 10, "{:.1f} MiB")

    heading = (f"`make bench` on {machine()}, {SECONDS} s per run after {WARMUP} s warm-up; wrk, pgbench, "
               "PostgreSQL and task-api share the machine.")
    print(f"\n{heading}\n")
    print("\n".join(out))
    if set(ONLY) != set(SCENARIOS):
        print("\nbench: BENCH_ONLY or BENCH_QUICK runs a subset: docs/results/bench.md is left as it was")
        return
    how = command("bench", VARIABLES)
    title = (f"make bench: task-api against pgbench on one machine, {SECONDS} s per run after {WARMUP} s "
             "warm-up; wrk, pgbench, PostgreSQL and task-api share it")
    print(f"\nbench: wrote {write('bench.md', title, BINARY, how, out, took)}")


def span(values, form="{:.1f}"):
    """The least and the most of `values`, as `form` writes them: "1.0–2.0"."""
    return f"{form.format(min(values))}–{form.format(max(values))}"


def by_variant(runs):
    """[(variant, [what each of its runs measured])], from [(variant, what a run measured)]."""
    return [(label, [measured for other, measured in runs if other == label]) for label, _ in VARIANTS]


def written_in_turn(tool, what, out, took, after=""):
    """Prints the report `out` of `python3 -m bench <tool>` and writes it to docs/results/<tool>.md."""
    title = (f"make bench-{tool}: {what}, {ROUNDS} round{'s' * (ROUNDS != 1)} of {len(VARIANTS)} "
             f"variant{'s' * (len(VARIANTS) != 1)} in turn{after}")
    print(f"\n{title}\n")
    print("\n".join(out))
    how = command(f"bench-{tool}", VARIABLES)
    print(f"\nbench: wrote {write(f'{tool}.md', title, BINARY, how, out, took)}")


def overload_report(runs, connections, took):
    """Prints the runs of `python3 -m bench overload` ([(variant, result)], in the order run),
    one row each and a line per variant, and writes them to docs/results/overload.md."""
    mean_wait = lambda r: connections / max(r["rps"], 1) * 1000  # ms, in a closed loop (Little's law)
    out = ["| round | variant | req/s | p50 ms | p99 ms | spread | errors | peak RSS MiB |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for i, (label, r) in enumerate(runs):
        out.append(f"| {i // len(VARIANTS) + 1} | {label} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
                   f"| {r['p99'] / mean_wait(r):.2f} | {r['errors']} | {r['peak_rss']:.1f} |")
    out += ["", f"The spread is the p99 over the mean wait, {connections:,} connections ÷ req/s: the p99 "
            "is that wait times the spread.", ""]
    for label, mine in by_variant(runs):
        out.append(f"- {label}, {len(mine)} runs: p99 ≤ {OVERLOAD_P99} ms in "
                   f"{sum(r['p99'] <= OVERLOAD_P99 for r in mine)}, peak RSS ≤ {OVERLOAD_RSS} MiB in "
                   f"{sum(r['peak_rss'] <= OVERLOAD_RSS for r in mine)}, 0 errors in "
                   f"{sum(r['errors'] == 0 for r in mine)}; req/s {span([r['rps'] / 1000 for r in mine], '{:.1f}')} k, "
                   f"p99 {span([r['p99'] for r in mine], '{:.1f}')} ms, spread "
                   f"{span([r['p99'] / mean_wait(r) for r in mine], '{:.2f}')}, peak RSS "
                   f"{span([r['peak_rss'] for r in mine], '{:.1f}')} MiB")
    written_in_turn("overload", f"get_by_id at {connections:,} connections", out, took,
                    f", {SECONDS} s per run after {WARMUP} s warm-up")


def memory_report(runs, connections, took):
    """Prints the runs of `python3 -m bench memory` ([(variant, (RSS KiB by state, requests in
    flight, peak KiB, answers))], in the order run), one row each and a line per variant, and
    writes them to docs/results/memory.md."""
    mib = lambda kib: f"{kib / 1024:.1f}"
    each = lambda rss, state: (rss[state] - rss["idle"]) / connections  # KiB per connection
    out = ["| round | variant | idle MiB | kept alive MiB | KiB each | waiting MiB | KiB each | in flight | peak MiB "
           "| answers |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, (label, (rss, waited, peak, answers)) in enumerate(runs):
        answered = ", ".join(f"{n} × {what}" for what, n in sorted(answers.items()))
        out.append(f"| {i // len(VARIANTS) + 1} | {label} | {mib(rss['idle'])} | {mib(rss['kept alive'])} "
                   f"| {each(rss, 'kept alive'):.1f} | {mib(rss['waiting'])} | {each(rss, 'waiting'):.1f} "
                   f"| {'?' if waited is None else f'{waited:.0f}'} | {mib(peak)} | {answered} |")
    out += ["", f"Each server started for its run. Idle: a second after it is ready. Kept alive: a second after "
            f"{connections:,} connections each had one get answered. Waiting: a second after all but one of them "
            "sent another while `tasks` was locked (3 s); \"in flight\" is how many requests the server's /metrics "
            "(asked on the one left) then counted, itself aside. \"KiB each\" is the RSS over idle, per connection.", ""]
    for label, mine in by_variant(runs):
        out.append(f"- {label}, {len(mine)} runs: KiB per connection kept alive "
                   f"{span([each(rss, 'kept alive') for rss, *_ in mine])}, waiting "
                   f"{span([each(rss, 'waiting') for rss, *_ in mine])}; peak RSS "
                   f"{span([peak / 1024 for _, _, peak, _ in mine])} MiB")
    written_in_turn("memory", f"what {connections:,} connections hold", out, took)
