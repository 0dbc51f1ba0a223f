"""Whole-run benchmark: pipeline against DuckDB and pandas on the same generated data.

    python3 benches/whole_run.py                 # 1M and 10M rows, writes docs/performance.md
    python3 benches/whole_run.py --with-100m     # also 100M rows (about 7 GB of Parquet)
    python3 benches/whole_run.py --sizes 1000000 --repeat 1 --out /tmp/perf.md   # quick look

It builds the binaries (`pipeline` with `--profile dist`, as users ship it), installs DuckDB, pandas and pyarrow into a private virtual
environment under target/bench/, generates the profile and membership tables with the
repo's generator (kept between runs), and for each size and segment shape runs, in turn
and `--repeat` times (once at 100M rows): `pipeline run --dry-run`, the DuckDB peer, the pandas peer, and a
full `pipeline run` against the SendGrid emulator (import delay 0). Each process's wall
time and peak RSS are measured from outside (wait4). Ratios are taken pair by pair within
a repetition, then the median, so a noisy moment hits both sides of a ratio. The request
bodies of every peer are checked against pipeline's, contact by contact.

At 10M rows the dry run also reads the same tables from a local S3 server (moto, on
loopback, started by the harness), to compare an object-store source with local disk.

The cluster suite (`benches/cluster.py`) builds `pipeline` a second time with `--features
cluster`, starts a scheduler and two executors on loopback, and runs the friendly 10M
export with its selection on them beside the local run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import cluster
import harness
import realistic
from harness import (BENCH, KEY, LIST_ID, PANDAS_MAX_ROWS, ROOT, build, compare, contacts_of,
                     dry_run, ensure_venv, log, machine, measure, median, pipeline_file, repetitions,
                     start_runner)

MEMBER_SHARE = "0.011"
# The large-plan case: a cap that never binds on the 10M table, so every member is sorted
# and kept; peak RSS must stay within the engine's memory limit plus 64 MiB.
LARGE_CAP = 5_000_000
MEMORY_LIMIT_MIB = 256
# The sizes whose dry run is also measured with the tables in the local S3 server.
S3_SIZES = {10_000_000}
S3_LABEL = "pipeline dry run, tables on S3 (moto)"
# The table the cluster suite runs on (friendly).
CLUSTER_ROWS = 10_000_000
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
          "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def generate(bins, rows):
    files = str(max(1, rows // 1_250_000))
    return harness.generate(bins, f"rows-{rows}", "profiles", rows, "--files", files,
                            "--member-share", MEMBER_SHARE)


SEGMENTS = {
    # The members of three overlapping segment names, with repeated membership rows: one
    # join, as the peers write it.
    "membership": {
        "members": "SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id "
                   "WHERE m.segment_name IN ('vip', 'newsletter', 'winback')"
    },
    # The same export as three segments, one per name: three joins (pipeline only).
    "membership-3": {
        name: f"SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id "
              f"WHERE m.segment_name = '{name}'"
        for name in ["vip", "newsletter", "winback"]
    },
    "filter": {"valuable": "SELECT * FROM profiles WHERE lifetime_value >= 19750 AND is_subscribed"},
    # Two broad, overlapping segments (pipeline only): most rows are contacts, far past the
    # cap, and every row is read back to count each segment's contacts.
    "broad-2": {"subscribed": "SELECT * FROM profiles WHERE is_subscribed",
                "valuable": "SELECT * FROM profiles WHERE lifetime_value >= 10000"},
}
# The broad case runs up to this many rows.
BROAD_MAX_ROWS = 10_000_000
BROAD_LABEL = "pipeline dry run, 2 broad segments"


def friendly_file(data, shape, endpoint, max_profiles=100_000, storage=None):
    suffix = (("-full" if endpoint else "") + (f"-cap{max_profiles}" if max_profiles != 100_000 else "")
              + ("-s3" if storage else ""))
    return pipeline_file(f"{shape}-{os.path.basename(data)}{suffix}", data, SEGMENTS[shape],
                         endpoint, max_profiles, storage)


def start_emulator(bins):
    proc = subprocess.Popen(
        [bins["sendgrid-emulator"], "--key", KEY, "--list", f"{LIST_ID}=bench",
         "--field", "lifetime_value=Number", "--import-delay-ms", "0",
         "--rate-limit", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    return proc, url


class S3Server:
    """moto's S3 server on loopback (the tests' own script), holding the bench tables."""

    def __init__(self):
        script = os.path.join(ROOT, "crates", "cli", "tests", "support", "s3_server.py")
        self.proc = subprocess.Popen([sys.executable, script, "bench"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.endpoint = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.storage = f'{{ endpoint: "{self.endpoint}", allow_http: true }}'
        self.uploaded = set()

    def upload(self, data):
        """Copies the table folder `data` to s3://bench/<its name>/ once; returns that URL."""
        name = os.path.basename(data)
        if name not in self.uploaded:
            import boto3
            log(f"Uploading {data} to the S3 server")
            s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
            for folder, _, files in os.walk(data):
                for f in files:
                    if f.endswith(".parquet"):
                        path = os.path.join(folder, f)
                        s3.upload_file(path, "bench", f"{name}/{os.path.relpath(path, data)}")
            self.uploaded.add(name)
        return f"s3://bench/{name}"

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def run_size(bins, rows, shape, repeat, peers_script, s3):
    data = generate(bins, rows)
    dry_file = friendly_file(data, shape, None)
    emulator, url = start_emulator(bins)
    full_file = friendly_file(data, shape, url)
    env = dict(os.environ, SENDGRID_API_KEY=KEY, PIPELINE_LOG="warn")
    peers = [("duckdb", "DuckDB")] + ([("pandas", "pandas")] if rows <= PANDAS_MAX_ROWS else [])
    results = {k: [] for k in ["pipeline dry run", "pipeline full run"] + [l for _, l in peers]}
    large = friendly_file(data, shape, None, LARGE_CAP) if rows == 10_000_000 else None
    if large:
        results[f"pipeline dry run, max_profiles {LARGE_CAP:,}"] = []
    on_s3 = (friendly_file(s3.upload(data), shape, None, storage=s3.storage)
             if rows in S3_SIZES else None)
    if on_s3:
        results[S3_LABEL] = []
    broad = (friendly_file(data, "broad-2", None)
             if shape == "filter" and rows <= BROAD_MAX_ROWS else None)
    if broad:
        results[BROAD_LABEL] = []
    three = friendly_file(data, "membership-3", None) if shape == "membership" else None
    if three:
        results["pipeline dry run, 3 segments"] = []
    contacts = None
    try:
        repeat = repetitions(rows, repeat)
        for r in range(repeat):
            log(f"{rows:,} rows, {shape}: repetition {r + 1} of {repeat}")
            out = os.path.join(BENCH, "out", f"{shape}-{rows}")
            shutil.rmtree(out, ignore_errors=True)
            state = os.path.join(out, "state")
            measured, mine = dry_run(bins, dry_file, os.path.join(out, "pipeline"), state, env)
            results["pipeline dry run"].append(measured)
            contacts = len(mine)
            if three:
                split = os.path.join(out, "pipeline-3")
                results["pipeline dry run, 3 segments"].append(measure(
                    [bins["pipeline"], "run", three, "--dry-run", split, "--state-dir", state],
                    env))
                compare(mine, contacts_of(os.path.join(split, "bench")), "three segments")
            if on_s3:
                remote = os.path.join(out, "pipeline-s3")
                results[S3_LABEL].append(measure(
                    [bins["pipeline"], "run", on_s3, "--dry-run", remote, "--state-dir", state],
                    dict(env, **S3_ENV)))
                compare(mine, contacts_of(os.path.join(remote, "bench")), "tables on S3")
            if broad:
                results[BROAD_LABEL].append(measure(
                    [bins["pipeline"], "run", broad, "--dry-run", os.path.join(out, "broad"),
                     "--state-dir", state], env))
            if large:
                results[f"pipeline dry run, max_profiles {LARGE_CAP:,}"].append(measure(
                    [bins["pipeline"], "run", large, "--dry-run", os.path.join(out, "large"),
                     "--state-dir", state], env))
            for peer, label in peers:
                dest = os.path.join(out, peer)
                results[label].append(measure(
                    [sys.executable, peers_script, peer, "--shape", shape, "--data", data,
                     "--out", dest], env))
                compare(mine, contacts_of(dest), label)
            results["pipeline full run"].append(measure(
                [bins["pipeline"], "run", full_file, "--state-dir",
                 os.path.join(out, f"full-state-{r}"), "--rejects-dir", out], env))
    finally:
        emulator.terminate()
        emulator.wait()
    return results, contacts


