//! The llama.cpp engine end to end with the real SmolLM2 model: one test binary (ripgrep's
//! layout), one module per concern.

mod util;

mod batching;
mod build;
mod cache;
mod engine;
mod load_errors;
