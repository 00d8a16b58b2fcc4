//! Passwords (and, later, SASL).

pub mod password;