def encoder_rate():
    """The criterion encoder benchmark's median throughput, in contacts per second."""
    log("Running the encoder micro-benchmark")
    run = subprocess.run(["cargo", "bench", "-p", "pipeline-sink", "--bench", "encoder", "--",
                          "--noplot"], cwd=ROOT, capture_output=True, text=True, check=True)
    for line in run.stdout.splitlines():
        if "thrpt:" in line:
            parts = line.split("[")[1].split("]")[0].split()
            value, unit = float(parts[2]), parts[3]
            scale = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}[unit]
            return value * scale
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--with-100m", action="store_true")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "performance.md"))
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-profile", action="store_true",
                   help="do not profile the realistic suite's cases with perf")
    p.add_argument("--suites", default="realistic,friendly,cluster",
                   help="which suites to run: realistic, friendly, cluster (comma-separated)")
    p.add_argument("--realistic-sizes", default="10000000")
    args = p.parse_args()
    start_runner()
    ensure_venv()
    suites = args.suites.split(",")
    bins = build(cluster="cluster" in suites)
    sizes = [int(s) for s in args.sizes.split(",")] if "friendly" in suites else []
    real_sizes = ([int(s) for s in args.realistic_sizes.split(",")]
                  if "realistic" in suites else [])
    if args.with_100m:
        sizes += [100_000_000] if sizes else []
        real_sizes += [100_000_000] if real_sizes else []
    peers_script = os.path.join(ROOT, "benches", "peers.py")
    env = dict(os.environ, SENDGRID_API_KEY=KEY, PIPELINE_LOG="warn")
    real = realistic.run(bins, real_sizes, args.repeat, peers_script, env)
    profiles = {}
    if real and not args.skip_profile:
        if shutil.which("perf"):
            profiles = {case: realistic.profile(bins, case, env) for case in realistic.PROFILED}
        else:
            log("perf is not installed: the report has no profile (see --skip-profile)")
    table = {}
    s3 = S3Server() if S3_SIZES & set(sizes) else None
    try:
        for rows in sizes:
            for shape in ["membership", "filter"]:
                table[(rows, shape)] = run_size(bins, rows, shape, args.repeat, peers_script, s3)
    finally:
        if s3:
            s3.close()
    clustered = None
    if "cluster" in suites:
        rows = CLUSTER_ROWS
        segments = {shape: SEGMENTS[shape] for shape in ["membership", "filter"]}
        clustered = (rows, *cluster.run(bins, generate(bins, rows), segments, args.repeat, env))
    encoder = None if args.skip_micro else encoder_rate()
    write_report(args, table, real, profiles, clustered, encoder)


