//! Prometheus metrics, `GET /metrics`, with vLLM's names under one prefix (`hyperllama_`),
//! labelled by model.
//!
//! Latencies are histograms observed where every generation passes
//! ([`crate::generation::Generation::pieces`]): time to first token, inter-token latency,
//! end-to-end latency and queue time. Token and request counters are observed there too.
//! Running/waiting requests, loaded models and slot/KV use are gauges read from the registry
//! at scrape time, so they can never drift.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// vLLM's buckets for time to first token (seconds).
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// vLLM's buckets for inter-token latency (seconds).
const ITL_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// Buckets for end-to-end latency and queue time (seconds).
const E2E_BUCKETS: &[f64] =
    &[0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0];

#[derive(Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Self { buckets, counts: vec![0; buckets.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (i, le) in self.buckets.iter().enumerate() {
            if v <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    ttft: BTreeMap<String, Histogram>,
    itl: BTreeMap<String, Histogram>,
    e2e: BTreeMap<String, Histogram>,
    queue: BTreeMap<String, Histogram>,
    prompt_tokens: BTreeMap<String, u64>,
    generation_tokens: BTreeMap<String, u64>,
    cached_prompt_tokens: BTreeMap<String, u64>,
    /// (model, finished_reason)
    requests: BTreeMap<(String, &'static str), u64>,
    /// error code
    errors: BTreeMap<&'static str, u64>,
    /// key name
    rate_limited: BTreeMap<String, u64>,
    /// (method class, status)
    http: BTreeMap<u16, u64>,
}

/// What the registry reports for one loaded model at scrape time.
pub struct ModelGauges {
    pub model: String,
    pub running: u32,
    pub waiting: u32,
    pub slots: u32,
    pub kv_tokens: u64,
    pub kv_capacity: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The prefix of every metric name.
pub const PREFIX: &str = "hyperllama_";

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut i) = self.inner.lock() {
            f(&mut i);
        }
    }

    pub fn observe_ttft(&self, model: &str, d: Duration) {
        self.with(|i| {
            i.ttft.entry(model.into()).or_insert_with(|| Histogram::new(TTFT_BUCKETS)).observe(d.as_secs_f64())
        });
    }

    pub fn observe_itl(&self, model: &str, d: Duration) {
        self.with(|i| {
            i.itl.entry(model.into()).or_insert_with(|| Histogram::new(ITL_BUCKETS)).observe(d.as_secs_f64())
        });
    }

    /// A finished generation: latency, queue time, tokens, finish reason.
    pub fn observe_finished(
        &self,
        model: &str,
        reason: &'static str,
        e2e: Duration,
        queue: Duration,
        usage: &hyperllama_core::Usage,
    ) {
        self.with(|i| {
            i.e2e.entry(model.into()).or_insert_with(|| Histogram::new(E2E_BUCKETS)).observe(e2e.as_secs_f64());
            i.queue.entry(model.into()).or_insert_with(|| Histogram::new(E2E_BUCKETS)).observe(queue.as_secs_f64());
            *i.prompt_tokens.entry(model.into()).or_default() += u64::from(usage.prompt_tokens);
            *i.cached_prompt_tokens.entry(model.into()).or_default() += u64::from(usage.cached_tokens);
            *i.generation_tokens.entry(model.into()).or_default() += u64::from(usage.completion_tokens);
            *i.requests.entry((model.into(), reason)).or_default() += 1;
        });
    }

    /// A generation whose client left (or that failed) before its end.
    pub fn observe_aborted(&self, model: &str) {
        self.with(|i| *i.requests.entry((model.into(), "abort")).or_default() += 1);
    }

    /// Prompt tokens of an embedding request.
    pub fn observe_embedding(&self, model: &str, prompt_tokens: u32) {
        self.with(|i| {
            *i.prompt_tokens.entry(model.into()).or_default() += u64::from(prompt_tokens);
            *i.requests.entry((model.into(), "embedding")).or_default() += 1;
        });
    }

    pub fn count_error(&self, code: &'static str) {
        self.with(|i| *i.errors.entry(code).or_default() += 1);
    }

    pub fn count_rate_limited(&self, key: &str) {
        self.with(|i| *i.rate_limited.entry(key.into()).or_default() += 1);
    }

    pub fn count_http(&self, status: u16) {
        self.with(|i| *i.http.entry(status).or_default() += 1);
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
        let Ok(i) = self.inner.lock() else { return out };
        let histogram = |out: &mut String, name: &str, help: &str, hs: &BTreeMap<String, Histogram>| {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} histogram");
            for (model, h) in hs {
                let m = escape(model);
                for (le, c) in h.buckets.iter().zip(&h.counts) {
                    let _ = writeln!(out, "{PREFIX}{name}_bucket{{model=\"{m}\",le=\"{le}\"}} {c}");
                }
                let _ = writeln!(out, "{PREFIX}{name}_bucket{{model=\"{m}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{PREFIX}{name}_sum{{model=\"{m}\"}} {}", h.sum);
                let _ = writeln!(out, "{PREFIX}{name}_count{{model=\"{m}\"}} {}", h.count);
            }
        };
        histogram(&mut out, "time_to_first_token_seconds", "Time from request to first token.", &i.ttft);
        histogram(&mut out, "inter_token_latency_seconds", "Time between streamed tokens.", &i.itl);
        histogram(&mut out, "e2e_request_latency_seconds", "Time from request to the last token.", &i.e2e);
        histogram(&mut out, "request_queue_time_seconds", "Time waiting for a sequence.", &i.queue);
        let counter = |out: &mut String, name: &str, help: &str, values: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} counter");
            for (labels, v) in values {
                let _ = writeln!(out, "{PREFIX}{name}{labels} {v}");
            }
        };
        let by_model = |m: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
            m.iter().map(|(k, v)| (format!("{{model=\"{}\"}}", escape(k)), *v)).collect()
        };
        counter(&mut out, "prompt_tokens_total", "Prompt tokens processed.", by_model(&i.prompt_tokens));
        counter(&mut out, "generation_tokens_total", "Tokens generated.", by_model(&i.generation_tokens));
        counter(
            &mut out,
            "prefix_cache_hit_tokens_total",
            "Prompt tokens served from cached KV.",
            by_model(&i.cached_prompt_tokens),
        );
        counter(
            &mut out,
            "request_success_total",
            "Finished requests by finish reason.",
            i.requests
                .iter()
                .map(|((m, r), v)| (format!("{{model=\"{}\",finished_reason=\"{r}\"}}", escape(m)), *v))
                .collect(),
        );
        counter(
            &mut out,
            "errors_total",
            "Error responses by error code.",
            i.errors.iter().map(|(k, v)| (format!("{{code=\"{k}\"}}"), *v)).collect(),
        );
        counter(
            &mut out,
            "rate_limited_requests_total",
            "Requests refused by a rate limit, by key name.",
            i.rate_limited.iter().map(|(k, v)| (format!("{{key=\"{}\"}}", escape(k)), *v)).collect(),
        );
        counter(
            &mut out,
            "http_requests_total",
            "HTTP responses by status.",
            i.http.iter().map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v)).collect(),
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
        m.observe_ttft("smol:latest", Duration::from_millis(30));
        m.observe_ttft("smol:latest", Duration::from_millis(300));
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
