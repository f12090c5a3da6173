//! planbot turns a Discord or Telegram chat (or a terminal) into a guided product-planning
//! conversation with Claude Code.
//!
//! # Layout
//! - [`claude`]: the Claude Code CLI: argv, spawn, stream-json events, outcome, kill.
//! - [`planning`]: a plan's phases, prompts and the policies for each way a turn ends.
//! - [`store`]: `planning.json`, owned by one thread, written atomically and durably.
pub mod claude;
pub mod planning;
pub mod store;
