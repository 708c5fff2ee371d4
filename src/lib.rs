//! train-vector: steering vectors for transformer language models, trained from contrast pairs.
//!
//! The pipeline reads top to bottom: [`data`] loads contrast pairs, [`layers`] resolves which
//! decoder blocks to read, [`model`] runs the forward pass with hooks, [`train`] turns captured
//! activations into a mean-difference vector ([`aggregate`] holds the other ways to turn
//! them into a direction), and [`vector`] writes and reads the result.

pub mod aggregate;
pub mod benchmark;
pub mod chat;
pub mod cli;
pub mod completions;
pub mod data;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod file_set;
pub mod generate;
pub mod gguf_header;
pub mod interrupt;
pub mod layers;
pub mod memory;
pub mod model;
pub mod naming;
pub mod plot;
pub mod resources;
pub mod serve;
pub mod steer;
pub mod train;
pub mod vector;

pub use error::{Error, Result};
