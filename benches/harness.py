"""What the whole-run harness's suites share: paths, the peers' virtual environment, the
release build, the measuring runner, the pipeline file and the body comparison."""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BENCH = os.path.join(TARGET, "bench")
VENV = os.path.join(BENCH, "venv")
PEER_PACKAGES = ["duckdb==2.0.0", "pandas==3.1.1", "pyarrow==26.0.1", "moto[server]==5.2.5"]
KEY = "SG.benchmark-key"
LIST_ID = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11"
# pandas holds the whole table: at 100M rows it would need more memory than the machine has.
PANDAS_MAX_ROWS = 10_000_000


def generate(bins, folder, command, rows, *args):
    """BENCH/data/<folder>: a table `pipeline-datagen <command>` writes once and keeps."""
    out = os.path.join(BENCH, "data", folder)
    done = os.path.join(out, ".done")
    if not os.path.exists(done):
        log(f"Generating {rows:,} profile rows in {out} ({command})")
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([bins["pipeline-datagen"], command, "--rows", str(rows), "--out", out,
                        *args, "--seed", "42"], check=True)
        open(done, "w").close()
    return out


def repetitions(rows, repeat):
    """`--repeat` below 100M rows; 100M rows run once (each repetition takes minutes)."""
    return 1 if rows >= 100_000_000 else repeat

def log(message):
    print(message, file=sys.stderr, flush=True)


def ensure_venv():
    """Re-runs this script inside a virtual environment that has the peers' packages."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.prefix) == os.path.abspath(VENV):
        return
    marker = os.path.join(VENV, "packages.txt")
    wanted = "\n".join(PEER_PACKAGES)
    if not os.path.exists(python):
        log(f"Creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if not os.path.exists(marker) or open(marker).read() != wanted:
        log(f"Installing {', '.join(PEER_PACKAGES)} into {VENV}")
        subprocess.run([python, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        with open(marker, "w") as f:
            f.write(wanted)
    os.execv(python, [python, *sys.argv])


def build(cluster=False):
    """The binaries, copied to BENCH/bin: `pipeline` as users ship it (the `dist` profile:
    fat LTO, stripped), `pipeline-release` (the release profile, whose symbols the profiler
    reads), the generator and the emulator; with `cluster`, also `pipeline-cluster`:
    `pipeline` built with `--features cluster` (release profile)."""
    bin_dir = os.path.join(BENCH, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    log("Building release binaries")
    subprocess.run(
        ["cargo", "build", "--release", "-p", "pipeline-cli", "-p", "pipeline-datagen",
         "-p", "sendgrid-emulator"],
        cwd=ROOT, check=True)
    bins = {}
    for name in ["pipeline-datagen", "sendgrid-emulator"]:
        bins[name] = os.path.join(bin_dir, name)
        shutil.copy2(os.path.join(TARGET, "release", name), bins[name])
    bins["pipeline-release"] = os.path.join(bin_dir, "pipeline-release")
    shutil.copy2(os.path.join(TARGET, "release", "pipeline"), bins["pipeline-release"])
    log("Building the binary to ship (--profile dist)")
    subprocess.run(["cargo", "build", "--profile", "dist", "-p", "pipeline-cli"], cwd=ROOT,
                   check=True)
    bins["pipeline"] = os.path.join(bin_dir, "pipeline")
    shutil.copy2(os.path.join(TARGET, "dist", "pipeline"), bins["pipeline"])
    if cluster:
        log("Building the release binary with --features cluster")
        subprocess.run(["cargo", "build", "--release", "-p", "pipeline-cli", "--features",
                        "cluster"], cwd=ROOT, check=True)
        bins["pipeline-cluster"] = os.path.join(bin_dir, "pipeline-cluster")
        shutil.copy2(os.path.join(TARGET, "release", "pipeline"), bins["pipeline-cluster"])
    return bins


# Linux counts a process's peak RSS from the memory of the process that forked it: a
# child of this harness would report the harness's own peak (it holds every peer's
# contacts) when its own is smaller. So the measured commands are started by a small
# runner process, started before the harness grows, whose peak is a few MiB.
RUNNER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["stdout"], "wb") as out, open(job["stderr"], "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], stdout=out, stderr=err, env=job["env"])
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "maxrss_kib": usage.ru_maxrss,
                      "code": os.waitstatus_to_exitcode(status)}), flush=True)
"""
_runner = None


