//! The integration tests, one binary: each module pins the behaviour it is named after, on the
//! committed fixtures (and the demo models when `scripts/demo-model.sh` has fetched them).
//! Tests report what they measured and why they skipped on stderr.

#![allow(clippy::print_stderr, clippy::print_stdout)]

mod aggregate;
mod benchmark;
mod cli;
mod common;
mod completions;
mod crash_safety;
mod data_quality;
mod demo_model;
mod evaluate;
mod knobs;
mod parity;
mod real_data;
mod serve;
mod steering;
mod use_vectors;
