"""The realistic suite of the whole-run harness: tables shaped like warehouse exports.

`pipeline-datagen realistic` writes them: a 20-character string `customer_id` in random
order, emails on many domains, names in many scripts, low-cardinality strings, a float with
ties, a decimal, a timestamp with a zone, a date and a boolean, in files of 262,144 rows with
row groups of 131,072 (snappy). 1.4% of the profiles are segment members.

Each case is a segment shape, its selectivity and the export's `order_by`. For each, the
dry run, the DuckDB and pandas peers (`benches/peers.py`, same bodies, checked contact by
contact) and the decode floor (DuckDB reading every value of the columns the export reads,
with no filter) run in turn, `--repeat` times (once at 100M rows).
"""

import os
import re
import shutil
import subprocess
import sys

import harness
from harness import (BENCH, PANDAS_MAX_ROWS, compare, contacts_of, dry_run, log, measure,
                     median, pipeline_file, repetitions)

MEMBER_SHARE = 0.014
ORDERS = ["customer_id", "last_seen_at DESC", "lifetime_value DESC"]
# (shape, share of the profiles the segment selects, order_by)
CASES = ([("membership", MEMBER_SHARE, order) for order in ORDERS]
         + [("filter", MEMBER_SHARE, order) for order in ORDERS]
         + [("filter", 0.001, "customer_id"), ("filter", 0.10, "customer_id")])
MEMBERSHIP = ("SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id "
              "WHERE m.segment_name IN ('vip', 'newsletter', 'winback')")
# The generator's lifetime values are uniform over [0, 20000) and present in 98% of rows;
# 75% of profiles are subscribed.
FILTERABLE = 0.98 * 0.75

DRY = "pipeline dry run"
FLOOR = "decode floor (DuckDB)"
# The targets: the filter's time over the decode floor, and every case's peak RSS.
FLOOR_BAR = 1.15
RSS_BAR_MIB = 256
TOOLS = [DRY, "DuckDB", "pandas", FLOOR]


def min_ltv(share):
    """The `lifetime_value` threshold that, with `is_subscribed`, selects `share` of rows."""
    return round(20000 * (1 - share / FILTERABLE), 2)


def label(case):
    shape, share, order = case
    return f"{shape} {share * 100:g}%, order_by {order}"


def generate(bins, rows):
    return harness.generate(bins, f"realistic-rows-{rows}", "realistic", rows,
                            "--member-share", str(MEMBER_SHARE))


def case_file(data, rows, case):
    """The case's pipeline file and its slug (its name in BENCH/out)."""
    shape, share, order = case
    segments = ({"members": MEMBERSHIP} if shape == "membership" else
                {"valuable": f"SELECT * FROM profiles WHERE lifetime_value >= {min_ltv(share)} "
                             "AND is_subscribed"})
    slug = f"{shape}-{share:g}-{order.replace(' ', '-').lower()}"
    return pipeline_file(f"realistic-{rows}-{slug}", data, segments, order=order), slug


def run_case(bins, data, rows, case, repeat, peers_script, env):
    shape, share, order = case
    dry_file, slug = case_file(data, rows, case)
    peer_args = ["--shape", shape, "--data", data, "--order", order, "--min-ltv",
                 str(min_ltv(share))]
    peers = [("duckdb", "DuckDB")] + ([("pandas", "pandas")] if rows <= PANDAS_MAX_ROWS else [])
    results = {DRY: [], FLOOR: []} | {l: [] for _, l in peers}
    contacts = None
    repeat = repetitions(rows, repeat)
    for r in range(repeat):
        log(f"{rows:,} realistic rows, {label(case)}: repetition {r + 1} of {repeat}")
        out = os.path.join(BENCH, "out", f"realistic-{rows}-{slug}")
        shutil.rmtree(out, ignore_errors=True)
        measured, mine = dry_run(bins, dry_file, os.path.join(out, "pipeline"),
                                 os.path.join(out, "state"), env)
        results[DRY].append(measured)
        contacts = len(mine)
        for peer, name in peers:
            dest = os.path.join(out, peer)
            results[name].append(measure([sys.executable, peers_script, peer, *peer_args,
                                          "--out", dest], env))
            compare(mine, contacts_of(dest), f"{name} ({label(case)})")
        results[FLOOR].append(measure(
            [sys.executable, peers_script, "floor", *peer_args, "--out", out], env))
    return results, contacts


