#!/usr/bin/env bash
# Multi-turn chat with more conversations than lanes: llama-server (its defaults, so its
# host-RAM prompt cache, --cache-ram 8192, is on) and `hyperllama serve` (its RAM and disk
# prompt cache), same model, threads and lanes, both up for the whole run and measured in
# alternating rounds with `hyperllama bench --url --workload multi-turn` (CONVS conversations
# sharing a ~SYSTEM-token system prompt, TURNS turns each, round robin, PARALLEL at a time).
# Every run has a seed of its own, so no server answers from an earlier round's cache.
# Prints a Markdown report with the CPU and the ratios; raw JSON in bench/out/multiturn/.
#
#   bench/compare-multiturn.sh [MODEL.gguf]
#   env: REQUANT=Q4_0 (measure a Q4_0 copy), THREADS=2 PARALLEL=8 CTX=4096 CONVS=24 TURNS=4 SYSTEM=600 OUTPUT=64 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS="${THREADS:-2}" PARALLEL="${PARALLEL:-8}" CTX="${CTX:-4096}" CONVS="${CONVS:-24}" TURNS="${TURNS:-4}"
SYSTEM="${SYSTEM:-600}" OUTPUT="${OUTPUT:-64}" ROUNDS="${ROUNDS:-2}"
bench_build
MODEL=$(bench_model "${1:-}")
OUT=bench/out/multiturn; mkdir -p "$OUT"; rm -f "$OUT"/*.json
PORT_LS="${PORT_LS:-18201}" PORT_HL="${PORT_HL:-18202}"
home=$(mktemp -d)
bench_quiet
bench_start_llama_server "$PORT_LS" "$OUT/llama-server.log" "$MODEL" "$THREADS" "$PARALLEL" "$CTX"
bench_start_hyperllama "$PORT_HL" "$OUT/hyperllama.log" "$MODEL" "$home" "$THREADS" "$PARALLEL" "$CTX"
header=$(bench_header)

seed=100
for r in $(seq 1 "$ROUNDS"); do
  order="ls hl"; (( r % 2 == 0 )) && order="hl ls"
  for side in $order; do
    port=$PORT_LS; [[ $side == hl ]] && port=$PORT_HL
    seed=$((seed + 1))
    echo "round $r/$ROUNDS: $side" >&2
    "$HL" bench smol --url "http://127.0.0.1:$port" --workload multi-turn --conversations "$CONVS" \
      --turns "$TURNS" --system-tokens "$SYSTEM" --concurrency "$PARALLEL" --output-len "$OUTPUT" \
      --seed "$seed" --label "$side" --json >"$OUT/$side-$r.json"
  done
done
rss_hl=$(bench_rss_kib "$BENCH_PID")
bench_cleanup; wait 2>/dev/null || true
rm -rf "$home"

python3 - "$OUT" "$ROUNDS" "$MODEL" "$THREADS" "$PARALLEL" "$CTX" "$rss_hl" "$header" <<'PY'
import json, os, statistics, sys
out, rounds, model, threads, parallel, ctx, rss_hl, header = sys.argv[1:]
rounds = int(rounds)
runs = {s: [json.load(open(f"{out}/{s}-{r}.json")) for r in range(1, rounds + 1)] for s in ("ls", "hl")}
med = lambda xs: statistics.median(xs)
r0 = runs["hl"][0]
print(header)
print(f"\nModel {os.path.basename(model)}, {threads} threads, {parallel} lanes ({ctx} tokens each) on both; "
      f"{r0['conversations']} conversations x {r0['turns']} turns, {r0['concurrency']} at a time, "
      f"{r0['output_len']} output tokens per turn, greedy; medians of {rounds} alternating rounds.\n")
print("| | llama-server (default --cache-ram) | HyperLlama | ratio |")
print("|---|---:|---:|---:|")
tot = {s: med([x["total_s"] for x in runs[s]]) for s in runs}
tps = {s: med([x["output_throughput"] for x in runs[s]]) for s in runs}
later = {s: med([x["later_ttft_p50_ms"] for x in runs[s]]) for s in runs}
print(f"| total time, s | {tot['ls']:.1f} | {tot['hl']:.1f} | **{tot['ls']/tot['hl']:.2f}x faster** |")
print(f"| output tok/s | {tps['ls']:.1f} | {tps['hl']:.1f} | {tps['hl']/tps['ls']:.2f}x |")
print(f"| later-turn TTFT p50, ms | {later['ls']:.0f} | {later['hl']:.0f} | **{later['hl']/later['ls']:.2f}x** |")
print("\nPer turn (median over rounds): mean prompt tokens, mean cached tokens the server reported, TTFT p50 ms\n")
print("| turn | prompt | cached (llama-server) | cached (HyperLlama) | TTFT p50 llama-server | TTFT p50 HyperLlama | ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, t in enumerate(r0["per_turn"]):
    g = lambda s, k: med([x["per_turn"][i][k] for x in runs[s]])
    ttft = lambda s: med([x["per_turn"][i]["ttft_ms"]["p50"] for x in runs[s]])
    print(f"| {t['turn']} | {g('hl','mean_prompt_tokens'):.0f} | {g('ls','mean_cached_tokens'):.0f} | "
          f"{g('hl','mean_cached_tokens'):.0f} | {ttft('ls'):.0f} | {ttft('hl'):.0f} | {ttft('hl')/ttft('ls'):.2f}x |")
print(f"\nHyperLlama RSS at the end: {int(rss_hl)/1024:.0f} MiB. Targets: total >= 1.5x faster, later-turn TTFT <= 0.5x.")
PY
