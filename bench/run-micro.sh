#!/bin/sh
# Builds and runs the micro-benchmarks; writes $BUILD/bench/micro.json and prints a summary.
# Extra arguments go to the benchmark binary, e.g. --benchmark_filter=Record.
# BUILD is relative to the repository root (default build). Exit status is non-zero when the
# build fails or any benchmark reported an error.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
case $BUILD in
/*) bench_build=$BUILD ;;
*) bench_build=../$BUILD ;;
esac
out=$BUILD/bench
json=$out/micro.json

make --no-print-directory -C bench BUILD="$bench_build"
rm -f "$json"

# The console table is wide (counters): keep it in a log, print the short summary instead.
echo "running $out/micro (console output in $out/micro.log) ..."
start=$(date +%s)
if ! "$out/micro" --benchmark_min_time=0.2 --benchmark_out="$json" \
    --benchmark_out_format=json "$@" >"$out/micro.log" 2>&1; then
    echo "micro failed; the end of $out/micro.log:" >&2
    tail -n 20 "$out/micro.log" >&2
    exit 1
fi
echo "done in $(($(date +%s) - start)) s; JSON in $json"

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 not found: no summary; read $out/micro.log" >&2
    exit 0
fi
python3 - "$json" "$out/micro-summary.txt" <<'EOF'
import json, sys

NS = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}

def si(v, unit):
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f} {prefix}{unit}"
    return f"{v:.2f} {unit}"

def binary(v):
    for div, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if v >= div:
            return f"{v / div:.2f} {prefix}/s"
    return f"{v:.0f} B/s"

data = json.load(open(sys.argv[1]))
rows, errors = [], 0
for b in data["benchmarks"]:
    if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "mean":
        continue
    if b.get("error_occurred"):
        errors += 1
        rows.append((b["name"], "ERROR", "", "", b.get("error_message", "")))
        continue
    scale = NS[b.get("time_unit", "ns")]
    # The time throughput is computed from: wall time for UseRealTime benchmarks, else CPU.
    real = b["name"].endswith("/real_time")
    ns = (b["real_time"] if real else b["cpu_time"]) * scale
    bps = binary(b["bytes_per_second"]) if "bytes_per_second" in b else ""
    ips = si(b["items_per_second"], "/s") if "items_per_second" in b else ""
    rows.append((b["name"], f"{ns:,.1f}", bps, ips, b.get("label", "")))

head = ("benchmark", "ns/op", "bytes/s", "items/s", "note")
width = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
lines = [f"{data['context'].get('host_name', '')}: {data['context']['num_cpus']} CPUs, "
         f"library build {data['context'].get('library_build_type', '?')}; "
         "ns/op is CPU time except for /real_time benchmarks"]
for i, r in enumerate([head] + rows):
    lines.append("  ".join(c.rjust(width[j]) if 0 < j < 4 else c.ljust(width[j])
                           for j, c in enumerate(r)).rstrip())
    if i == 0:
        lines.append("  ".join("-" * w for w in width))
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
open(sys.argv[2], "w").write(text)
if errors:
    print(f"{errors} benchmark(s) reported an error", file=sys.stderr)
    sys.exit(1)
EOF
