pub mod bench;
pub mod generate;
pub mod info;
pub mod models;
pub mod run;
pub mod serve;
