//! planbot's integration tests: one binary, one module per area, fakes of outside services in
//! `util` and `tests/fakes/`.

mod approvals;
mod bench;
mod classify;
mod console;
mod contract;
mod discord;
mod fake_discord;
mod fake_telegram;
mod guard;
mod messages_api;
mod planning;
mod postgres;
mod redteam;
mod replicas;
mod router;
mod runner;
mod store;
mod telegram;
mod util;
mod wait;
mod web_page;
