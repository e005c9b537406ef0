#!/usr/bin/env bash
# The same prompt on each engine, in-process through `hyperllama bench --engine E`, rounds
# alternating between engines; load (and compile) time, TTFT, prompt and decode tok/s, and the
# peak resident memory of HyperLlama plus everything it started (the MAX sidecar and max serve).
# Writes a markdown table to stdout; raw JSON under bench/out/engines/.
#   bench/compare-engines.sh [MODEL.gguf]       ENGINES="llamacpp max" ROUNDS=2 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-${HYPERLLAMA_TEST_MODEL:-$HOME/.cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
ENGINES="${ENGINES:-llamacpp max}"
ROUNDS="${ROUNDS:-2}"
THREADS="${THREADS:-2}"
BIN=target/release/hyperllama
OUT=bench/out/engines
mkdir -p "$OUT"

tree_rss_kib() { # the resident memory of $1 and all its descendants
  local total=0 p v
  for p in $(pstree -pT "$1" 2>/dev/null | grep -o '([0-9]*)' | tr -d '()'); do
    v=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

for round in $(seq 1 "$ROUNDS"); do
  for e in $ENGINES; do
    "$BIN" bench --engine "$e" "$MODEL" --threads "$THREADS" -i 3 --warmup 1 --prompt-tokens 128 -n 64 --json \
      > "$OUT/$e-$round.json" 2> "$OUT/$e-$round.log" &
    pid=$! peak=0
    while kill -0 "$pid" 2>/dev/null; do
      rss=$(tree_rss_kib "$pid"); (( rss > peak )) && peak=$rss
      sleep 0.5
    done
    wait "$pid"
    echo "$peak" > "$OUT/$e-$round.rss"
  done
done

python3 - "$OUT" "$ROUNDS" $ENGINES <<'PY'
import json, statistics, sys
out, rounds, engines = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for e in engines:
    runs = [json.load(open(f"{out}/{e}-{r}.json")) for r in range(1, rounds + 1)]
    rss = [int(open(f"{out}/{e}-{r}.rss").read()) for r in range(1, rounds + 1)]
    med = lambda k, s="p50": statistics.median(x[k][s] for x in runs)
    rows[e] = dict(load=statistics.median(x["load_ms"] for x in runs) / 1e3, ttft=med("ttft_ms"),
                   prompt=med("prompt_tps"), decode=med("decode_tps"), rss=max(rss) / 1024)
base = rows[engines[0]]
print(f"| engine | load (s) | TTFT p50 (ms) | prompt tok/s | decode tok/s | peak RSS (MiB) | decode vs {engines[0]} |")
print("|---|---|---|---|---|---|---|")
for e, r in rows.items():
    print(f"| {e} | {r['load']:.1f} | {r['ttft']:.0f} | {r['prompt']:.1f} | {r['decode']:.1f} | {r['rss']:.0f} | {r['decode'] / base['decode']:.2f}x |")
PY
