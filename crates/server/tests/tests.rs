//! The server's tests, one binary (ripgrep's layout): the real router over the real
//! llama.cpp engine and the SmolLM2 model on an ephemeral loopback port (`util`), and over the
//! scripted mock engine in process (`mock`) for what needs no model.

mod util;

mod errors;
mod lifecycle;
mod mock;
mod ollama;
mod openai;
mod regressions;
mod scheduler;
mod security;