# The cases `perf` profiles (the filter that misses its floor target, and the join), at
# PROFILE_ROWS, once each; the report lists each one's top entries.
PROFILED = [("filter", 0.10, "customer_id"), ("membership", MEMBER_SHARE, "customer_id")]
PROFILE_ROWS = 10_000_000
TOP = 15


def profile(bins, case, env):
    """`perf record` of one dry run of case: its top symbols by self time and the same time
    by library, each as [(percent, name)]."""
    data = generate(bins, PROFILE_ROWS)
    dry_file, slug = case_file(data, PROFILE_ROWS, case)
    out = os.path.join(BENCH, "out", f"profile-{PROFILE_ROWS}-{slug}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    record = os.path.join(out, "perf.data")
    log(f"Profiling {label(case)} at {PROFILE_ROWS:,} rows")
    # The shipped binary is stripped: the release build's symbols name the functions.
    subprocess.run(["perf", "record", "-q", "-F", "999", "-o", record, "--",
                    bins["pipeline-release"],
                    "run", dry_file, "--dry-run", os.path.join(out, "pipeline"), "--state-dir",
                    os.path.join(out, "state")], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = subprocess.run(["perf", "report", "-i", record, "--stdio", "--no-children", "--sort",
                           "sym", "-q", "--percent-limit", "0"],
                          capture_output=True, text=True, check=True).stdout
    # One row per name: the kernel's functions count as one, and so do the copies of a
    # generic function that differ only in their symbol's hash.
    by_name = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*\S)", line)
        if m:
            name = re.sub(r"::h[0-9a-f]{16}$", "", m.group(3))
            name = "kernel" if m.group(2) == "k" else name
            by_name[name] = by_name.get(name, 0) + float(m.group(1))
    libraries = {}
    for name, percent in by_name.items():
        libraries[library(name)] = libraries.get(library(name), 0) + percent
    symbols = sorted(((p, n) for n, p in by_name.items()), reverse=True)
    by_library = sorted(((p, n) for n, p in libraries.items()), reverse=True)
    return symbols[:TOP], by_library[:TOP]


def library(symbol):
    """The crate a symbol's code comes from, as far as its name tells."""
    if symbol == "kernel":
        return "kernel"
    name = symbol.lstrip("<")
    if "::" not in name:
        return "libc (memcpy, memcmp, malloc, …)" if not name.startswith("0x") else "unknown"
    crate = name.split("::", 1)[0].split(" ", 1)[0]
    return "Rust core, alloc, std" if crate in ("core", "alloc", "std") else crate


def profile_report(profiles):
    """The profiles' part of the suite's section, as lines."""
    lines = ["", "### Where the time goes", "",
             f"`perf record -F 999` of one dry run per case at {PROFILE_ROWS:,} rows (both cores' "
             "samples, self time). The first table names the functions, the second adds them "
             "up by the crate their code comes from (generic code counts where it is "
             "instantiated from: a sort's comparisons show as Rust core)."]
    for case, (symbols, by_library) in profiles.items():
        lines += ["", f"{label(case)}:", "", "| self % | function |", "|---:|---|"]
        for percent, name in symbols:
            short = name if len(name) <= 110 else name[:109] + "…"
            lines.append(f"| {percent:.1f} | `{short}` |")
        lines += ["", "| self % | crate |", "|---:|---|"]
        lines += [f"| {p:.1f} | {n} |" for p, n in by_library[:8]]
    return lines


def run(bins, sizes, repeat, peers_script, env):
    """Every case at every size: {(rows, case): (results, contacts)}."""
    table = {}
    for rows in sizes:
        data = generate(bins, rows)
        for case in CASES:
            table[(rows, case)] = run_case(bins, data, rows, case, repeat, peers_script, env)
    return table


def report(table, profiles):
    """The suite's section of docs/performance.md, as lines."""
    lines = [
        "## Realistic tables",
        "",
        __doc__.split("\n\n", 1)[1].strip(),
        "",
        "The decode floor reads the mapped columns and the `order_by` column of every row;",
        "the export reads those (and the filter's columns) but decodes the mapped ones only",
        "for the rows the filter keeps.",
        "",
        "| rows | case | tool | wall s | peak RSS MiB |",
        "|---:|---|---|---:|---:|",
    ]
    for (rows, case), (results, _) in table.items():
        for tool in TOOLS:
            if tool in results:
                runs = results[tool]
                lines.append(f"| {rows:,} | {label(case)} | {tool} | "
                             f"{median([w for w, _ in runs]):.2f} | "
                             f"{max(m for _, m in runs):.0f} |")
    lines += ["", "### Targets on realistic tables", "",
              "| rows | case | contacts | dry run / DuckDB (< 1; membership ≤ 0.5) | "
              f"dry run / decode floor (filter ≤ {FLOOR_BAR}) | dry run / pandas (≤ 0.2) | "
              f"peak RSS MiB (≤ {RSS_BAR_MIB}) |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for (rows, case), (results, contacts) in table.items():
        def ratio(peer, limit, strict=False):
            if peer not in results:
                return "not run"
            v = median_ratio(results, peer)
            good = v < limit if strict else v <= limit
            return f"{v:.2f} {'✅' if good else '❌'}"

        duck = ratio("DuckDB", 0.5) if case[0] == "membership" else ratio("DuckDB", 1, True)
        floor = (ratio(FLOOR, FLOOR_BAR) if case[0] == "filter" else
                 ratio(FLOOR, float("inf")).replace(" ✅", ""))
        rss = peak(results)
        lines.append(f"| {rows:,} | {label(case)} | {contacts:,} | {duck} | {floor} | "
                     f"{ratio('pandas', 0.2)} | {rss:.0f} {'✅' if rss <= RSS_BAR_MIB else '❌'} |")
    lines += misses(table)
    if profiles:
        lines += profile_report(profiles)
    return lines


# What stands behind a target this suite's cases are known to miss, said only when a run
# misses it.
FLOOR_MISS = """The filter at 10% is over its floor because the floor decodes the columns and
does nothing else. At 10% the filter keeps a tenth of the rows, and each of them is work
the floor does not do: its mapped values are normalised and checked, its email is hashed
and counted for the cap's verdict, and its `order_by` key goes through the cap's cut, which
lets about `cap × (1 + ln(kept / cap))` rows (a third of them at 10M rows) into the sort by the
export's full order. In a call-graph profile (`perf record --call-graph dwarf`) the
projection that normalises the fields and the contacts' sort are each about an eighth of
the samples. The scan itself costs what the floor costs: the kept rows sit in every page,
so every page of the mapped columns is decompressed (snappy) and decoded through a row
mask, the copies that put `memmove` at the top of the profile below. Deciding the cut
inside the scan, before the mapped columns are decoded, would close most of the gap, but
the counts of rejects and distinct emails are taken over every kept row, so the mapped
columns of every kept row are needed today."""

JOIN_RSS_MISS = """The membership shape at 100M rows peaks above 256 MiB because of its join:
DataFusion builds one hash table from the membership side (a `CollectLeft` join, which
cannot spill), and that side holds the members' 20-character ids, ten times more of them
than at 10M rows. Every peak also counts the pages of the binary's code that the run
touched."""


def median_ratio(results, peer):
    """The median, repetition by repetition, of the dry run's time over `peer`'s."""
    return median([o[0] / t[0] for o, t in zip(results[DRY], results[peer])])


def peak(results):
    """The dry run's highest peak RSS over the repetitions, in MiB."""
    return max(m for _, m in results[DRY])


def misses(table):
    """The notes for the targets this run missed, as lines."""
    notes = []
    if any(case[0] == "filter" and FLOOR in results and median_ratio(results, FLOOR) > FLOOR_BAR
           for (_, case), (results, _) in table.items()):
        notes.append(FLOOR_MISS)
    if any(case[0] == "membership" and peak(results) > RSS_BAR_MIB
           for (_, case), (results, _) in table.items()):
        notes.append(JOIN_RSS_MISS)
    return [line for note in notes for line in ["", *note.splitlines()]]
