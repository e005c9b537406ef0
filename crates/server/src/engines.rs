//! The engines a server can load models with, and which one serves a model.
//!
//! The choice, most explicit first: the request's `options.engine`, the model's Modelfile
//! `PARAMETER engine`, the server's `--engine`; with none of them, the engine measured fastest
//! for this model (`hyperllama bench --record`), else the engine made for the model's format
//! (GGUF: llama.cpp). Asking for an engine this server does not have is the caller's error
//! (400), listing the ones it has.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyperllama_engine::Engine;
use hyperllama_store::Measurement;

use crate::ApiError;

/// The engine GGUF models get when nobody asks for another.
pub const GGUF_DEFAULT: &str = "llamacpp";

#[derive(Clone)]
pub struct Engines {
    list: Vec<Arc<dyn Engine>>,
    /// `--engine`: used when neither the request nor the model names one.
    preferred: Option<String>,
}

impl Engines {
    pub fn new(list: Vec<Arc<dyn Engine>>) -> Self {
        Self { list, preferred: None }
    }

    /// The server-wide choice (`serve --engine`).
    pub fn prefer(mut self, id: Option<String>) -> Self {
        self.preferred = id.filter(|s| !s.is_empty());
        self
    }

    pub fn list(&self) -> &[Arc<dyn Engine>] {
        &self.list
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.list.iter().map(|e| e.id()).collect()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Engine>> {
        self.list.iter().find(|e| e.id().eq_ignore_ascii_case(id))
    }

    /// The engine for a GGUF model, given the request's and the model's wishes and the
    /// engines' measured speeds on it (engine id -> measurement), and why.
    pub fn choose(
        &self,
        requested: Option<&str>,
        model_param: Option<&str>,
        measured: Option<&BTreeMap<String, Measurement>>,
    ) -> Result<(Arc<dyn Engine>, String), ApiError> {
        let wish = [
            (requested, "the request's options.engine"),
            (model_param, "the model's PARAMETER engine"),
            (self.preferred.as_deref(), "the server's --engine"),
        ]
        .into_iter()
        .find_map(|(id, why)| id.filter(|s| !s.is_empty()).map(|id| (id, why)));
        if let Some((id, why)) = wish {
            return match self.get(id) {
                Some(e) => Ok((e.clone(), format!("{id}: asked for by {why}"))),
                None => Err(ApiError::bad_request(format!(
                    "engine {id:?} (from {why}) is not available in this server; available: {}",
                    self.ids().join(", ")
                ))
                .with_param("engine")),
            };
        }
        let fastest = measured
            .into_iter()
            .flatten()
            .filter_map(|(id, m)| self.get(id).map(|e| (e, m)))
            .max_by(|a, b| a.1.decode_tps.total_cmp(&b.1.decode_tps));
        if let Some((engine, m)) = fastest {
            let others: Vec<String> = measured
                .into_iter()
                .flatten()
                .filter(|(id, _)| id.as_str() != engine.id())
                .map(|(id, o)| format!("{id} {:.1}", o.decode_tps))
                .collect();
            let why = format!(
                "{}: measured fastest for this model ({:.1} decode tok/s{}{})",
                engine.id(),
                m.decode_tps,
                if others.is_empty() { "" } else { " against " },
                others.join(", ")
            );
            return Ok((engine.clone(), why));
        }
        let engine = self
            .get(GGUF_DEFAULT)
            .or_else(|| self.list.first())
            .ok_or_else(|| ApiError::bad_request("this server has no engine"))?;
        Ok((engine.clone(), format!("{}: the default for GGUF", engine.id())))
    }

    /// Stops what engines run beside the server (sidecars).
    pub async fn shutdown(&self) {
        for e in &self.list {
            e.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperllama_engine::mock::MockEngine;

    #[test]
    fn explicit_wishes_win_in_order_and_unknown_engines_are_errors() {
        let engines = Engines::new(vec![Arc::new(MockEngine::default())]);
        let id = engines.ids()[0];
        let (e, why) = engines.choose(None, None, None).expect("default");
        assert_eq!(e.id(), id);
        assert!(why.contains("default"), "{why}");
        let (_, why) = engines.choose(Some(id), Some("nope"), None).expect("request wins");
        assert!(why.contains("request"), "{why}");
        let err = engines.choose(None, Some("vllm"), None).err().expect("unknown engine");
        assert!(err.to_string().contains("vllm") && err.to_string().contains(id), "{err}");
        let err = engines.clone().prefer(Some("max".into())).choose(None, None, None).err().expect("unknown --engine");
        assert!(err.to_string().contains("--engine"), "{err}");

        // Measured speeds pick among the engines this server has; wishes still win.
        let m = |tps: f64| Measurement { decode_tps: tps, ttft_ms: 1.0, threads: None, measured_at: String::new() };
        let measured: BTreeMap<String, Measurement> =
            [(id.to_string(), m(50.0)), ("elsewhere".to_string(), m(900.0))].into();
        let (e, why) = engines.choose(None, None, Some(&measured)).expect("measured");
        assert_eq!(e.id(), id);
        assert!(why.contains("measured fastest") && why.contains("elsewhere 900.0"), "{why}");
        let (_, why) = engines.choose(Some(id), None, Some(&measured)).expect("request");
        assert!(why.contains("request"), "{why}");
    }
}
