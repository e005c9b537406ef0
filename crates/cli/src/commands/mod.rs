pub mod bench;
pub mod generate;
pub mod info;
