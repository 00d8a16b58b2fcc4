//! pimail: the whole mail server of a small ARM board, in one binary.
//!
//! The binary (`src/main.rs`) is the CLI; everything else is this library,
//! so that integration tests and benchmarks can use the same parts.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod authres;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod imap;
pub mod message;
pub mod outbound;
pub mod pop3;
pub mod scan;
pub mod server;
pub mod smtp;
pub mod spam;
pub mod store;
pub mod systemd;
