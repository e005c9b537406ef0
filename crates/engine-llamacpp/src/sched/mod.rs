//! Scheduling for the compute thread: the pure planner ([`plan`]) and n-gram drafting
//! ([`spec`]); the executor that carries plans out on llama.cpp is `crate::worker`.

pub mod plan;
pub mod spec;
