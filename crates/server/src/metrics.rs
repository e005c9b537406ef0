//! Prometheus metrics, `GET /metrics`, with vLLM's names under one prefix (`hyperllama_`),
//! labelled by model.
//!
//! Latencies are histograms observed where every generation passes (the service's
//! [`crate::service::Generation`]): time to first token, inter-token latency, end-to-end
//! latency and queue time, on per-model atomics (a token takes no lock). Token and request
//! counters are observed there too. Running/waiting requests, loaded models, slot/KV use and
//! the engines' own counters (prompt cache, speculation) are read from the registry at scrape
//! time, so they can never drift.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// vLLM's buckets for time to first token (seconds).
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// vLLM's buckets for inter-token latency (seconds).
const ITL_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// Buckets for end-to-end latency and queue time (seconds).
const E2E_BUCKETS: &[f64] =
    &[0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0];

/// A histogram whose observations take no lock: bucket counts and the sum (in nanoseconds)
/// are atomics.
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Self {
            buckets,
            counts: buckets.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let v = d.as_secs_f64();
        for (i, le) in self.buckets.iter().enumerate() {
            if v <= *le {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// One model's series. A generation looks its model's up once and then observes every token
/// without any lock.
pub struct ModelMetrics {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    cached_prompt_tokens: AtomicU64,
    /// By finish reason: stop, length, abort, embedding.
    requests: [AtomicU64; 4],
}

const REASONS: [&str; 4] = ["stop", "length", "abort", "embedding"];

impl ModelMetrics {
    fn new() -> Self {
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            queue: Histogram::new(E2E_BUCKETS),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            requests: Default::default(),
        }
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d);
    }

    pub fn observe_itl(&self, d: Duration) {
        self.itl.observe(d);
    }

    fn count(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A finished generation: latency, queue time, tokens, finish reason ("stop", "length").
    pub fn observe_finished(
        &self,
        reason: &'static str,
        e2e: Duration,
        queue: Duration,
        usage: &hyperllama_core::Usage,
    ) {
        self.e2e.observe(e2e);
        self.queue.observe(queue);
        self.prompt_tokens.fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
        self.cached_prompt_tokens.fetch_add(u64::from(usage.cached_tokens), Ordering::Relaxed);
        self.generation_tokens.fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
        self.count(reason);
    }

    /// A generation whose client left (or that failed) before its end.
    pub fn observe_aborted(&self) {
        self.count("abort");
    }

    /// Prompt tokens of an embedding request.
    pub fn observe_embedding(&self, prompt_tokens: u32) {
        self.prompt_tokens.fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
        self.count("embedding");
    }
}

#[derive(Default)]
struct Counters {
    /// error code
    errors: BTreeMap<&'static str, u64>,
    /// key name
    rate_limited: BTreeMap<String, u64>,
    /// status
    http: BTreeMap<u16, u64>,
    /// Prompts cut to fit the context (truncation policy), by model.
    truncated: BTreeMap<String, u64>,
}

/// What the registry reports for one loaded model at scrape time.
pub struct ModelGauges {
    pub model: String,
    pub running: u32,
    pub waiting: u32,
    pub slots: u32,
    pub kv_tokens: u64,
    pub kv_capacity: u64,
    pub stats: hyperllama_engine::ModelStats,
}

#[derive(Default)]
pub struct Metrics {
    models: RwLock<BTreeMap<String, Arc<ModelMetrics>>>,
    counters: Mutex<Counters>,
}

/// The prefix of every metric name.
pub const PREFIX: &str = "hyperllama_";

impl Metrics {
    /// `model`'s series (created on first use).
    pub fn model(&self, model: &str) -> Arc<ModelMetrics> {
        if let Some(m) = self.models.read().ok().and_then(|m| m.get(model).cloned()) {
            return m;
        }
        let Ok(mut models) = self.models.write() else { return Arc::new(ModelMetrics::new()) };
        models.entry(model.to_string()).or_insert_with(|| Arc::new(ModelMetrics::new())).clone()
    }

    fn with(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }

    pub fn count_error(&self, code: &'static str) {
        self.with(|c| *c.errors.entry(code).or_default() += 1);
    }

    pub fn count_rate_limited(&self, key: &str) {
        self.with(|c| *c.rate_limited.entry(key.into()).or_default() += 1);
    }

    pub fn count_http(&self, status: u16) {
        self.with(|c| *c.http.entry(status).or_default() += 1);
    }

    pub fn count_truncated(&self, model: &str) {
        self.with(|c| *c.truncated.entry(model.into()).or_default() += 1);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, models: &[ModelGauges]) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, values: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} gauge");
            for (labels, v) in values {
                let _ = writeln!(out, "{PREFIX}{name}{labels} {v}");
            }
        };
        let per_model = |f: &dyn Fn(&ModelGauges) -> f64| -> Vec<(String, f64)> {
            models.iter().map(|m| (format!("{{model=\"{}\"}}", escape(&m.model)), f(m))).collect()
        };
        gauge(&mut out, "models_loaded", "Models loaded now.", vec![(String::new(), models.len() as f64)]);
        gauge(&mut out, "num_requests_running", "Requests holding a sequence.", per_model(&|m| f64::from(m.running)));
        gauge(
            &mut out,
            "num_requests_waiting",
            "Requests waiting for a sequence.",
            per_model(&|m| f64::from(m.waiting)),
        );
        gauge(&mut out, "slots_total", "Sequences the model decodes together.", per_model(&|m| f64::from(m.slots)));
        gauge(
            &mut out,
            "kv_cache_usage_perc",
            "Fraction of the KV cache holding tokens (shared prefixes counted once per sequence).",
            per_model(&|m| if m.kv_capacity == 0 { 0.0 } else { (m.kv_tokens as f64 / m.kv_capacity as f64).min(1.0) }),
        );
        gauge(
            &mut out,
            "engine_ubatches_per_step",
            "Micro-batches llama.cpp split the last decode step into (1 is best: sequences in lane order).",
            per_model(&|m| f64::from(m.stats.ubatches_last_step)),
        );
        gauge(
            &mut out,
            "cache_ram_bytes",
            "Bytes of KV state held in the host-RAM prompt cache.",
            per_model(&|m| m.stats.cache_ram_bytes as f64),
        );
        gauge(
            &mut out,
            "cache_disk_bytes",
            "Bytes of KV state held in the disk prompt cache.",
            per_model(&|m| m.stats.cache_disk_bytes as f64),
        );
        let models_now: Vec<(String, Arc<ModelMetrics>)> =
            self.models.read().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        let histogram = |out: &mut String, name: &str, help: &str, pick: &dyn Fn(&ModelMetrics) -> &Histogram| {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} histogram");
            for (model, mm) in &models_now {
                let h = pick(mm);
                let m = escape(model);
                for (le, c) in h.buckets.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "{PREFIX}{name}_bucket{{model=\"{m}\",le=\"{le}\"}} {}",
                        c.load(Ordering::Relaxed)
                    );
                }
                let count = h.count.load(Ordering::Relaxed);
                let _ = writeln!(out, "{PREFIX}{name}_bucket{{model=\"{m}\",le=\"+Inf\"}} {count}");
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{PREFIX}{name}_sum{{model=\"{m}\"}} {sum}");
                let _ = writeln!(out, "{PREFIX}{name}_count{{model=\"{m}\"}} {count}");
            }
        };
        histogram(&mut out, "time_to_first_token_seconds", "Time from request to first token.", &|m| &m.ttft);
        histogram(&mut out, "inter_token_latency_seconds", "Time between streamed tokens.", &|m| &m.itl);
        histogram(&mut out, "e2e_request_latency_seconds", "Time from request to the last token.", &|m| &m.e2e);
        histogram(&mut out, "request_queue_time_seconds", "Time waiting for a sequence.", &|m| &m.queue);
        let counter = |out: &mut String, name: &str, help: &str, values: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} counter");
            for (labels, v) in values {
                let _ = writeln!(out, "{PREFIX}{name}{labels} {v}");
            }
        };
        let by_model = |f: &dyn Fn(&ModelMetrics) -> u64| -> Vec<(String, u64)> {
            models_now.iter().map(|(k, m)| (format!("{{model=\"{}\"}}", escape(k)), f(m))).collect()
        };
        counter(
            &mut out,
            "prompt_tokens_total",
            "Prompt tokens processed.",
            by_model(&|m| m.prompt_tokens.load(Ordering::Relaxed)),
        );
        counter(
            &mut out,
            "generation_tokens_total",
            "Tokens generated.",
            by_model(&|m| m.generation_tokens.load(Ordering::Relaxed)),
        );
        counter(
            &mut out,
            "prefix_cache_hit_tokens_total",
            "Prompt tokens served from cached KV.",
            by_model(&|m| m.cached_prompt_tokens.load(Ordering::Relaxed)),
        );
        let mut requests = Vec::new();
        for (model, m) in &models_now {
            for (i, reason) in REASONS.iter().enumerate() {
                let n = m.requests[i].load(Ordering::Relaxed);
                if n > 0 {
                    requests.push((format!("{{model=\"{}\",finished_reason=\"{reason}\"}}", escape(model)), n));
                }
            }
        }
        counter(&mut out, "request_success_total", "Finished requests by finish reason.", requests);
        let engine_counter =
            |out: &mut String, name: &str, help: &str, f: &dyn Fn(&hyperllama_engine::ModelStats) -> u64| {
                let values =
                    models.iter().map(|m| (format!("{{model=\"{}\"}}", escape(&m.model)), f(&m.stats))).collect();
                counter(out, name, help, values);
            };
        engine_counter(
            &mut out,
            "cache_hit_tokens_total",
            "Prompt tokens restored from the prompt cache (RAM or disk).",
            &|s| s.cache_hit_tokens,
        );
        engine_counter(
            &mut out,
            "cache_miss_tokens_total",
            "Prompt tokens computed because no cache held them.",
            &|s| s.cache_miss_tokens,
        );
        engine_counter(&mut out, "cache_evictions_total", "Entries evicted from the prompt cache.", &|s| {
            s.cache_evictions
        });
        engine_counter(&mut out, "spec_draft_tokens_total", "Tokens drafted by speculative decoding.", &|s| {
            s.spec_drafted
        });
        engine_counter(&mut out, "spec_accepted_tokens_total", "Drafted tokens accepted by verification.", &|s| {
            s.spec_accepted
        });
        let Ok(c) = self.counters.lock() else { return out };
        counter(
            &mut out,
            "errors_total",
            "Error responses by error code.",
            c.errors.iter().map(|(k, v)| (format!("{{code=\"{k}\"}}"), *v)).collect(),
        );
        counter(
            &mut out,
            "rate_limited_requests_total",
            "Requests refused by a rate limit, by key name.",
            c.rate_limited.iter().map(|(k, v)| (format!("{{key=\"{}\"}}", escape(k)), *v)).collect(),
        );
        counter(
            &mut out,
            "http_requests_total",
            "HTTP responses by status.",
            c.http.iter().map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v)).collect(),
        );
        counter(
            &mut out,
            "truncated_prompts_total",
            "Prompts whose oldest messages were dropped to fit the context.",
            c.truncated.iter().map(|(k, v)| (format!("{{model=\"{}\"}}", escape(k)), *v)).collect(),
        );
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let m = Metrics::default();
        m.model("smol:latest").observe_ttft(Duration::from_millis(30));
        m.model("smol:latest").observe_ttft(Duration::from_millis(300));
        let text = m.render(&[]);
        assert!(text.contains("hyperllama_time_to_first_token_seconds_bucket{model=\"smol:latest\",le=\"0.04\"} 1"));
        assert!(text.contains("hyperllama_time_to_first_token_seconds_bucket{model=\"smol:latest\",le=\"0.5\"} 2"));
        assert!(text.contains("hyperllama_time_to_first_token_seconds_count{model=\"smol:latest\"} 2"));
        assert!(text.contains("# TYPE hyperllama_time_to_first_token_seconds histogram"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
