//! A plan's conversation with Claude Code, phase by phase: which turn to run, and what to do with
//! each way a turn can end (retry, resume, restart from a recap, fall back to a built-in prompt).

pub mod inbox;
pub mod phases;
pub mod prompts;
pub mod state;
pub mod workspace;

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

/// One turn to try.
#[derive(Debug, Clone)]
enum Attempt {
    /// A fresh session with the rendered system prompt.
    Fresh { prompt: String },
    /// Continue the session.
    Resume {
        id: String,
        prompt: String,
        max_turns: u32,
    },
}

/// What a step is for, deciding its fallbacks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    StartPhase,
    Respond,
    Finalize,
}

impl Planner {
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

/// One plan being worked on: its stored state and the planner that runs its turns.
pub struct PlanningSession {
    pub state: SessionEntry,
    planner: Planner,
    /// The user's answer to the plan's question, for the turn that resumes it: the call, and
    /// whether it is allowed.
    answer: Option<(ToolCall, bool)>,
}

impl PlanningSession {
    pub fn new(planner: Planner, state: SessionEntry) -> Self {
        PlanningSession {
            state,
            planner,
            answer: None,
        }
    }

    pub fn into_state(self) -> SessionEntry {
        self.state
    }

    fn vars(&self) -> Vars<'_> {
        Vars {
            slug: &self.state.slug,
            description: &self.state.description,
            phase: &self.state.phase,
        }
    }

