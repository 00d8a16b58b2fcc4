//! Outbound delivery: the queue runner, the SMTP client, routes (MX or a
//! smarthost) and delivery status notifications.

pub mod client;
pub mod dsn;
pub mod mx;
pub mod runner;
pub mod sign;
