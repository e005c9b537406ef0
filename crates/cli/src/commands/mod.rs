pub mod bench;
mod bench_chart;
mod bench_serve;
pub mod generate;
pub mod info;
pub mod models;
pub mod run;
pub mod serve;
