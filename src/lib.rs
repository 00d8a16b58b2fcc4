//! pimail: the whole mail server of a small ARM board, in one binary.
//!
//! The binary (`src/main.rs`) is the CLI; everything else is this library,
//! so that integration tests and benchmarks can use the same parts.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod imap;
pub mod message;
pub mod server;
pub mod smtp;
pub mod store;
pub mod systemd;