# Why the S3 dry run differs from the local one (see the figures above).
S3_NOTE = """The S3 case reads the same Parquet files from moto, an S3 server written in Python,
over HTTP on loopback. Nothing is copied down: pipeline lists the prefix, reads each
file's footer, and then fetches only the byte ranges of the column chunks the segment
needs, as it does from local disk, but each range is a GET that moto answers from one
Python process that shares the machine's two cores with pipeline. The difference is that
server's cost per request and per byte, not pipeline's: a real S3 bucket in the same
region serves ranges in parallel at far higher throughput and adds latency instead."""


def write_report(args, table, real, profiles, clustered, encoder):
    lines = [
        "# Performance",
        "",
        "Written by `python3 benches/whole_run.py"
        + (f" --sizes {args.sizes}" if args.sizes != "1000000,10000000" else "")
        + (" --with-100m" if args.with_100m else "")
        + (f" --repeat {args.repeat}" if args.repeat != 3 else "")
        + (f" --suites {args.suites}" if args.suites != "realistic,friendly,cluster" else "")
        + (f" --realistic-sizes {args.realistic_sizes}" if args.realistic_sizes != "10000000" else "")
        + "` on " + machine() + ", " + time.strftime("%Y-%m-%d") + ".",
        "",
        "`pipeline` is the binary a user ships (`--profile dist`: fat link-time",
        "optimisation, stripped); the profiles below run the release build, whose symbols",
        "name the functions.",
        "",
        "Each figure is the median of the repetitions (one at 100M rows); ratios are taken",
        "pair by pair within a",
        "repetition (pipeline's time over the peer's), then the median. Peak RSS is the",
        "process's maximum resident set, read with wait4 by a small runner process (a child",
        "of the harness itself would report the harness's own peak when its own is lower).",
        "Every peer's request bodies were",
        "checked against pipeline's, contact by contact. The full run goes to the SendGrid",
        "emulator (import delay 0) over loopback and includes following the import jobs.",
        "",
    ]
    if real:
        lines += realistic.report(real, profiles) + [""]
    if table:
        lines += friendly_report(table)
    if clustered:
        lines += [""] + cluster.report(*clustered)
    if encoder:
        lines += ["", f"Encoder micro-benchmark (`cargo bench -p pipeline-sink --bench encoder`): "
                      f"{encoder / 1e6:.2f} million contacts per second on one core "
                      f"({'✅' if encoder >= 1.5e6 else '❌'} target 1.5 million)."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"Wrote {args.out}")


