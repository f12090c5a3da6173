//! A plan's conversation with Claude Code, phase by phase: which turn to run, and what to do with
//! each way a turn can end (retry, resume, restart from a recap, fall back to a built-in prompt).

pub mod inbox;
pub mod phases;
pub mod prompts;
mod session;
pub mod state;
pub mod workspace;

pub use session::PlanningSession;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::claude::approval::{Approvals, ToolCall};
use crate::claude::{
    CommonArgs, Progress, Runner, TurnArgs, TurnOutcome, TurnSpec, TurnStatus, build_args, classify,
};
pub use phases::{DEFAULT_PHASES, Phase, parse_phases};
pub use prompts::{PhaseStatus, Prompts, Vars};
use state::{EntryStatus, PendingApproval, RecapItem, SessionEntry};
use workspace::{Ownership, WorkspaceError};

/// Longest recap kept per phase, in items and characters per item.
const RECAP_ITEMS: usize = 40;
const RECAP_ITEM_CHARS: usize = 4000;

/// How turns are run, shared by every plan.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub common: CommonArgs,
    /// `--max-turns` of an ordinary turn.
    pub max_turns: u32,
    /// `--max-turns` of the one retry after running out.
    pub retry_max_turns: u32,
    /// Base delay before retrying an overloaded API (jittered up to twice this).
    pub retry_delay: Duration,
    /// `<workspace>/<slug>` is each plan's working directory.
    pub workspace_root: PathBuf,
    /// The phases of a new plan.
    pub phases: Vec<Phase>,
    /// Tools whose calls the user allows or denies by button (the path guard asks).
    pub approvable: Vec<String>,
    /// `PLANBOT_WEBFETCH_DOMAINS`: fetched without asking.
    pub webfetch_domains: Vec<String>,
}

/// What planning needs to run turns: a cheap handle.
#[derive(Clone)]
pub struct Planner {
    runner: Runner,
    prompts: Arc<Prompts>,
    settings: Arc<PlanSettings>,
}

/// How a planning step ended, for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What to show: the model's reply without its status marker, or an explanation.
    pub text: String,
    pub outcome: ReplyOutcome,
    /// Things the user should know that happened on the way (a fallback, a restart).
    pub notices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplyOutcome {
    /// Claude answered; the phase says whether it may advance.
    Answered(PhaseStatus),
    /// The step failed; the plan is unchanged and usable.
    Failed(TurnStatus),
    /// Cancelled by the user.
    Cancelled,
    /// Claude waits for the user to allow or deny a tool call (kept in the plan's state).
    Deferred(ToolCall),
}

impl Reply {
    pub fn is_answered(&self) -> bool {
        matches!(self.outcome, ReplyOutcome::Answered(_))
    }
}

/// A step that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    BadSlug(String),
    #[error("this is the last phase; finalize the plan instead")]
    LastPhase,
    /// `slug` is the workspace's name: users never see the server's paths.
    #[error("planbot could not prepare the workspace `{slug}`: {source}")]
    Workspace { slug: String, source: io::Error },
    #[error("`{0}` belongs to another chat; pick another name")]
    Taken(String),
    #[error(transparent)]
    Unsafe(#[from] WorkspaceError),
    #[error("planbot failed inside: {0}")]
    Internal(String),
}

/// The slug rule, stated for users.
pub const SLUG_RULE: &str = "a slug is 1 to 63 characters of lower-case letters, digits and dashes, \
starting with a letter or digit (for example `todo-app`)";

/// Checks a slug against `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn validate_slug(slug: &str) -> Result<(), PlanError> {
    let mut chars = slug.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && slug.len() <= 63 {
        Ok(())
    } else {
        Err(PlanError::BadSlug(format!(
            "`{}` is not a valid slug: {SLUG_RULE}",
            slug.chars().take(80).collect::<String>()
        )))
    }
}

impl Planner {
    /// How many turns run at once at most.
    pub fn capacity(&self) -> usize {
        self.runner.capacity()
    }

    /// Returns once every `claude` still exiting after its answer has ended.
    pub async fn drain(&self) {
        self.runner.drain().await;
    }

    /// Returns once no `claude` is still running in `workspace`.
    pub async fn settled(&self, workspace: &Path) {
        self.runner.settled(workspace).await;
    }

    pub fn new(runner: Runner, prompts: Prompts, settings: PlanSettings) -> Planner {
        Planner {
            runner,
            prompts: Arc::new(prompts),
            settings: Arc::new(settings),
        }
    }

    /// The workspace of a slug, checked to stay under the workspace root.
    pub fn workspace_of(&self, slug: &str) -> Result<PathBuf, PlanError> {
        validate_slug(slug)?;
        let path = self.settings.workspace_root.join(slug);
        // A valid slug has no separators or dots, so the join cannot leave the root; checked anyway
        // so that a future change to the rule cannot open a path traversal.
        if path.parent() != Some(self.settings.workspace_root.as_path()) {
            return Err(PlanError::BadSlug(format!("`{slug}` leaves the workspace")));
        }
        Ok(path)
    }

