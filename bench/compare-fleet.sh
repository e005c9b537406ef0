#!/usr/bin/env bash
# What the fleet's front door costs: one llama-server node (built by bench/build-llama-cpp.sh),
# measured directly and through `hyperllama serve --openai-url NODE` (an empty store: every
# request is forwarded), with the same `hyperllama bench --url` sweep, alternating rounds.
# Prints a Markdown table (medians over rounds) with front/direct ratios; raw JSON in bench/out/fleet.
#
#   bench/compare-fleet.sh [MODEL.gguf]
#   env: THREADS=2 PARALLEL=4 CONC=1,4 INPUT=128 OUTPUT=64 REQUESTS=8 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-$(scripts/fetch-model.sh)}"
THREADS="${THREADS:-2}" PARALLEL="${PARALLEL:-4}" CONC="${CONC:-1,4}" INPUT="${INPUT:-128}"
OUTPUT="${OUTPUT:-64}" REQUESTS="${REQUESTS:-8}" ROUNDS="${ROUNDS:-2}"
BIN=$(bench/build-llama-cpp.sh)
cargo build --release --locked -p hyperllama >&2
HL=./target/release/hyperllama
OUT=bench/out/fleet; mkdir -p "$OUT"
PORT_NODE="${PORT_NODE:-18191}" PORT_FRONT="${PORT_FRONT:-18192}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() { for _ in $(seq 120); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done; return 1; }

"$BIN/llama-server" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$PARALLEL" -c $((2048 * PARALLEL)) \
  --host 127.0.0.1 --port "$PORT_NODE" --alias smol >"$OUT/node.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$PORT_NODE/health"
HYPERLLAMA_MODELS="$(mktemp -d)" "$HL" serve --host "127.0.0.1:$PORT_FRONT" \
  --openai-url "http://127.0.0.1:$PORT_NODE" >"$OUT/front.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$PORT_FRONT/v1/models"

# Each run gets prompts of its own (seed): the node's prompt cache must not favour either side.
seed=0
for r in $(seq 1 "$ROUNDS"); do
  for side in direct front; do
    port=$PORT_NODE; [[ $side == front ]] && port=$PORT_FRONT
    seed=$((seed + 1))
    "$HL" bench smol --url "http://127.0.0.1:$port" --concurrency "$CONC" --requests "$REQUESTS" \
      --input-len "$INPUT" --output-len "$OUTPUT" --seed "$seed" --label "$side" --json >"$OUT/$side-$r.json"
  done
done

python3 - "$OUT" "$ROUNDS" "$THREADS" "$PARALLEL" "$INPUT" "$OUTPUT" "$REQUESTS" <<'PY'
import json, statistics, sys
out, rounds, threads, parallel, inp, outp, reqs = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def levels(side):
    runs = [json.load(open(f"{out}/{side}-{r}.json"))["levels"] for r in range(1, rounds + 1)]
    return {lv["concurrency"]: [run[i] for run in runs] for i, lv in enumerate(runs[0])}
d, f = levels("direct"), levels("front")
med = lambda xs: statistics.median(xs)
print(f"llama-server node (-np {parallel}, {threads} threads), {inp} in / {outp} out, {reqs} requests per level, "
      f"medians of {rounds} alternating rounds\n")
print("| concurrency | direct out tok/s | front door out tok/s | ratio | direct TTFT p50 (ms) | front TTFT p50 (ms) | ratio | failed |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted(d):
    dt = med([x["output_throughput"] for x in d[c]]); ft = med([x["output_throughput"] for x in f[c]])
    dl = med([x["ttft_ms"]["p50"] for x in d[c]]); fl = med([x["ttft_ms"]["p50"] for x in f[c]])
    failed = sum(x["failed"] for x in d[c] + f[c])
    print(f"| {c} | {dt:.1f} | {ft:.1f} | {ft / dt:.2f}x | {dl:.0f} | {fl:.0f} | {fl / dl:.2f}x | {failed} |")
PY
