//! SMTP: the inbound session (RFC 5321) with its extensions.

pub mod command;
pub mod data;
pub mod inspect;
pub mod session;
pub mod spool;