    /// Starts the current phase in a fresh Claude session: the phase's skill, or its built-in
    /// prompt when the skill is known to be missing.
    pub async fn start_phase(
        &mut self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Reply {
        self.state.session_id = None;
        self.state.recap.clear();
        self.state.phase_status = PhaseStatus::Unstated;
        let prompt = self.opening_prompt();
        self.run_step(
            Step::StartPhase,
            Attempt::Fresh { prompt },
            None,
            cancel,
            progress,
        )
        .await
    }

    /// Continues the phase with the user's message.
    pub async fn respond(
        &mut self,
        text: &str,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Reply {
        let wrapped = prompts::wrap_user_text(text);
        let never_answered = self.state.session_id.is_none() && self.state.recap.is_empty();
        let attempt = if never_answered && !self.state.missing_skills.contains(&self.state.phase) {
            // The phase's first turn failed: the retry opens it as the first try did (with its
            // skill), followed by the message.
            Attempt::Fresh {
                prompt: format!("{}\n\n{wrapped}", self.opening_prompt()),
            }
        } else {
            self.continuation(&wrapped)
        };
        self.run_step(Step::Respond, attempt, Some(wrapped), cancel, progress)
            .await
    }

    /// Resumes the session with the user's answer to the question it waits on: the path guard
    /// allows or denies exactly that call, and the turn goes on from there. `for_plan` also
    /// allows calls like it (the same domain, or the tool) for the rest of the plan.
    pub async fn answer_question(
        &mut self,
        call: ToolCall,
        allow: bool,
        for_plan: bool,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Reply {
        if allow
            && for_plan
            && let Some(rule) = call.plan_rule()
            && !self.state.approved.contains(&rule)
        {
            self.state.approved.push(rule);
        }
        self.answer = Some((call, allow));
        let attempt = self.continuation("");
        let reply = self
            .run_step(Step::Respond, attempt, None, cancel, progress)
            .await;
        self.answer = None;
        reply
    }

    /// What the path guard answers for approvable tools in the next turn.
    fn approvals(&self) -> Approvals {
        let settings = &self.planner.settings;
        let mut allowed = self.state.approved.clone();
        allowed.extend(
            settings
                .webfetch_domains
                .iter()
                .map(|d| format!("WebFetch(domain:{})", d.to_ascii_lowercase())),
        );
        let (allow_call, deny_call) = match &self.answer {
            Some((call, true)) => (Some(call.clone()), None),
            Some((call, false)) => (None, Some(call.clone())),
            None => (None, None),
        };
        Approvals {
            approvable: settings.approvable.clone(),
            allowed,
            allow_call,
            deny_call,
        }
    }

    /// Ends the current phase and starts the next one.
    pub async fn advance(
        &mut self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Reply, PlanError> {
        let Some(next) = self.state.next_phase().map(str::to_string) else {
            return Err(PlanError::LastPhase);
        };
        self.close_phase().await?;
        self.state.phase = next;
        Ok(self.start_phase(cancel, progress).await)
    }

    /// Closes the current phase and asks for the complete plan. On success the reply's text is
    /// the plan.
    pub async fn finalize(
        &mut self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Reply, PlanError> {
        self.close_phase().await?;
        let request = self.planner.prompts.finalize_prompt(&self.vars());
        let attempt = self.continuation(&request);
        Ok(self
            .run_step(Step::Finalize, attempt, None, cancel, progress)
            .await)
    }

    /// Writes the current phase's last reply to `phases/NN-<phase>.md` (off the async threads)
    /// and marks it completed.
    pub async fn close_phase(&mut self) -> Result<(), PlanError> {
        let file = format!(
            "phases/{:02}-{}.md",
            self.state.phase_number(),
            self.state.phase
        );
        let body = format!(
            "# Phase: {}\n\n{}\n",
            self.state.phase,
            self.state.last_reply.trim()
        );
        let cwd = self.state.cwd.clone();
        tokio::task::spawn_blocking(move || workspace::write_file(&cwd, &file, body.as_bytes()))
            .await
            .map_err(|e| PlanError::Internal(e.to_string()))??;
        if !self.state.phases_completed.contains(&self.state.phase) {
            self.state.phases_completed.push(self.state.phase.clone());
        }
        Ok(())
    }

    /// Continues the phase's session with `prompt`; a phase that never got a session (its first
    /// turn was cut off) starts again with what was said so far.
    fn continuation(&self, prompt: &str) -> Attempt {
        match &self.state.session_id {
            Some(id) => Attempt::Resume {
                id: id.clone(),
                prompt: prompt.to_string(),
                max_turns: self.planner.settings.max_turns,
            },
            None => Attempt::Fresh {
                prompt: self.recap_prompt(prompt),
            },
        }
    }

    fn opening_prompt(&self) -> String {
        if self.state.missing_skills.contains(&self.state.phase) {
            self.planner.prompts.phase_prompt(&self.vars())
        } else {
            format!("/{} {}", self.state.phase, prompts::SKILL_OPENING)
        }
    }

    /// A fresh start that carries this phase's conversation so far, then `latest`.
    fn recap_prompt(&self, latest: &str) -> String {
        let mut prompt = self.planner.prompts.phase_prompt(&self.vars());
        if !self.state.recap.is_empty() {
            prompt.push_str(
                "\n\n---\nThis phase was already under way, but the earlier session was lost. \
                 The conversation so far, as recorded:\n",
            );
            for item in &self.state.recap {
                prompt.push_str(&format!("\n[{}]\n{}\n", item.role, item.text));
            }
        }
        prompt.push_str("\n---\nContinue from there. The latest message:\n\n");
        prompt.push_str(latest);
        prompt
    }

    /// Runs a step's turns with the policies for each way a turn ends.
    async fn run_step(
        &mut self,
        step: Step,
        first: Attempt,
        user_text: Option<String>,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Reply {
        let mut attempt = first;
        // A new turn supersedes any question still open.
        self.state.pending_approval = None;
        let mut notices: Vec<String> = self.clear_instruction_files().await.into_iter().collect();
        let mut denied: Vec<String> = Vec::new();
        let (mut skill_fallback, mut max_turns_retry, mut api_retry, mut recap_restart) =
            (false, false, false, false);
        loop {
            let outcome = self.execute(&attempt, cancel, progress).await;
            self.account(&outcome);
            for tool in &outcome.denied_tools {
                if !denied.contains(tool) {
                    denied.push(tool.clone());
                }
            }
            match outcome.status {
                TurnStatus::Deferred { call } => {
                    self.state.pending_approval = Some(PendingApproval {
                        call: call.clone(),
                        asked_at: Utc::now(),
                    });
                    return Reply {
                        text: String::new(),
                        outcome: ReplyOutcome::Deferred(call),
                        notices,
                    };
                }
                TurnStatus::Answered { text } => {
                    if !denied.is_empty() {
                        notices.push(notice::denied(&denied));
                    }
                    return self.answered(step, &text, user_text.as_deref(), notices);
                }
                TurnStatus::UnknownSkill { name }
                    if step == Step::StartPhase && !skill_fallback =>
                {
                    skill_fallback = true;
                    if !self.state.missing_skills.contains(&self.state.phase) {
                        self.state.missing_skills.push(self.state.phase.clone());
                    }
                    tracing::info!(skill = %name, "skill not installed; using the built-in prompt");
                    notices.push(notice::skill_missing(&name));
                    attempt = Attempt::Fresh {
                        prompt: self.planner.prompts.phase_prompt(&self.vars()),
                    };
                }
                TurnStatus::MaxTurns if !max_turns_retry => {
                    max_turns_retry = true;
                    let Some(id) = self.state.session_id.clone() else {
                        return self.failed(TurnStatus::MaxTurns, notices);
                    };
                    tracing::info!("out of turns; resuming once with a larger budget");
                    attempt = Attempt::Resume {
                        id,
                        prompt: prompts::CONTINUE_PROMPT.to_string(),
                        max_turns: self.planner.settings.retry_max_turns,
                    };
                }
                ref status if status.is_transient_api_error() && !api_retry => {
                    api_retry = true;
                    let base = self.planner.settings.retry_delay;
                    let delay = base + base.mul_f64(fastrand::f64());
                    tracing::warn!(?delay, "{}; retrying once", status.describe());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return self.cancelled(notices),
                    }
                }
                TurnStatus::ResumeNotFound if !recap_restart => {
                    recap_restart = true;
                    self.state.session_id = None;
                    notices.push(notice::SESSION_LOST.into());
                    let latest = match step {
                        Step::Finalize => self.planner.prompts.finalize_prompt(&self.vars()),
                        _ => user_text.clone().unwrap_or_default(),
                    };
                    attempt = Attempt::Fresh {
                        prompt: self.recap_prompt(&latest),
                    };
                }
                TurnStatus::Cancelled => return self.cancelled(notices),
                status => return self.failed(status, notices),
            }
        }
    }

    /// Moves aside any instruction file found in the workspace (Claude Code would follow it),
    /// off the async threads; the notice for the reply, if one was.
    async fn clear_instruction_files(&self) -> Option<String> {
        let cwd = self.state.cwd.clone();
        let moved =
            tokio::task::spawn_blocking(move || workspace::move_instruction_files_aside(&cwd))
                .await
                .unwrap_or_default();
        if moved.is_empty() {
            return None;
        }
        tracing::warn!(
            ?moved,
            "instruction files found in a workspace were moved aside"
        );
        Some(notice::moved_aside(&moved))
    }

    /// An answer: the phase's status taken off, the conversation and the plan's state updated.
    fn answered(
        &mut self,
        step: Step,
        text: &str,
        user_text: Option<&str>,
        notices: Vec<String>,
    ) -> Reply {
        let (visible, status) = prompts::take_phase_status(text);
        if let Some(user) = user_text {
            self.remember("user", user);
        }
        self.remember("assistant", &visible);
        self.state.phase_status = status;
        self.state.set_excerpt(&visible);
        if step != Step::Finalize {
            self.state.last_reply = visible.clone();
        }
        self.state.turns += 1;
        Reply {
            text: visible,
            outcome: ReplyOutcome::Answered(status),
            notices,
        }
    }

    fn failed(&self, status: TurnStatus, notices: Vec<String>) -> Reply {
        Reply {
            text: failure_message(&status),
            outcome: ReplyOutcome::Failed(status),
            notices,
        }
    }

    fn cancelled(&self, notices: Vec<String>) -> Reply {
        Reply {
            text: "Cancelled.".into(),
            outcome: ReplyOutcome::Cancelled,
            notices,
        }
    }

    /// Adds what a run cost, and takes its session id once a result has come.
    fn account(&mut self, outcome: &TurnOutcome) {
        self.state.total_cost_usd += outcome.cost_usd;
        self.state.last_subtype = outcome.subtype.clone();
        self.state.updated_at = Utc::now();
        if outcome.has_result
            && !matches!(outcome.status, TurnStatus::ResumeNotFound)
            && let Some(id) = &outcome.session_id
        {
            self.state.session_id = Some(id.clone());
            self.state
                .phase_sessions
                .insert(self.state.phase.clone(), id.clone());
        }
    }

    fn remember(&mut self, role: &str, text: &str) {
        self.state.recap.push(RecapItem {
            role: role.to_string(),
            text: text.chars().take(RECAP_ITEM_CHARS).collect(),
        });
        let excess = self.state.recap.len().saturating_sub(RECAP_ITEMS);
        self.state.recap.drain(..excess);
    }

    async fn execute(
        &self,
        attempt: &Attempt,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> TurnOutcome {
        let settings = &self.planner.settings;
        // Kept alive until the turn ends; removed on drop.
        let mut system_file = None;
        let (turn, prompt) = match attempt {
            Attempt::Fresh { prompt } => {
                let rendered = self.planner.prompts.system_prompt(&self.vars());
                match write_temp(&rendered) {
                    Ok(file) => {
                        let path = file.path().to_path_buf();
                        system_file = Some(file);
                        (
                            TurnArgs {
                                max_turns: settings.max_turns,
                                resume: None,
                                system_prompt_file: Some(path),
                                workspace: Some(self.state.cwd.clone()),
                                approvals: self.approvals(),
                            },
                            prompt.clone(),
                        )
                    }
                    Err(e) => {
                        return TurnOutcome {
                            status: TurnStatus::StartFailed {
                                reason: format!("could not write the system prompt: {e}"),
                            },
                            session_id: None,
                            has_result: false,
                            cost_usd: 0.0,
                            num_turns: 0,
                            usage: None,
                            subtype: None,
                            denied_tools: Vec::new(),
                        };
                    }
                }
            }
            Attempt::Resume {
                id,
                prompt,
                max_turns,
            } => (
                TurnArgs {
                    max_turns: *max_turns,
                    resume: Some(id.clone()),
                    system_prompt_file: None,
                    workspace: Some(self.state.cwd.clone()),
                    approvals: self.approvals(),
                },
                prompt.clone(),
            ),
        };
        let spec_prompt = prompt.clone();
        let spec = TurnSpec {
            args: build_args(&settings.common, &turn),
            prompt,
            cwd: self.state.cwd.clone(),
            files: turn.system_prompt_file.iter().cloned().collect(),
            command: invoked_command(&spec_prompt),
        };
        let raw = self.planner.runner.run(spec, cancel, progress).await;
        drop(system_file);
        let outcome = classify(&raw);
        tracing::info!(
            slug = %self.state.slug,
            phase = %self.state.phase,
            status = %outcome.status.describe(),
            cost = outcome.cost_usd,
            turns = outcome.num_turns,
            "turn ended"
        );
        outcome
    }
}

/// The slash command a prompt starts with (`/office-hours …` → `office-hours`).
fn invoked_command(prompt: &str) -> Option<String> {
    let name = prompt.strip_prefix('/')?.split_whitespace().next()?;
    Some(name.to_string())
}

fn write_temp(text: &str) -> io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .prefix("planbot-system-")
        .suffix(".md")
        .tempfile()?;
    file.write_all(text.as_bytes())?;
    file.flush()?;
    Ok(file)
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
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "todo-app", "0x", &"a".repeat(63)] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "../x",
            "/etc",
            "a b",
            "Todo",
            "a_b",
            "a.b",
            &"a".repeat(64),
        ] {
            let err = validate_slug(bad).unwrap_err().to_string();
            assert!(err.contains("lower-case letters"), "{bad}: {err}");
        }
    }
}
