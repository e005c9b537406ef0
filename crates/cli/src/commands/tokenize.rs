//! `hyperllama tokenize MODEL TEXT`: the model's tokens for a text, in-process (the model is
//! loaded as `generate` loads it), for counting before sending and for checking templates.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hyperllama_server::service::Service;

use crate::args::ModelArgs;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text; `-` reads it from stdin.
    text: String,
    /// Add the BOS token and read special tokens (`<|im_start|>`) as generation does.
    #[arg(long)]
    special: bool,
    /// Print only the number of tokens.
    #[arg(long, conflicts_with = "json")]
    count: bool,
    /// Print `{"tokens": [{"id", "piece"}], "count"}`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let text = if args.text == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the text from stdin")?;
        s
    } else {
        args.text.clone()
    };
    args.model.check()?;
    if args.model.is_served_elsewhere() {
        anyhow::bail!("tokenize needs the model's weights here: give a GGUF file or a model in the store");
    }
    let registry = crate::local::registry(&args.model)?;
    let resolved = crate::local::resolve(&registry, &args.model.model).await?;
    let service = Service::new(registry.clone(), Arc::default());
    let result = service.tokenize(&resolved.key, text, args.special).await.map_err(|e| anyhow::anyhow!("{e}"));
    registry.unload_all().await;
    registry.engines().shutdown().await;
    let tokens = result?;
    let mut out = std::io::stdout().lock();
    if args.count {
        writeln!(out, "{}", tokens.len())?;
    } else if args.json {
        let list: Vec<serde_json::Value> = tokens
            .iter()
            .map(|(id, bytes)| serde_json::json!({ "id": id, "piece": String::from_utf8_lossy(bytes) }))
            .collect();
        writeln!(out, "{}", serde_json::json!({ "tokens": list, "count": tokens.len() }))?;
    } else {
        for (id, bytes) in &tokens {
            writeln!(out, "{id:>8} {:?}", String::from_utf8_lossy(bytes))?;
        }
        eprintln!("{} tokens", tokens.len());
    }
    Ok(())
}