def start_runner():
    global _runner
    _runner = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)


def measure(cmd, env=None):
    """Runs cmd through the runner; returns wall seconds and peak RSS in MiB."""
    job = {"cmd": cmd, "env": dict(env or os.environ),
           "stdout": os.path.join(BENCH, "last.stdout"),
           "stderr": os.path.join(BENCH, "last.stderr")}
    _runner.stdin.write(json.dumps(job) + "\n")
    _runner.stdin.flush()
    result = json.loads(_runner.stdout.readline())
    if result["code"] != 0:
        with open(job["stderr"]) as f:
            raise SystemExit(f"{' '.join(cmd)} exited {result['code']}:\n{f.read()[-3000:]}")
    return result["wall"], result["maxrss_kib"] / 1024


def dry_run(bins, pipeline_yaml, out, state, env, binary="pipeline"):
    """`pipeline run --dry-run` of the bench export into `out` (with `bins[binary]`): its
    measurement (wall seconds, peak RSS MiB) and the contacts of its bodies."""
    measured = measure([bins[binary], "run", pipeline_yaml, "--dry-run", out, "--state-dir",
                        state], env)
    return measured, contacts_of(os.path.join(out, "bench"))


def contacts_of(folder):
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), "rb") as f:
                body = f.read()
            assert len(body) < 6_000_000, f"{name}: {len(body)} bytes"
            contacts = json.loads(body)["contacts"]
            assert len(contacts) <= 30_000
            out.extend(contacts)
    return out


def compare(ours, theirs, who):
    if len(ours) != len(theirs):
        raise SystemExit(f"{who}: {len(theirs)} contacts, pipeline sent {len(ours)}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            raise SystemExit(f"{who}: contact {i} differs:\n  pipeline: {a}\n  {who}: {b}")


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def median(xs):
    return statistics.median(xs)


def pipeline_file(name, data, segments, endpoint=None, max_profiles=100_000, storage=None,
                  order="customer_id", cluster=None):
    """Writes BENCH/<name>.yaml: the bench export of `segments` (name: SQL) over the tables
    under `data` (a folder or an s3:// URL), in `order`, its selection on the Ballista
    scheduler `cluster` when given; returns its path."""
    sql = "\n".join(f"  {n}: {q}" for n, q in segments.items())
    store = f", storage: {storage}" if storage else ""
    endpoint_line = f"    endpoint: {endpoint}\n" if endpoint else ""
    engine = f"engine: {{ cluster: {cluster} }}\n" if cluster else ""
    text = f"""version: 1
{engine}connections:
  marketing:
    type: sendgrid
    api_key: ${{SENDGRID_API_KEY}}
    data_privacy_consent: true
{endpoint_line}sources:
  profiles: {{ format: parquet, path: "{data}/profiles/"{store} }}
  memberships: {{ format: parquet, path: "{data}/segment_memberships.parquet"{store} }}
segments:
{sql}
exports:
  - name: bench
    connection: marketing
    list_ids: [{LIST_ID}]
    segments: [{", ".join(segments)}]
    mapping:
      email: email
      first_name: first_name
      last_name: last_name
      city: city
      country: country
      postal_code: postal_code
      custom_fields: {{ lifetime_value: lifetime_value }}
    order_by: {order}
    max_profiles: {max_profiles}
    on_cap_exceeded: truncate
    allowed_rejects: 100000000
"""
    path = os.path.join(BENCH, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path
