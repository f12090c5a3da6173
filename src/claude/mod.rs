//! The Claude Code CLI: argument vector, subprocess runner, stream-json events and the outcome of
//! a turn. Nothing here knows about planning; [`crate::planning`] builds on it.

pub mod approval;
pub mod args;
pub mod env;
pub mod events;
pub mod guard;
pub mod outcome;
pub mod policy;
pub mod runner;
pub mod sandbox;

pub use args::{CommonArgs, TurnArgs, build_args};
pub use events::{StreamEvent, Usage};
pub use outcome::{Exit, RawTurn, Stopped, TurnOutcome, TurnStatus, classify};
pub use policy::{ToolPolicy, tool_policy};
pub use runner::{Progress, Runner, RunnerConfig, TurnSpec, reap_orphans};
pub use sandbox::{Sandbox, SandboxMode};
