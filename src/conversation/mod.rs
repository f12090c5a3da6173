//! The conversation: what each message, command and button means in each state of a plan
//! ([`decide`], pure) and every text a user sees ([`copy`]).

pub mod copy;
pub mod decide;
mod turn;
mod worker;

pub use decide::{BREAKER_FAILURES, Decision, Limits, Op, QuestionAnswer, decide};

/// A plan in its first phase of two, for the module's tests.
#[cfg(test)]
pub(crate) fn sample_entry() -> crate::planning::state::SessionEntry {
    serde_json::from_value(serde_json::json!({
        "slug": "todo-app", "description": "a list", "phase": "office-hours",
        "phases": ["office-hours", "plan-ceo-review"],
        "planning_session_id": "7f1c1a5e-3d9a-4a57-9a49-0b8e6c7d1e2f", "adapter": "console",
        "channel_id": "local", "cwd": "/tmp/ws/todo-app", "status": "planning",
        "started_at": "2026-11-21T10:00:00Z", "updated_at": "2026-11-21T10:00:00Z",
    }))
    .expect("a valid entry")
}
