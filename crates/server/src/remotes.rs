//! The fleet behind this server: remote OpenAI-compatible servers (vLLM, llama-server, other
//! HyperLlama nodes) whose models this server serves by name, so clients talk to one front door.
//!
//! A model name the local store does not have is looked up in the nodes' catalogs (their
//! `/v1/models`, refreshed in the background); the first node, in the order given, that serves
//! it gets the request, through the `openai` engine. Local models win over remote ones of the
//! same name. A node that cannot be reached keeps its last known catalog, so its models answer
//! "unavailable" (503) rather than "not found" while it is down.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyperllama_engine::{Engine, ServedModel};
use hyperllama_store::{Digest, Manifest};
use sha2::{Digest as _, Sha256};

/// Which node of the fleet: its place in the order the nodes were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub usize);

/// One model of one node.
#[derive(Debug, Clone)]
pub struct RemoteModel {
    pub node: NodeId,
    /// The node's API URL (`http://host:port/v1`).
    pub url: String,
    pub served: ServedModel,
}

#[derive(Default)]
pub struct Remotes {
    nodes: Vec<Arc<dyn Engine>>,
    /// Per node, its catalog as last fetched and how that fetch went.
    catalog: RwLock<Vec<Catalog>>,
}

#[derive(Debug, Clone, Default)]
struct Catalog {
    models: Vec<ServedModel>,
    /// When the last fetch ended, and its error if it failed (the models are then the last known).
    checked: Option<std::time::Instant>,
    error: Option<String>,
}

/// A node as the dashboard shows it (`GET /api/fleet`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub url: String,
    /// Its last catalog fetch answered (false before the first one).
    pub healthy: bool,
    pub error: Option<String>,
    /// Seconds since the last catalog fetch; `None` before the first.
    pub checked_secs_ago: Option<f64>,
    /// The model ids of its last known catalog.
    pub models: Vec<String>,
}

impl Remotes {
    /// Nodes in order of preference; each must have a catalog ([`Engine::catalog`]).
    pub fn new(nodes: Vec<Arc<dyn Engine>>) -> Self {
        let catalog = RwLock::new(vec![Catalog::default(); nodes.len()]);
        Self { nodes, catalog }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> &[Arc<dyn Engine>] {
        &self.nodes
    }

    /// Fetches every node's catalog, all at once (a node that does not answer keeps its last one).
    pub async fn refresh(&self) {
        let fetches = self.nodes.iter().map(|node| async move {
            match node.catalog() {
                Some(c) => tokio::time::timeout(Duration::from_secs(5), c.served_models()).await,
                None => Ok(Ok(Vec::new())),
            }
        });
        let results = futures::future::join_all(fetches).await;
        for (i, fetched) in results.into_iter().enumerate() {
            let url = self.url(NodeId(i));
            let (models, error) = match fetched {
                Ok(Ok(models)) => (Some(models), None),
                Ok(Err(e)) => {
                    tracing::warn!(node = %url, error = %e, "cannot list the node's models");
                    (None, Some(e.to_string()))
                }
                Err(_) => {
                    tracing::warn!(node = %url, "the node did not list its models within 5 s");
                    (None, Some("no answer within 5 s".to_string()))
                }
            };
            if let Ok(mut c) = self.catalog.write() {
                if let Some(models) = models {
                    c[i].models = models;
                }
                c[i].checked = Some(std::time::Instant::now());
                c[i].error = error;
            }
        }
    }

    /// Refreshes the catalogs every `every` until the server stops.
    pub fn spawn_refresher(self: Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if self.is_empty() {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.refresh().await;
            }
        }))
    }

    /// Stops the nodes this server launched.
    pub async fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }

    /// A node's API URL now.
    pub fn url(&self, node: NodeId) -> String {
        self.nodes.get(node.0).and_then(|n| n.catalog().map(|c| c.url())).unwrap_or_default()
    }

    /// The node's engine.
    pub fn node(&self, node: NodeId) -> Option<Arc<dyn Engine>> {
        self.nodes.get(node.0).cloned()
    }

    /// Every node: its URL, whether its last catalog fetch answered, and its models.
    pub fn status(&self) -> Vec<NodeStatus> {
        let Ok(catalog) = self.catalog.read() else { return Vec::new() };
        catalog
            .iter()
            .enumerate()
            .map(|(i, c)| NodeStatus {
                url: self.url(NodeId(i)),
                healthy: c.checked.is_some() && c.error.is_none(),
                error: c.error.clone(),
                checked_secs_ago: c.checked.map(|t| t.elapsed().as_secs_f64()),
                models: c.models.iter().map(|m| m.id.clone()).collect(),
            })
            .collect()
    }

    /// Every remote model, node by node.
    pub fn list(&self) -> Vec<RemoteModel> {
        let Ok(catalog) = self.catalog.read() else { return Vec::new() };
        catalog
            .iter()
            .enumerate()
            .flat_map(|(node, c)| {
                let url = self.url(NodeId(node));
                c.models.iter().map(move |served| RemoteModel {
                    node: NodeId(node),
                    url: url.clone(),
                    served: served.clone(),
                })
            })
            .collect()
    }

    /// The node model `name` refers to: its exact id, or the id with Ollama's implied `:latest`
    /// added or dropped (`smol` finds a HyperLlama node's `smol:latest`).
    pub fn find(&self, name: &str) -> Option<RemoteModel> {
        let all = self.list();
        let bare = name.strip_suffix(":latest");
        let exact = all.iter().find(|m| m.served.id == name);
        exact
            .or_else(|| all.iter().find(|m| m.served.id.strip_suffix(":latest") == Some(name)))
            .or_else(|| bare.and_then(|b| all.iter().find(|m| m.served.id == b)))
            .cloned()
    }
}