    /// A new plan's entry, its workspace created. No turn runs yet.
    pub fn new_plan(
        &self,
        adapter: &str,
        channel_id: &str,
        slug: &str,
        description: &str,
    ) -> Result<SessionEntry, PlanError> {
        let cwd = self.workspace_of(slug)?;
        let root = &self.settings.workspace_root;
        let failed = |source| PlanError::Workspace {
            slug: slug.to_string(),
            source,
        };
        std::fs::create_dir_all(root).map_err(failed)?;
        let chat = format!("{adapter}:{channel_id}");
        if workspace::claim(root, slug, &chat).map_err(failed)? == Ownership::Taken {
            return Err(PlanError::Taken(slug.to_string()));
        }
        if std::fs::symlink_metadata(&cwd).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(WorkspaceError::Symlink(slug.to_string()).into());
        }
        std::fs::create_dir_all(&cwd).map_err(failed)?;
        let description = prompts::clean_user_text(description).trim().to_string();
        workspace::write_file(&cwd, "idea.md", format!("{description}\n").as_bytes())?;
        // Claude Code keys sessions by the working directory's path: pin it absolute.
        let cwd = cwd.canonicalize().unwrap_or(cwd);
        let phases = &self.settings.phases;
        let now = Utc::now();
        Ok(SessionEntry {
            slug: slug.to_string(),
            description,
            phase: phases.first().map(|p| p.name.clone()).unwrap_or_default(),
            phases: phases.iter().map(|p| p.name.clone()).collect(),
            optional_phases: phases
                .iter()
                .filter(|p| p.optional)
                .map(|p| p.name.clone())
                .collect(),
            phases_completed: Vec::new(),
            session_id: None,
            phase_sessions: BTreeMap::new(),
            planning_session_id: uuid::Uuid::new_v4(),
            adapter: adapter.to_string(),
            channel_id: channel_id.to_string(),
            cwd,
            status: EntryStatus::Planning,
            started_at: now,
            updated_at: now,
            turns: 0,
            total_cost_usd: 0.0,
            last_subtype: None,
            last_text_excerpt: String::new(),
            last_reply: String::new(),
            phase_status: PhaseStatus::Unstated,
            recap: Vec::new(),
            missing_skills: Vec::new(),
            revision: 0,
            failures: 0,
            paused: false,
            started_by: None,
            pending_approval: None,
            approved: Vec::new(),
            extra: Default::default(),
        })
    }
}

/// The notes a reply carries about what happened on the way (shown in italics above it).
pub mod notice {
    pub const SESSION_LOST: &str = "Claude's earlier session for this phase was lost, so I \
restarted the phase from my notes of the conversation.";

    pub fn skill_missing(name: &str) -> String {
        format!(
            "The /{name} skill is not installed here, so this phase uses planbot's built-in prompt."
        )
    }

    pub fn moved_aside(files: &[String]) -> String {
        format!(
            "planbot found {} in the plan's workspace, which Claude Code would follow as \
             instructions, and moved it aside.",
            files.join(", ")
        )
    }

    /// Claude was refused tools: said, so that a plan never silently misses work.
    pub fn denied(tools: &[String]) -> String {
        let names: Vec<String> = tools.iter().map(|t| format!("`{t}`")).collect();
        format!(
            "Claude wanted to use {} here; planbot does not allow that, so this reply was \
             written without it.",
            names.join(", ")
        )
    }
}

/// What the user is told when a step fails; the plan stays as it was.
pub fn failure_message(status: &TurnStatus) -> String {
    match status {
        TurnStatus::MaxTurns => "Claude ran out of turns twice on this step. Your plan is intact: \
            reply to continue, or narrow the question."
            .into(),
        TurnStatus::ApiError {
            status: Some(429), ..
        } => format!(
            "Claude's API is rate-limited right now ({}). Try again later; your plan is intact.",
            status.describe()
        ),
        TurnStatus::ApiError { .. } => format!(
            "Claude's API failed ({}). Your plan is intact: send your message again in a moment.",
            status.describe()
        ),
        TurnStatus::NotInstalled => status.describe(),
        TurnStatus::BudgetExceeded => {
            "This turn reached its spending cap (PLANBOT_MAX_BUDGET_USD). \
            Your plan is intact."
                .into()
        }
        other => {
            let what = other.describe();
            let next = crate::claude::outcome::advice(&what)
                .unwrap_or("Your plan is intact; send your message again.");
            format!("That turn did not finish: {what}. {next}")
        }
    }
}

/// Writes `final-plan.md` and `plan.json` into the plan's workspace, each atomically and never
/// through a link.
pub fn write_final_plan(state: &SessionEntry, plan: &str) -> Result<PathBuf, WorkspaceError> {
    let mut body = plan.trim().to_string();
    body.push('\n');
    let path = workspace::write_file(&state.cwd, "final-plan.md", body.as_bytes())?;
    let record = serde_json::json!({
        "slug": state.slug,
        "description": state.description,
        "status": "approved",
        "phases": state.phases,
        "phases_completed": state.phases_completed,
        "session_ids": state.phase_sessions,
        "planning_session_id": state.planning_session_id,
        "total_cost_usd": state.total_cost_usd,
        "turns": state.turns,
        "started_at": state.started_at,
        "finalized_at": Utc::now(),
    });
    let mut json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    json.push(b'\n');
    workspace::write_file(&state.cwd, "plan.json", &json)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
