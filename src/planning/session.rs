//! One plan being worked on: the planning steps (start a phase, respond, advance, finalize,
//! answer a question) and the policy for each way a turn ends.

use super::*;

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
                TurnStatus::Deferred { call } => return self.deferred(call, notices),
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
                    notices.push(notice::skill_missing(&name));
                    attempt = self.without_skill(&name);
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
                    notices.push(notice::SESSION_LOST.into());
                    attempt = self.restart_from_recap(step, user_text.as_deref());
                }
                TurnStatus::Cancelled => return self.cancelled(notices),
                status => return self.failed(status, notices),
            }
        }
    }

    /// The turn ended waiting on a tool call: the question is kept in the plan's state.
    fn deferred(&mut self, call: ToolCall, notices: Vec<String>) -> Reply {
        self.state.pending_approval = Some(PendingApproval {
            call: call.clone(),
            asked_at: Utc::now(),
        });
        Reply {
            text: String::new(),
            outcome: ReplyOutcome::Deferred(call),
            notices,
        }
    }

    /// The phase's skill is not installed: it is remembered, and the built-in prompt runs.
    fn without_skill(&mut self, name: &str) -> Attempt {
        if !self.state.missing_skills.contains(&self.state.phase) {
            self.state.missing_skills.push(self.state.phase.clone());
        }
        tracing::info!(skill = %name, "skill not installed; using the built-in prompt");
        Attempt::Fresh {
            prompt: self.planner.prompts.phase_prompt(&self.vars()),
        }
    }

    /// Claude's session is lost: a fresh one from the recap, then what this step was saying.
    fn restart_from_recap(&mut self, step: Step, user_text: Option<&str>) -> Attempt {
        self.state.session_id = None;
        let latest = match step {
            Step::Finalize => self.planner.prompts.finalize_prompt(&self.vars()),
            _ => user_text.unwrap_or_default().to_string(),
        };
        Attempt::Fresh {
            prompt: self.recap_prompt(&latest),
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