def friendly_report(table):
    """The friendly suite's section of docs/performance.md, as lines."""
    lines = [
        "## Friendly tables",
        "",
        "The generator's first table (`pipeline-datagen profiles`): `customer_id` an Int64 in",
        "file order, 1.25M rows per file in row groups of 65,536. Ordering by it and the cap",
        "cost almost nothing here; the realistic suite above is the harder yardstick.",
        "",
        "Shapes: `membership` is one segment joining the profiles to the membership table on",
        "three overlapping segment names with repeated membership rows (the query the peers",
        "run); `pipeline dry run, 3 segments` is the same export written as one segment per",
        "name, which scans the profile table once per segment. `filter` is one segment that",
        "filters profile columns (`lifetime_value >= 19750 AND is_subscribed`). About 1.1% of",
        "the rows are segment members; the export keeps at most 100,000 contacts",
        "(`on_cap_exceeded: truncate`).",
        "",
        "| rows | segment shape | tool | wall s | peak RSS MiB | rows scanned/s | contacts out/s |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for (rows, shape), (results, contacts) in table.items():
        for tool, runs in results.items():
            if "max_profiles" in tool or tool == BROAD_LABEL:
                continue  # reported below, with its own contacts
            wall = median([w for w, _ in runs])
            rss = max(m for _, m in runs)
            lines.append(f"| {rows:,} | {shape} | {tool} | {wall:.2f} | {rss:.0f} | "
                         f"{rows / wall:,.0f} | {contacts / wall:,.0f} |")
        ours = results["pipeline dry run"]
        ratio = lambda peer: median([o[0] / t[0] for o, t in zip(ours, results[peer])])
        full = median([f[0] / o[0] for f, o in zip(results["pipeline full run"], ours)])
        rss = max(m for _, m in ours + results["pipeline full run"])
        pandas = ratio("pandas") if "pandas" in results else None
        verdicts.append((rows, shape, contacts, ratio("DuckDB"), pandas, full, rss))
    lines += ["", "### Targets on friendly tables", "",
              "| rows | shape | contacts | dry run / DuckDB (≤ 0.5 up to 10M rows) | dry run / pandas (≤ 0.2) | full / dry run (≤ 1.5) | peak RSS MiB (≤ 256) |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    ok = lambda v, limit: "not run" if v is None else f"{v:.2f} {'✅' if v <= limit else '❌'}"
    for rows, shape, contacts, d, pd_, full, rss in verdicts:
        # The bar on DuckDB's time is for 10M rows; past that the ratio is reported only.
        duck = ok(d, 0.5) if rows <= 10_000_000 else f"{d:.2f}"
        lines.append(f"| {rows:,} | {shape} | {contacts:,} | {duck} | {ok(pd_, 0.2)} | "
                     f"{ok(full, 1.5)} | {rss:.0f} {'✅' if rss <= 256 else '❌'} |")
    def bounded(label, case, bound, says):
        """A bullet per size for the case measured under `label`: its time and its peak RSS
        against `bound` MiB."""
        for (rows, shape), (results, _) in table.items():
            if label in results:
                rss = max(m for _, m in results[label])
                wall = median([w for w, _ in results[label]])
                lines.extend(["", f"- {rows:,} rows, {case(shape)}: {wall:.2f} s, peak RSS "
                                  f"{rss:.0f} MiB ({'✅' if rss <= bound else '❌'} {says})"])

    bounded(f"pipeline dry run, max_profiles {LARGE_CAP:,}",
            lambda shape: f"{shape}, `max_profiles: {LARGE_CAP:,}` (every member kept)",
            MEMORY_LIMIT_MIB + 64, f"bound: memory_limit_mib {MEMORY_LIMIT_MIB} + 64")
    bounded(BROAD_LABEL,
            lambda _: "two broad segments (`is_subscribed`; `lifetime_value >= 10000`; most "
                      "rows are contacts, far past the cap)",
            256, "≤ 256")
    for (rows, shape), (results, _) in table.items():
        if S3_LABEL in results:
            remote = median([w for w, _ in results[S3_LABEL]])
            local = median([w for w, _ in results["pipeline dry run"]])
            lines.append("")
            lines.append(f"- {rows:,} rows, {shape}, tables on S3: {remote:.2f} s against "
                         f"{local:.2f} s from local disk (× {remote / local:.1f}), peak RSS "
                         f"{max(m for _, m in results[S3_LABEL]):.0f} MiB.")
    if any(S3_LABEL in results for results, _ in table.values()):
        lines += ["", S3_NOTE]
    by_shape = {}
    for (rows, shape), (results, _) in table.items():
        by_shape.setdefault(shape, []).append(
            (rows, median([w for w, _ in results["pipeline dry run"]]),
             max(m for _, m in results["pipeline dry run"])))
    lines += ["", "Scaling of the dry run (time should grow no faster than the rows; the peak RSS is "
                  "shown for reference, the bar is the absolute one above):", ""]
    for shape, points in by_shape.items():
        points.sort()
        for (r0, t0, m0), (r1, t1, m1) in zip(points, points[1:]):
            growth = (t1 / t0) / (r1 / r0)
            lines.append(f"- {shape}: {r0:,} → {r1:,} rows: time × {t1 / t0:.2f} for rows × "
                         f"{r1 / r0:.0f} ({'✅' if growth <= 1 else '❌'}), peak RSS {m0:.0f} → {m1:.0f} MiB")
    return lines


if __name__ == "__main__":
    main()
