//! The conversation as a plain function: what a chat's message, command or button press means
//! in the plan's state, decided with no I/O. The chat's worker carries the [`Decision`] out.

use crate::chat::{Action, FileRef, InboundKind};
use crate::claude::approval::ToolCall;
use crate::commands::Command;
use crate::planning::state::SessionEntry;
use crate::planning::validate_slug;

use super::copy;

/// Failed turns in a row that pause a plan.
pub const BREAKER_FAILURES: u32 = 3;

/// The spending limits in force for this job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// `PLANBOT_PLAN_BUDGET_USD`.
    pub plan_budget_usd: Option<f64>,
    /// `PLANBOT_USER_DAILY_BUDGET_USD`.
    pub user_daily_budget_usd: Option<f64>,
    /// What the sender has spent today (UTC).
    pub user_spent_today: f64,
    /// The sender may answer the plan's questions (started it, or is an approver).
    pub may_answer: bool,
}

/// The user's answer to a question about a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionAnswer {
    AllowOnce,
    AllowForPlan,
    Deny,
    /// Nobody answered in time: denied.
    Expired,
}

impl QuestionAnswer {
    /// As the audit log records it.
    pub fn name(self) -> &'static str {
        match self {
            QuestionAnswer::AllowOnce => "allow-once",
            QuestionAnswer::AllowForPlan => "allow-for-plan",
            QuestionAnswer::Deny => "deny",
            QuestionAnswer::Expired => "deny-unanswered",
        }
    }
}

/// A planning step that runs Claude.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The first turn of a new plan.
    Start,
    Respond(String),
    Advance,
    Finalize,
    /// Resume the session with the answer to the question it waits on.
    Answer {
        call: ToolCall,
        answer: QuestionAnswer,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer with this text; nothing changes.
    Reply(String),
    /// A button press whose moment has passed: answered privately, nothing changes.
    Stale,
    /// A question's button pressed by someone who may not answer it: refused privately.
    NotYours,
    /// Nothing to say (chatter in a group while nothing is planned).
    Ignore,
    /// Create the plan `slug` for `idea`, then run its first turn.
    Start { slug: String, idea: String },
    /// Run a step of the plan.
    Turn(Op),
    /// Take files into the plan's inbox, then run the turn that names them (with the caption).
    Receive {
        files: Vec<FileRef>,
        caption: String,
    },
    /// No turn may run now: say why (with a Resume button when the plan is paused).
    Refuse { text: String, offer_resume: bool },
    /// `/advance` on the last phase: offer Finalize or Cancel.
    AskFinalize,
    /// Drop the plan (its workspace stays).
    Cancel,
    /// Lift the circuit breaker's pause.
    Resume,
}

/// What `input` means for the chat whose plan is `entry` (`None`: nothing planned). `private`
/// is a one-to-one chat.
pub fn decide(
    entry: Option<&SessionEntry>,
    private: bool,
    input: &InboundKind,
    limits: &Limits,
) -> Decision {
    match input {
        InboundKind::Button { action, revision } => match entry {
            Some(entry) if entry.revision == *revision => act(*action, entry, limits),
            _ => Decision::Stale,
        },
        InboundKind::QuestionExpired { revision } => match entry {
            Some(entry) if entry.revision == *revision => match &entry.pending_approval {
                // Not gated: an unanswered question must end even past a budget.
                Some(pending) => Decision::Turn(Op::Answer {
                    call: pending.call.clone(),
                    answer: QuestionAnswer::Expired,
                }),
                None => Decision::Ignore,
            },
            _ => Decision::Ignore,
        },
        InboundKind::Text(text) => match entry {
            Some(entry) => gate(entry, limits, Op::Respond(text.clone())),
            None if private => Decision::Reply(copy::NOTHING_PLANNED_HINT.into()),
            None => Decision::Ignore,
        },
        InboundKind::Files { files, caption } => match entry {
            // Nothing is downloaded for a turn that could not run.
            Some(entry) => match gate(entry, limits, Op::Respond(caption.clone())) {
                Decision::Turn(_) => Decision::Receive {
                    files: files.clone(),
                    caption: caption.clone(),
                },
                refused => refused,
            },
            None if private => Decision::Reply(copy::FILES_NEED_A_PLAN.into()),
            None => Decision::Ignore,
        },
        InboundKind::Command { name, args } => match (Command::parse(name), entry) {
            (Some(Command::Plan), Some(entry)) => {
                Decision::Reply(copy::already_planning(&entry.slug, &entry.phase))
            }
            (Some(Command::Plan), None) => start(args, limits),
            (Some(Command::Advance), Some(entry)) => act(Action::Advance, entry, limits),
            (Some(Command::Finalize), Some(entry)) => act(Action::Finalize, entry, limits),
            (Some(Command::Cancel), Some(entry)) => act(Action::Cancel, entry, limits),
            (Some(Command::Resume), Some(entry)) => act(Action::Resume, entry, limits),
            (Some(Command::Status), Some(entry)) => Decision::Reply(copy::status(entry)),
            (Some(Command::Help), _) => Decision::Reply(crate::commands::help_text()),
            (Some(_), None) => Decision::Reply(copy::NOTHING_PLANNED.into()),
            (None, _) => Decision::Reply(copy::unknown_command(name)),
        },
    }
}

