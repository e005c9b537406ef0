#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 60) from a
# seed corpus of real inputs; any crash fails the script and leaves the input under
# fuzz/artifacts/. Installs cargo-fuzz from the Rust registry when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked >&2
# cargo fuzz passes nightly-only flags (-Zsanitizer=address); the machine's one (stable)
# toolchain ships the sanitizer runtimes, and RUSTC_BOOTSTRAP lets it accept the flags.
export RUSTC_BOOTSTRAP=1

corpus=fuzz/corpus
mkdir -p "$corpus/gguf_metadata" "$corpus/modelfile" "$corpus/request_json"
model=$(scripts/fetch-model.sh)
# The real model's header and metadata (the tensor data is cut: the reader must say so).
head -c 300000 "$model" >"$corpus/gguf_metadata/smollm2-head"
printf 'GGUF\003\000\000\000' >"$corpus/gguf_metadata/empty-v3"
printf 'FROM ./model.gguf\nPARAMETER temperature 0.7\nPARAMETER stop "<|im_end|>"\nSYSTEM """You are kind."""\nTEMPLATE "{{ .Prompt }}"\nMESSAGE user hi\nLICENSE MIT\n' \
  >"$corpus/modelfile/full"
printf 'FROM smol\nPARAMETER num_ctx 4096\n' >"$corpus/modelfile/short"
echo '{"model":"smol","prompt":"hi","options":{"temperature":0,"num_predict":5,"stop":["x"]},"format":"json"}' \
  >"$corpus/request_json/generate"
echo '{"model":"smol","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"format":{"type":"object","properties":{"a":{"type":"string"}}}}' \
  >"$corpus/request_json/chat"
echo '{"model":"smol","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"temperature":0.5,"top_p":0.9,"stop":"x","response_format":{"type":"json_object"}}' \
  >"$corpus/request_json/oai-chat"
echo '{"model":"smol","prompt":"hi","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}' \
  >"$corpus/request_json/oai-completion"
echo '{"model":"smol","max_tokens":9,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"r"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"},"thinking":{"type":"enabled","budget_tokens":16}}' \
  >"$corpus/request_json/anthropic"
echo '{"model":"smol","input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"x"}],"instructions":"i","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"text":{"format":{"type":"json_schema","name":"n","schema":{"type":"object"}}},"reasoning":{"effort":"low"},"truncation":"auto"}' \
  >"$corpus/request_json/responses"
printf 'ok<think>why</think>\n\nsure <tool_call>{"name": "f", "arguments": {"a": "}"}}</tool_call>' >"$corpus/request_json/generated-text"
# Real outputs of every family's tool-call format (Qwen3-Coder XML, Mistral, harmony, DeepSeek).
for f in tests/fixtures/tool_outputs/*.txt; do cp "$f" "$corpus/request_json/output-$(basename "$f")"; done

for target in gguf_metadata modelfile request_json; do
  echo "fuzzing $target for ${SECONDS_EACH}s" >&2
  cargo fuzz run "$target" "$corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 2>&1 | tail -4 >&2
done
echo "fuzzing: no crashes" >&2
