#!/usr/bin/env bash
# libFuzzer on one of two decoders, built with -sanitize=fuzzer,address into .build-fuzz, with inputs up
# to the protocol's maximum line length (1 MiB):
# - `--target request` (the default): the request decoder (Tests/Fuzz/RequestFuzz), from the seed corpus in
#   Tests/Fuzz/corpus with the dictionary Tests/Fuzz/request.dict;
# - `--target writelog`: the write-log message decoder replicas read streams with (Tests/Fuzz/WriteLogFuzz),
#   from seeds its binary writes with the real encoders (`--write-seeds`) and Tests/Fuzz/writelog.dict.
#
#   Tests/Fuzz/run.sh --runs 200000                     # fixed number of inputs, seed 1: deterministic (make test)
#   Tests/Fuzz/run.sh --target writelog --runs 200000
#   Tests/Fuzz/run.sh --seconds 600                     # a time budget (docs/reliability.md)
#
# Options: --target request|writelog, --runs N | --seconds S, --seed N (default 1), --results FILE (a JSON
# summary: command, commit, machine, executions, coverage). Exits non-zero when an input breaks an invariant or a sanitizer
# fires; the input is kept as crash-* in the work directory, which is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
arguments="$*"
runs=""
seconds=""
seed=1
results=""
target=request
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --target) target="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$runs" ] && [ -z "$seconds" ]; then runs=200000; fi
case "$target" in
  request|writelog) ;;
  *) echo "unknown target $target (request or writelog)" >&2; exit 2 ;;
esac

STEER_FUZZ=1 swift build --scratch-path .build-fuzz -c release \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --product "steer-fuzz-$target" 2>&1 \
  | grep -v "Cannot export local symbol '__asan_extra_spill_area'" || true
binary=.build-fuzz/release/steer-fuzz-$target
[ -x "$binary" ] || { echo "the fuzz target did not build" >&2; exit 1; }

work=$(mktemp -d /tmp/steer-libfuzzer-XXXXXX)
mkdir -p "$work/corpus"
if [ "$target" = request ]; then
  cp Tests/Fuzz/corpus/* "$work/corpus/"
else
  SWIFT_BACKTRACE=enable=no "$binary" --write-seeds "$work/corpus" || { echo "writing the seeds failed" >&2; exit 1; }
fi
limit=()
[ -n "$runs" ] && limit+=("-runs=$runs")
[ -n "$seconds" ] && limit+=("-max_total_time=$seconds")
# Inputs up to the longest line a server parses: ProtocolLimits.maxLineBytes's default, 1 MiB
# (Sources/SteerProtocol/Request.swift). libFuzzer's -len_control still starts mutations short and lets
# them grow; seeds are read whole.
max_len=1048576
command=("$binary" -dict="Tests/Fuzz/$target.dict" -max_len="$max_len" -seed="$seed" -print_final_stats=1
  -artifact_prefix="$work/" "${limit[@]}" "$work/corpus")
echo "running: ${command[*]}"
status=0
# The Swift runtime's own crash reporter would race ASan's: libFuzzer reports.
SWIFT_BACKTRACE=enable=no "${command[@]}" > "$work/log" 2>&1 || status=$?
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|ERROR|fuzz invariant|Test unit written" "$work/log" || true
if [ "$status" -ne 0 ]; then
  tail -60 "$work/log"
  echo "libFuzzer found a failing input (exit $status); see $work" >&2
  exit "$status"
fi
if [ -n "$results" ]; then
  python3 - "$work/log" "$results" "$seed" "${command[*]}" "Tests/Fuzz/run.sh $arguments" <<'PY'
import json, platform, re, subprocess, sys, datetime
log, path, seed, command, invocation = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(log, errors="replace").read()
done = re.findall(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", text, re.M)
stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", text, re.M))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
summary = {
    "command": invocation,
    "fuzzer_command": command,
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpu": cpu, "platform": platform.platform(), "load_average": open("/proc/loadavg").read().split()[:3]},
    "seed": seed,
    "executions": int(stats.get("number_of_executed_units", 0)),
    "executions_per_second": int(stats.get("average_exec_per_sec", 0)),
    "coverage_edges": int(done[-1][1]) if done else None,
    "features": int(done[-1][2]) if done else None,
    "corpus_units": int(done[-1][3]) if done else None,
    "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
    "failing_inputs": 0,
}
json.dump(summary, open(path, "w"), indent=2)
print(f"results: {path}")
PY
fi
rm -rf "$work"
