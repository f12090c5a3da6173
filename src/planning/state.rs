//! A plan's state as planbot keeps it between turns: [`SessionEntry`], one per chat, stored by
//! [`crate::store`] under `"<adapter>:<channel>"` in `planning.json` (whose format this is).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::prompts::PhaseStatus;
use crate::claude::approval::ToolCall;

/// Longest `last_text_excerpt` kept.
const EXCERPT_CHARS: usize = 500;

/// Where a chat's plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Waiting for the user.
    Planning,
    /// A turn is in flight.
    Running,
    /// A turn was in flight when planbot stopped; the next message resumes the phase.
    Interrupted,
}

/// One line of a phase's conversation, kept to rebuild it if Claude's session is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecapItem {
    /// `user` or `assistant`.
    pub role: String,
    pub text: String,
}

/// A question the plan waits on: may Claude make this call?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub call: ToolCall,
    pub asked_at: DateTime<Utc>,
}

/// One chat's plan, as stored under `"<adapter>:<channel>"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub slug: String,
    pub description: String,
    /// The current phase's name.
    pub phase: String,
    /// The plan's phase list, fixed when it started, so a config change does not derail it.
    #[serde(default)]
    pub phases: Vec<String>,
    /// Which of `phases` are optional.
    #[serde(default)]
    pub optional_phases: Vec<String>,
    #[serde(default)]
    pub phases_completed: Vec<String>,
    /// Claude's session id for the current phase; set only once a turn produced a result.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Claude session ids of every phase so far, for the record in `plan.json`.
    #[serde(default)]
    pub phase_sessions: BTreeMap<String, String>,
    /// Our own id for this plan.
    pub planning_session_id: uuid::Uuid,
    pub adapter: String,
    pub channel_id: String,
    /// The pinned working directory, `<workspace>/<slug>`.
    pub cwd: PathBuf,
    pub status: EntryStatus,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub turns: u32,
    #[serde(default)]
    pub total_cost_usd: f64,
    #[serde(default)]
    pub last_subtype: Option<String>,
    #[serde(default)]
    pub last_text_excerpt: String,
    /// The last full reply of the current phase, written to `phases/` when the phase ends.
    #[serde(default)]
    pub last_reply: String,
    /// What the last reply said about the phase.
    #[serde(default = "unstated")]
    pub phase_status: PhaseStatus,
    /// This phase's conversation as planbot saw it, for a recap after a lost Claude session.
    #[serde(default)]
    pub recap: Vec<RecapItem>,
    /// Phase skills found missing; their phases run from built-in prompts.
    #[serde(default)]
    pub missing_skills: Vec<String>,
    /// Bumped on every change a button could act on; buttons carry it to detect staleness.
    #[serde(default)]
    pub revision: u64,
    /// Failed turns in a row; three pause the plan (the circuit breaker).
    #[serde(default)]
    pub failures: u32,
    /// Paused by the circuit breaker until the user says /resume.
    #[serde(default)]
    pub paused: bool,
    /// Who started the plan (`adapter:user`): who may answer its questions, besides
    /// `PLANBOT_APPROVERS`. Plans from before it was recorded have none.
    #[serde(default)]
    pub started_by: Option<String>,
    /// A tool call Claude waits on, for the user to allow or deny.
    #[serde(default)]
    pub pending_approval: Option<PendingApproval>,
    /// What the user allowed for the whole plan: `WebFetch(domain:<host>)`, or a tool's name.
    #[serde(default)]
    pub approved: Vec<String>,
    /// Fields written by a newer planbot, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn unstated() -> PhaseStatus {
    PhaseStatus::Unstated
}

impl SessionEntry {
    /// Records the latest reply's excerpt.
    pub fn set_excerpt(&mut self, text: &str) {
        self.last_text_excerpt = text.chars().take(EXCERPT_CHARS).collect();
    }

    /// 1-based position of the current phase.
    pub fn phase_number(&self) -> usize {
        self.phases
            .iter()
            .position(|p| *p == self.phase)
            .map_or(1, |i| i + 1)
    }

    /// The phase after the current one, if any.
    pub fn next_phase(&self) -> Option<&str> {
        let i = self.phases.iter().position(|p| *p == self.phase)?;
        self.phases.get(i + 1).map(String::as_str)
    }

    pub fn is_optional(&self, phase: &str) -> bool {
        self.optional_phases.iter().any(|p| p == phase)
    }
}