fn act(action: Action, entry: &SessionEntry, limits: &Limits) -> Decision {
    match action {
        Action::Cancel => Decision::Cancel,
        Action::Resume if entry.paused => Decision::Resume,
        // Changes nothing, so the buttons on screen stay current.
        Action::Resume => Decision::Reply(copy::NOT_PAUSED.into()),
        Action::Advance if entry.next_phase().is_none() => Decision::AskFinalize,
        Action::Advance => gate(entry, limits, Op::Advance),
        Action::Finalize => gate(entry, limits, Op::Finalize),
        Action::AllowOnce | Action::AllowForPlan | Action::Deny => {
            let answer = match action {
                Action::AllowOnce => QuestionAnswer::AllowOnce,
                Action::AllowForPlan => QuestionAnswer::AllowForPlan,
                _ => QuestionAnswer::Deny,
            };
            match &entry.pending_approval {
                None => Decision::Stale,
                Some(_) if !limits.may_answer => Decision::NotYours,
                Some(pending) => gate(
                    entry,
                    limits,
                    Op::Answer {
                        call: pending.call.clone(),
                        answer,
                    },
                ),
            }
        }
    }
}

/// `/plan <slug> <idea>`: refused before anything is created when it cannot go on.
fn start(args: &str, limits: &Limits) -> Decision {
    let (slug, idea) = match args.split_once(char::is_whitespace) {
        Some((slug, rest)) => (slug, rest.trim()),
        None => (args, ""),
    };
    if slug.is_empty() {
        return Decision::Reply(copy::PLAN_USAGE.into());
    }
    if let Err(e) = validate_slug(slug) {
        return Decision::Reply(e.to_string());
    }
    if let Some(text) = over_daily_budget(limits) {
        return Decision::Refuse {
            text,
            offer_resume: false,
        };
    }
    let idea = if idea.is_empty() {
        slug.replace('-', " ")
    } else {
        idea.to_string()
    };
    Decision::Start {
        slug: slug.to_string(),
        idea,
    }
}

/// A turn of `entry`, unless the breaker or a budget stops it. Finalizing stays possible past
/// the plan's own budget: a plan must never be stuck without a way to its final document.
fn gate(entry: &SessionEntry, limits: &Limits, op: Op) -> Decision {
    if let Some(pending) = &entry.pending_approval
        && !matches!(op, Op::Answer { .. })
    {
        return Decision::Reply(copy::awaiting_answer(&pending.call));
    }
    if entry.paused {
        return Decision::Refuse {
            text: copy::paused(),
            offer_resume: true,
        };
    }
    if let Some(cap) = limits.plan_budget_usd
        && entry.total_cost_usd >= cap
        && op != Op::Finalize
    {
        return Decision::Refuse {
            text: copy::over_plan_budget(&entry.slug, entry.total_cost_usd, cap),
            offer_resume: false,
        };
    }
    if let Some(text) = over_daily_budget(limits) {
        return Decision::Refuse {
            text,
            offer_resume: false,
        };
    }
    Decision::Turn(op)
}

fn over_daily_budget(limits: &Limits) -> Option<String> {
    let cap = limits.user_daily_budget_usd?;
    (limits.user_spent_today >= cap).then(|| copy::over_daily_budget(limits.user_spent_today, cap))
}

#[cfg(test)]
mod tests;
