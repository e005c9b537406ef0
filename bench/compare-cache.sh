#!/usr/bin/env bash
# HyperLlama's prompt cache on its own terms:
#  1. Restart TTFT: a request with a PREFIX-token prefix on a fresh server (cold), the server
#     stopped and started again on the same HYPERLLAMA_HOME, then a request repeating that
#     prefix (the disk tier's restore): warm / cold, median of REPS restarts, each with a
#     prefix of its own. llama-server keeps no cache across a restart: its TTFT after one is
#     the cold one, measured beside it for reference.
#  2. RSS against --cache-ram: for each budget in CACHE_RAMS (MiB, disk tier off), the
#     multi-turn workload overfills the cache; reported: the server's RSS growth from just
#     after the model loaded to the end, the cache's own byte count (/metrics) and evictions.
# Prints a Markdown report with the CPU; raw data in bench/out/cache/.
#
#   bench/compare-cache.sh [MODEL.gguf]
#   env: REQUANT=Q4_0 (measure a Q4_0 copy), THREADS=2 PREFIX=2000 REPS=3 CACHE_RAMS="64 256" CONVS=16
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS="${THREADS:-2}" PREFIX="${PREFIX:-2000}" REPS="${REPS:-3}" CACHE_RAMS="${CACHE_RAMS:-64 256}" CONVS="${CONVS:-16}"
bench_build
MODEL=$(bench_model "${1:-}")
OUT=bench/out/cache; mkdir -p "$OUT"; rm -f "$OUT"/*.json "$OUT"/*.txt
PORT_HL="${PORT_HL:-18221}" PORT_LS="${PORT_LS:-18222}"
CTX=$((PREFIX + 512))
bench_quiet
header=$(bench_header)

ttft() { # port seed question -> ms
  python3 - "$1" "$2" "$3" "$PREFIX" <<'PY'
import json, random, sys, time, urllib.request
port, seed, question, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
words = "river stone garden window orange silver market winter letter forest engine pocket candle harbor".split()
rng = random.Random(seed)
prefix = " ".join(rng.choice(words) for _ in range(n))
body = json.dumps({"model": "smol", "max_tokens": 1, "temperature": 0, "stream": True,
                   "messages": [{"role": "system", "content": prefix}, {"role": "user", "content": question}]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"})
t0 = time.perf_counter()
with urllib.request.urlopen(req) as r:
    # The first chunk with the token: text, or the finish (a first token that prints nothing);
    # not the opening chunk that only carries the role (and an empty content).
    for line in r:
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        choice = (json.loads(line[5:]).get("choices") or [{}])[0]
        if (choice.get("delta") or {}).get("content") or choice.get("finish_reason"):
            print(f"{(time.perf_counter() - t0) * 1000:.1f}")
            break
PY
}
disk_bytes() { curl -sf "http://127.0.0.1:$PORT_HL/metrics" | awk '/^hyperllama_cache_disk_bytes\{/ { print $2 }'; }

# 1. Restart TTFT.
for rep in $(seq 1 "$REPS"); do
  home=$(mktemp -d)
  bench_start_hyperllama "$PORT_HL" "$OUT/hl-restart.log" "$MODEL" "$home" "$THREADS" 4 "$CTX"
  cold=$(ttft "$PORT_HL" "$rep" "Question one: which word comes up most?")
  # The capture is written behind the stream: wait until the disk tier holds it.
  for _ in $(seq 200); do [[ $(disk_bytes) != 0 && -n $(disk_bytes) ]] && break; sleep 0.1; done
  bench_stop "$BENCH_PID"
  bench_start_hyperllama "$PORT_HL" "$OUT/hl-restart.log" "$MODEL" "$home" "$THREADS" 4 "$CTX"
  warm=$(ttft "$PORT_HL" "$rep" "Question two: which word comes up least?")
  bench_stop "$BENCH_PID"
  rm -rf "$home"
  bench_start_llama_server "$PORT_LS" "$OUT/ls-restart.log" "$MODEL" "$THREADS" 4 "$CTX"
  ls_cold=$(ttft "$PORT_LS" "$rep" "Question two: which word comes up least?")
  bench_stop "$BENCH_PID"
  echo "$cold $warm $ls_cold" >>"$OUT/restart.txt"
  echo "restart $rep: cold $cold ms, after restart $warm ms, llama-server after restart $ls_cold ms" >&2
done

# 2. RSS against --cache-ram.
for mib in $CACHE_RAMS; do
  home=$(mktemp -d)
  bench_start_hyperllama "$PORT_HL" "$OUT/hl-rss.log" "$MODEL" "$home" "$THREADS" 4 2048 --cache-ram "$mib" --cache-dir off
  before=$(bench_rss_kib "$BENCH_PID")
  "$HL" bench smol --url "http://127.0.0.1:$PORT_HL" --workload multi-turn --conversations "$CONVS" --turns 2 \
    --system-tokens 600 --concurrency 4 --output-len 16 --seed "$mib" --json >"$OUT/rss-$mib.json"
  after=$(bench_rss_kib "$BENCH_PID")
  curl -sf "http://127.0.0.1:$PORT_HL/metrics" >"$OUT/rss-$mib.prom"
  bench_stop "$BENCH_PID"
  rm -rf "$home"
  echo "$mib $before $after" >>"$OUT/rss.txt"
done

python3 - "$OUT" "$PREFIX" "$header" "$CONVS" <<'PY'
import re, statistics, sys
out, prefix, header, convs = sys.argv[1:]
rows = [list(map(float, l.split())) for l in open(f"{out}/restart.txt")]
cold, warm, ls = (statistics.median(r[i] for r in rows) for i in range(3))
print(header)
print(f"\nRestart: a {prefix}-token system prompt, then the server restarted, then a new question after the same "
      f"prompt (median of {len(rows)} restarts, each with a prompt of its own)\n")
print("| | TTFT ms |")
print("|---|---:|")
print(f"| HyperLlama, first request (cold) | {cold:.0f} |")
print(f"| HyperLlama, after a restart (disk cache) | {warm:.0f} |")
print(f"| llama-server, after a restart (no cache survives) | {ls:.0f} |")
print(f"\nAfter a restart / cold: **{warm/cold:.2f}x** (target <= 0.2x).")
print(f"\nRSS against --cache-ram (disk tier off; {convs} conversations x 2 turns, ~600-token shared system prompt, "
      "4 lanes): growth of the server's RSS from just after the model loaded to the end\n")
print("| --cache-ram MiB | cache bytes held (MiB) | evictions | RSS growth (MiB) | growth / budget |")
print("|---:|---:|---:|---:|---:|")
for l in open(f"{out}/rss.txt"):
    mib, before, after = map(float, l.split())
    prom = open(f"{out}/rss-{int(mib)}.prom").read()
    get = lambda n: float((re.search(rf"^hyperllama_{n}\{{[^}}]*\}} (\S+)", prom, re.M) or [0, 0])[1])
    growth = (after - before) / 1024
    print(f"| {mib:.0f} | {get('cache_ram_bytes')/2**20:.1f} | {get('cache_evictions_total'):.0f} | {growth:.0f} | "
          f"{growth/mib:.2f} |")
print("\nTarget: the RAM cache stays within --cache-ram (+10%).")
PY
