# Shared by the bench/compare-*.sh scripts (source it): the reference build, server start and
# stop on loopback, the quiet-machine check and the CPU record every table carries.
#
# Env: BENCH_MAX_LOAD (default 0.6: the 1-minute load average allowed before a run),
#      BENCH_MAX_FOREIGN_CPU (default 15: % of one core any other process may use),
#      BENCH_FORCE=1 (record anyway; the report then says the machine was busy).

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HL="$BENCH_ROOT/target/release/hyperllama"
LS_BIN=""
_bench_pids=()

bench_cleanup() { for p in "${_bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap bench_cleanup EXIT

# Builds what the comparison needs: llama.cpp's tools (cached) and HyperLlama (release).
bench_build() {
  LS_BIN=$("$BENCH_ROOT/bench/build-llama-cpp.sh")
  (cd "$BENCH_ROOT" && cargo build --release --locked -p hyperllama >&2)
}

# The CPU, as a Markdown line: model, cores, the SIMD flags that pick ggml's kernels.
bench_cpu() {
  local model flags
  model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
  flags=$(lscpu | sed -n 's/^Flags:[[:space:]]*//p' | tr ' ' '\n' \
    | grep -E '^(avx|avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx_vnni|amx_tile|amx_int8|amx_bf16)$' \
    | tr '\n' ' ')
  local fam num
  fam=$(lscpu | sed -n 's/^CPU family:[[:space:]]*//p' | head -1)
  num=$(lscpu | sed -n 's/^Model:[[:space:]]*//p' | head -1)
  echo "CPU: $model (family $fam model $num), $(nproc) vCPUs; flags: ${flags% }"
}

# Refuses to go on while the machine is busy: the 1-minute load average over BENCH_MAX_LOAD,
# or another process using more than BENCH_MAX_FOREIGN_CPU % of a core over one second.
# With BENCH_FORCE=1 it warns instead and sets BENCH_BUSY=1 for the report.
BENCH_BUSY=0
bench_quiet() {
  local max_load="${BENCH_MAX_LOAD:-0.6}" max_cpu="${BENCH_MAX_FOREIGN_CPU:-15}" load busy=""
  for _ in $(seq 30); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    busy=""
    if awk -v l="$load" -v m="$max_load" 'BEGIN { exit !(l > m) }'; then
      busy="load average $load > $max_load"
    else
      # The second of two top samples covers the last second only.
      local hog
      hog=$(top -b -n 2 -d 1 -w 200 | awk -v m="$max_cpu" -v me="$$" '
        /^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > m && $1 != me { print $1 " " $12 " " $9 "%"; exit }')
      [[ -n $hog ]] && busy="process $hog of a core"
    fi
    [[ -z $busy ]] && return 0
    echo "machine busy ($busy); waiting for it to settle ..." >&2
    sleep 10
  done
  if [[ ${BENCH_FORCE:-0} == 1 ]]; then
    echo "warning: recording on a busy machine ($busy) because BENCH_FORCE=1" >&2
    BENCH_BUSY=1
    return 0
  fi
  echo "refusing to record: the machine is busy ($busy). Stop the other work, or set BENCH_FORCE=1." >&2
  exit 3
}

# The header every report starts with.
bench_header() {
  echo "$(bench_cpu)"
  echo "Recorded $(date -u +%Y-%m-%dT%H:%MZ), load average before the run $(cut -d' ' -f1-3 /proc/loadavg)$(
    [[ $BENCH_BUSY == 1 ]] && echo ' (BUSY: forced with BENCH_FORCE=1)')"
}

bench_wait_up() { # url
  for _ in $(seq 240); do curl -sf "$1" >/dev/null && return 0; sleep 0.25; done
  echo "server at $1 did not come up" >&2
  return 1
}

# llama-server on PORT with the given extra flags; sets BENCH_PID.
bench_start_llama_server() { # port log model threads parallel ctx_per_seq [flags...]
  local port=$1 log=$2 model=$3 threads=$4 parallel=$5 ctx=$6
  shift 6
  "$LS_BIN/llama-server" -m "$model" -t "$threads" -tb "$threads" -np "$parallel" -c $((ctx * parallel)) \
    --host 127.0.0.1 --port "$port" --alias smol "$@" >"$log" 2>&1 &
  BENCH_PID=$!
  _bench_pids+=("$BENCH_PID")
  bench_wait_up "http://127.0.0.1:$port/health"
}

# `hyperllama serve` on PORT with HOME as HYPERLLAMA_HOME, the model created as "smol"; sets BENCH_PID.
bench_start_hyperllama() { # port log model home threads parallel ctx_per_seq [flags...]
  local port=$1 log=$2 model=$3 home=$4 threads=$5 parallel=$6 ctx=$7
  shift 7
  HYPERLLAMA_HOME="$home" "$HL" serve --host "127.0.0.1:$port" --parallel "$parallel" --ctx-size "$ctx" \
    --threads "$threads" --keep-alive=-1 "$@" >"$log" 2>&1 &
  BENCH_PID=$!
  _bench_pids+=("$BENCH_PID")
  bench_wait_up "http://127.0.0.1:$port/api/version"
  printf 'FROM %s\n' "$model" >"$home/Modelfile"
  HYPERLLAMA_HOST="127.0.0.1:$port" "$HL" create smol -f "$home/Modelfile" >/dev/null
  # Load it now, so that no measurement includes the load.
  curl -sf "http://127.0.0.1:$port/api/generate" -d '{"model":"smol","prompt":"hi","options":{"num_predict":1}}' >/dev/null
}

bench_stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Resident memory (KiB) of a process.
bench_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# The model to measure: the argument, else the test model; with REQUANT=Q4_0, a Q4_0 copy of it.
bench_model() { # [model.gguf]
  local m="${1:-}"
  [[ -z $m ]] && m=$("$BENCH_ROOT/scripts/fetch-model.sh")
  if [[ ${REQUANT:-} == Q4_0 ]]; then m=$(bench_q4_0 "$m"); fi
  echo "$m"
}

# A Q4_0 copy of a GGUF (cached beside it): Q4_0 has repacked x86 kernels, Q4_1 does not.
bench_q4_0() { # model.gguf -> prints the Q4_0 path
  local src=$1 dst="${1%.gguf}.Q4_0-requant.gguf"
  dst="${dst/.Q4_1.Q4_0-requant/.Q4_0-requant}"
  if [[ ! -s $dst ]]; then
    "$LS_BIN/llama-quantize" --allow-requantize "$src" "$dst.tmp" Q4_0 >&2
    mv "$dst.tmp" "$dst"
  fi
  echo "$dst"
}
