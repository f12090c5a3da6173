//! planbot turns a Discord or Telegram chat (or a terminal) into a guided product-planning
//! conversation with Claude Code.
//!
//! # Layout
//! - [`config`]: defaults < `planbot.toml` < environment, validated once into a typed `Config`.
//! - [`claude`]: the Claude Code CLI: argv and tool policy, child environment, sandbox, spawn,
//!   stream-json events, outcome, kill, and the path guard hook.
//! - [`walls`]: the agent's confinement, raised once at start-up and reported by `check`.
//! - [`planning`]: a plan's phases, prompts, the policies for each way a turn ends, and its state
//!   between turns (`SessionEntry`, the format of `planning.json`'s sessions).
//! - [`store`]: the `SessionStore` trait; `planning.json`, owned by one thread, written atomically
//!   and durably. [`store_pg`]: the same in PostgreSQL (`PLANBOT_DATABASE_URL`), with the inbox
//!   of kept events and the chats' leases for several replicas.
//! - [`durable`]: replacing a file so that a crash leaves it whole, old or new.
//! - [`chat`]: the platform-neutral vocabulary front ends speak (`Inbound`, `Outgoing`, `Outbound`).
//! - [`commands`]: the one command table behind `/help`, Telegram's menu and Discord's commands.
//! - [`conversation`]: `decide(state, input) -> Decision`, pure, and all the copy users see.
//! - [`router`]: chat events to actions; one worker per chat; the one authorization check.
//! - [`adapters`]: front ends (console, Telegram, Discord), translation only, over one shared
//!   delivery lane (pacing, rate limits, retries).
//! - [`app`]: wiring, and the operator's `check` and `sessions` commands.
//! - [`scrub`]: every outgoing text cleaned of secrets before a front end sends it.
//! - [`shutdown`], [`telemetry`]: signals and logging; [`sync`]: locks that survive a panic.
pub mod adapters;
pub mod app;
pub mod audit;
pub mod chat;
pub mod claude;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod durable;
pub mod planning;
pub mod router;
pub mod scrub;
pub mod shutdown;
pub mod store;
pub mod store_pg;
pub mod sync;
pub mod telemetry;
pub mod walls;
