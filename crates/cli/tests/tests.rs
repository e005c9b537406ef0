//! The `hyperllama` binary end to end, one test binary: in-process commands with the real
//! SmolLM2 model (`cli`), and `serve` as a real process driven by the CLI's own verbs (`serve`).

mod cli;
mod serve;
