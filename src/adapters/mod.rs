//! Front ends: each translates its platform to [`crate::router::Inbound`] and implements
//! [`crate::router::Outbound`]. No planning logic lives here.

pub mod console;
pub mod discord;
pub mod lane;
pub mod render;
pub mod telegram;
