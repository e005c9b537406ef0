#!/usr/bin/env bash
# Input-grounded single stream (rewrite a ~300-token text: what the model writes is in its
# prompt, where n-gram drafts hit), side by side on the same model and threads, one lane each:
#   llama-server without speculation (its default), llama-server --spec-type ngram-simple and
#   ngram-mod, `hyperllama serve` (speculative ngram, its default) and `--speculative off`.
# All five are up for the whole run; rounds alternate their order. Then chat without matches
# (the uniform random-prompt workload, one stream): HyperLlama with and without speculation,
# the cost of drafting that never hits. Decode tok/s = (output tokens - 1) / time after the
# first token. Prints a Markdown report with the CPU; raw JSON in bench/out/grounded/.
#
#   bench/compare-grounded.sh [MODEL.gguf]
#   env: REQUANT=Q4_0 (measure a Q4_0 copy), THREADS=2 CTX=2048 OUTPUT=256 REQUESTS=4 ROUNDS=2 CHAT_OUTPUT=128
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS="${THREADS:-2}" CTX="${CTX:-2048}" OUTPUT="${OUTPUT:-256}" REQUESTS="${REQUESTS:-4}" ROUNDS="${ROUNDS:-2}"
CHAT_OUTPUT="${CHAT_OUTPUT:-128}"
bench_build
MODEL=$(bench_model "${1:-}")
OUT=bench/out/grounded; mkdir -p "$OUT"; rm -f "$OUT"/*.json "$OUT"/*.prom
BASE_PORT="${BASE_PORT:-18210}"
declare -A PORT=([ls]=$((BASE_PORT)) [ls-ngram-simple]=$((BASE_PORT + 1)) [ls-ngram-mod]=$((BASE_PORT + 2))
  [hl]=$((BASE_PORT + 3)) [hl-off]=$((BASE_PORT + 4)))
SIDES=(ls ls-ngram-simple ls-ngram-mod hl hl-off)
home=$(mktemp -d) home_off=$(mktemp -d)
bench_quiet
bench_start_llama_server "${PORT[ls]}" "$OUT/ls.log" "$MODEL" "$THREADS" 1 "$CTX"
bench_start_llama_server "${PORT[ls-ngram-simple]}" "$OUT/ls-ngram-simple.log" "$MODEL" "$THREADS" 1 "$CTX" \
  --spec-type ngram-simple
bench_start_llama_server "${PORT[ls-ngram-mod]}" "$OUT/ls-ngram-mod.log" "$MODEL" "$THREADS" 1 "$CTX" \
  --spec-type ngram-mod
bench_start_hyperllama "${PORT[hl]}" "$OUT/hl.log" "$MODEL" "$home" "$THREADS" 1 "$CTX"
bench_start_hyperllama "${PORT[hl-off]}" "$OUT/hl-off.log" "$MODEL" "$home_off" "$THREADS" 1 "$CTX" --speculative off
header=$(bench_header)

for r in $(seq 1 "$ROUNDS"); do
  order=("${SIDES[@]}")
  (( r % 2 == 0 )) && order=(hl-off hl ls-ngram-mod ls-ngram-simple ls)
  for side in "${order[@]}"; do
    echo "round $r/$ROUNDS: $side grounded" >&2
    "$HL" bench smol --url "http://127.0.0.1:${PORT[$side]}" --workload grounded --requests "$REQUESTS" \
      --output-len "$OUTPUT" --label "$side" --json >"$OUT/$side-$r.json"
  done
  for side in hl hl-off ls; do
    echo "round $r/$ROUNDS: $side chat without matches" >&2
    "$HL" bench smol --url "http://127.0.0.1:${PORT[$side]}" --concurrency 1 --requests "$REQUESTS" \
      --input-len 128 --output-len "$CHAT_OUTPUT" --seed $((r * 10)) --label "$side" --json >"$OUT/chat-$side-$r.json"
  done
done
curl -sf "http://127.0.0.1:${PORT[hl]}/metrics" >"$OUT/hl.prom"
bench_cleanup; wait 2>/dev/null || true
rm -rf "$home" "$home_off"

python3 - "$OUT" "$ROUNDS" "$MODEL" "$THREADS" "$header" <<'PY'
import json, os, re, statistics, sys
out, rounds, model, threads, header = sys.argv[1:]
rounds = int(rounds)
load = lambda name: [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)]
med = statistics.median
names = {"ls": "llama-server (no speculation)", "ls-ngram-simple": "llama-server --spec-type ngram-simple",
         "ls-ngram-mod": "llama-server --spec-type ngram-mod", "hl": "HyperLlama (--speculative ngram)",
         "hl-off": "HyperLlama --speculative off"}
g = {s: load(s) for s in names}
tps = {s: med([x["decode_tps"]["p50"] for x in g[s]]) for s in names}
ttft = {s: med([x["ttft_ms"]["p50"] for x in g[s]]) for s in names}
first = g["hl"][0]
print(header)
print(f"\nModel {os.path.basename(model)}, {threads} threads, one lane each; rewrite a ~300-token text, "
      f"~{first['mean_prompt_tokens']:.0f} prompt tokens, {first['output_len']} output tokens, greedy, "
      f"{first['requests']} requests per run; medians of {rounds} alternating rounds.\n")
print("| server | decode tok/s | TTFT p50 ms | HyperLlama's decode vs this |")
print("|---|---:|---:|---:|")
for s, n in names.items():
    print(f"| {n} | {tps[s]:.1f} | {ttft[s]:.0f} | {tps['hl']/tps[s]:.2f}x |")
prom = open(f"{out}/hl.prom").read()
def metric(name):
    m = re.search(rf"^hyperllama_{name}\{{[^}}]*\}} (\S+)", prom, re.M)
    return float(m.group(1)) if m else 0.0
drafted, accepted = metric("spec_draft_tokens_total"), metric("spec_accepted_tokens_total")
if drafted:
    print(f"\nHyperLlama's drafts over the whole run: {accepted:.0f} of {drafted:.0f} drafted tokens accepted "
          f"({100*accepted/drafted:.0f}%).")
chat = {s: med([1000.0 / x["levels"][0]["tpot_ms"]["p50"] for x in load(f"chat-{s}")]) for s in ("hl", "hl-off", "ls")}
print(f"\nChat without matches (random 128-token prompts, {os.environ.get('CHAT_OUTPUT', '128')} output tokens, one stream): "
      f"HyperLlama with speculation {chat['hl']:.1f} tok/s, without {chat['hl-off']:.1f} tok/s = "
      f"{chat['hl']/chat['hl-off']:.3f}x; llama-server {chat['ls']:.1f} tok/s.")
print("\nTargets: >= 1.5x llama-server without speculation, >= 1.0x llama-server with ngram speculation; "
      "chat without matches no more than 2% slower with speculation.")
PY