impl RemoteModel {
    /// The stand-in manifest a remote model is served under: its id as the name, no weights
    /// here, a digest of the node's URL and the id (stable while the node runs, so `/api/tags`
    /// and `/api/ps` agree; a launched node that restarts on another port is a new model).
    pub fn manifest(&self) -> Manifest {
        let digest = Sha256::digest(format!("{}\0{}", self.url, self.served.id).as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let modified = chrono::DateTime::from_timestamp(self.served.created, 0).unwrap_or_default();
        Manifest {
            name: self.served.id.clone(),
            model: Digest::parse(&format!("sha256:{hex}")).expect("64 hex digits are a digest"),
            size: 0,
            template: None,
            system: None,
            license: None,
            parameters: Default::default(),
            messages: Vec::new(),
            source: self.url.clone(),
            modified_at: modified.to_rfc3339(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperllama_engine::mock::MockEngine;

    fn with_catalog(ids: &[&str]) -> Remotes {
        let r = Remotes::new(vec![Arc::new(MockEngine::default())]);
        let served = ids.iter().map(|id| ServedModel { id: id.to_string(), ..ServedModel::default() }).collect();
        r.catalog.write().expect("lock")[0].models = served;
        r
    }

    #[tokio::test]
    async fn status_reports_each_node_after_its_first_check() {
        let r = with_catalog(&["smol:latest"]);
        let before = r.status();
        assert_eq!(before.len(), 1);
        assert!(!before[0].healthy && before[0].checked_secs_ago.is_none());
        assert_eq!(before[0].models, vec!["smol:latest".to_string()]);
        r.refresh().await;
        let after = r.status();
        assert!(after[0].healthy && after[0].error.is_none() && after[0].checked_secs_ago.is_some());
    }

    #[test]
    fn names_find_ids_with_and_without_the_implied_tag() {
        let r = with_catalog(&["smol:latest", "meta-llama/Llama-3.1-8B-Instruct", "qwen"]);
        assert_eq!(r.find("smol").map(|m| m.served.id), Some("smol:latest".into()));
        assert_eq!(r.find("smol:latest").map(|m| m.served.id), Some("smol:latest".into()));
        assert_eq!(r.find("qwen:latest").map(|m| m.served.id), Some("qwen".into()));
        let m = r.find("meta-llama/Llama-3.1-8B-Instruct").expect("hf id");
        assert!(r.find("smol:7b").is_none() && r.find("llama").is_none());
        let manifest = m.manifest();
        assert_eq!(manifest.name, "meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(m.node, NodeId(0));
        assert!(r.node(m.node).is_some());
        assert_eq!(manifest.model, m.manifest().model, "the digest is stable");
    }
}
