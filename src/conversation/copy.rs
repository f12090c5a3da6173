//! Every text the conversation shows a user, in one place so that wording is reviewed together.

use super::decide::QuestionAnswer;
use crate::claude::approval::ToolCall;
use crate::planning::PhaseStatus;
use crate::planning::state::{EntryStatus, SessionEntry};

use super::decide::BREAKER_FAILURES;

pub const NOTHING_PLANNED: &str = "Nothing is being planned here. Start with /plan <slug> <idea>.";
pub const NOTHING_PLANNED_HINT: &str =
    "Nothing is being planned here. Start with /plan <slug> <idea>, or /help.";
pub const FILES_NEED_A_PLAN: &str = "Send files once a plan is under way: start one with /plan <slug> <idea>, then send them, and Claude will read them as part of the plan.";
/// A file over `PLANBOT_MAX_ATTACHMENT_MB`.
pub fn file_too_large(name: &str, size: Option<u64>, limit: u64) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let size = size.map_or("larger than that".to_string(), |s| {
        format!("{:.1} MB", mb(s))
    });
    format!(
        "`{}` was not taken: planbot takes files up to {:.0} MB (PLANBOT_MAX_ATTACHMENT_MB), and it is {size}.",
        name.escape_debug(),
        mb(limit)
    )
}

pub fn file_not_received(name: &str) -> String {
    format!(
        "`{}` could not be received; try sending it again.",
        name.escape_debug()
    )
}

/// What Claude asks to do, as a question.
pub fn question(call: &ToolCall) -> String {
    match (call.tool.as_str(), call.url()) {
        ("WebFetch", Some(_)) => format!("Claude wants to fetch {}", call.summary()),
        ("WebSearch", _) => format!("Claude wants to search the web for “{}”", call.summary()),
        (tool, _) => format!("Claude wants to use {tool}: {}", call.summary()),
    }
}

/// The label of the button that allows calls like `call` for the rest of the plan.
pub fn allow_for_plan(call: &ToolCall) -> Option<String> {
    match call.tool.as_str() {
        "WebFetch" => call.domain().map(|d| format!("Allow {d} for this plan")),
        tool => Some(format!("Allow {tool} for this plan")),
    }
}

pub fn awaiting_answer(call: &ToolCall) -> String {
    format!(
        "Claude is waiting for an answer first: {}. Press Allow or Deny under that question (or /cancel).",
        question(call)
    )
}

pub const NOT_YOURS: &str =
    "Only the person who started this plan, or an approver, can answer this question.";

/// The note above the reply that follows an answer.
pub fn answered(call: &ToolCall, answer: QuestionAnswer, timeout: std::time::Duration) -> String {
    let secs = timeout.as_secs();
    let waited = if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    };
    let what = call.summary();
    match answer {
        QuestionAnswer::AllowOnce => format!("Allowed once: {} {what}", call.tool),
        QuestionAnswer::AllowForPlan => format!(
            "Allowed for this plan: {}",
            call.plan_rule().unwrap_or_else(|| call.tool.clone())
        ),
        QuestionAnswer::Deny => format!("Denied: {} {what}", call.tool),
        QuestionAnswer::Expired => format!(
            "No answer within {waited}, so {} was denied: {what}",
            call.tool
        ),
    }
}

pub const NOT_PAUSED: &str = "This plan is not paused.";
pub const RESUMED: &str = "Resumed. Send your message again to continue this phase.";
pub const CANCELLED: &str = "Cancelled.";
pub const EMPTY_REPLY: &str = "(Claude sent an empty reply.)";
/// The answer to a press on a button whose moment has passed.
pub const STALE: &str = "This is no longer current.";
pub const STOPPING: &str = "planbot is stopping; send that again once it is back.";
pub const STRANGER: &str = "Sorry, you are not allowed to use this planbot. Ask its operator to \
add your user id to PLANBOT_ALLOWED_USERS.";
/// The answer to a job that failed inside planbot.
pub const JOB_PANICKED: &str = "Something went wrong inside planbot while handling that, so it \
was dropped. Your plan is as it was: send it again, or /status.";
pub const SAVE_FAILED: &str =
    "⚠️ planbot could not save, so your last step is not recorded. Try again in a moment.";

pub const CONSOLE_WELCOME: &str = "planbot console: plan a product with Claude Code. Type /help, \
or start with /plan <slug> <idea>; /attach <path> brings a file into the plan.\n";
pub const ATTACH_USAGE: &str = "Usage: /attach <path> [caption]";

pub fn no_file_at(path: &dyn std::fmt::Display, why: &dyn std::fmt::Display) -> String {
    format!("No file to attach at {path}: {why}.")
}
/// A button press whose payload planbot did not make.
pub const FOREIGN_BUTTON: &str = "This button is not one of planbot's.";

pub fn no_such_choice(n: usize) -> String {
    format!("There is no choice /{n} now.")
}

pub fn confirm_cancel(n: usize) -> String {
    format!("Type /{n} again to drop this plan (its workspace stays), or anything else to keep it.")
}

pub fn full_reply_attached(chars: usize) -> String {
    format!("The full reply ({chars} characters) is attached as reply.md.")
}

pub fn too_long(chars: usize, limit: usize) -> String {
    format!(
        "That message is {chars} characters; the limit is {limit}. Send it in shorter parts, or \
         put the long text in a file in the plan's workspace."
    )
}

pub fn queue_full(limit: usize) -> String {
    format!(
        "{limit} messages are already waiting for the current turn; this one was not taken. Send \
         it again once the reply arrives."
    )
}

pub fn queued(waiting: usize) -> String {
    format!("Queued: I'll answer after the current turn ({waiting} waiting).")
}

pub fn planning(slug: &str, phases: usize, first: &str) -> String {
    format!("Planning `{slug}`: {phases} phases, starting with /{first}.")
}

pub fn last_phase(phase: &str) -> String {
    format!("`{phase}` is the last phase. Finalize the plan?")
}

pub fn cancelled_plan(slug: &str) -> String {
    format!("Cancelled planning `{slug}`. Its workspace and notes stay in place.")
}

pub fn working_on(phase: &str) -> String {
    format!("⏳ Working on /{phase}…")
}

pub fn writing_final_plan(slug: &str) -> String {
    format!("⏳ Writing the final plan for `{slug}`…")
}

pub fn finalized(slug: &str, turns: u32, cost: f64, path: &str) -> String {
    format!(
        "✅ Plan `{slug}` finalized after {turns} turns (${cost:.2}). Saved to `{path}` in the \
         workspace."
    )
}

pub fn final_plan_not_saved(error: &str) -> String {
    format!(
        "The plan was written, but saving final-plan.md failed ({error}). Your plan is still \
         open: try /finalize again."
    )
}
pub const PLAN_USAGE: &str =
    "Usage: /plan <slug> <idea>, for example /plan todo-app a shared todo list for families";

/// Said when planbot stops (a restart, or the console quitting) during a turn.
pub const INTERRUPTED_BY_RESTART: &str = "planbot is stopping, so this turn was stopped. Your \
plan is saved: send a message when planbot is back to continue this phase.";

pub fn paused_now() -> String {
    format!(
        "This plan is paused after {BREAKER_FAILURES} failed turns in a row, so that a broken \
         setup cannot keep spending. Check the setup (`planbot check`), then /resume."
    )
}

pub fn interrupted_by_crash(slug: &str, phase: &str) -> String {
    format!(
        "planbot restarted while a turn of `{slug}` ({phase}) was running. Your plan is saved: \
         send a message to continue this phase."
    )
}

/// Another planbot (a replica) stopped during a turn of this chat and this one took it over.
pub fn taken_over(slug: &str, phase: &str) -> String {
    format!(
        "The planbot serving `{slug}` stopped during a turn ({phase}); another one took over \
         and answers your last message again."
    )
}

pub fn restored_from_backup(slug: &str, taken: &str) -> String {
    format!(
        "planbot's state file was damaged, so `{slug}` was restored from the backup taken at \
         {taken}. Your last message may need sending again."
    )
}

pub fn already_planning(slug: &str, phase: &str) -> String {
    format!(
        "This chat is already planning `{slug}` (phase {phase}). Finish it with /finalize or drop \
         it with /cancel first."
    )
}

pub fn unknown_command(name: &str) -> String {
    format!("Unknown command /{name}. Try /help.")
}

pub fn paused() -> String {
    format!(
        "This plan is paused after {BREAKER_FAILURES} failed turns in a row. Check the setup \
         (`planbot check`), then /resume."
    )
}

pub fn over_plan_budget(slug: &str, spent: f64, cap: f64) -> String {
    format!(
        "`{slug}` has spent ${spent:.2}, its budget is ${cap:.2} (PLANBOT_PLAN_BUDGET_USD). \
         /finalize it (one more turn writes the final plan), or ask the operator to raise the cap."
    )
}

pub fn over_daily_budget(spent: f64, cap: f64) -> String {
    format!(
        "You have spent ${spent:.2} today, your daily budget is ${cap:.2} \
         (PLANBOT_USER_DAILY_BUDGET_USD). It resets at midnight UTC."
    )
}

/// `/status`: slug, phase n of m, phases done, turns, cost, time.
pub fn status(entry: &SessionEntry) -> String {
    let done = if entry.phases_completed.is_empty() {
        "none yet".to_string()
    } else {
        entry.phases_completed.join(", ")
    };
    let ready = match entry.phase_status {
        PhaseStatus::ReadyToAdvance => " (ready to advance)",
        _ => "",
    };
    let state = match entry.status {
        EntryStatus::Running => "a turn is running",
        EntryStatus::Interrupted => "interrupted by a restart; send a message to continue",
        EntryStatus::Planning => "waiting for you",
    };
    let minutes = (chrono::Utc::now() - entry.started_at).num_minutes().max(0);
    let mut text = format!(
        "`{}`: phase {} of {}, /{}{ready}\nDone: {done}\nTurns: {}, cost ${:.2}, started {} min ago, {state}.",
        entry.slug,
        entry.phase_number(),
        entry.phases.len(),
        entry.phase,
        entry.turns,
        entry.total_cost_usd,
        minutes
    );
    if !entry.approved.is_empty() {
        text.push_str(&format!(
            "\nAllowed for this plan: {}",
            entry.approved.join(", ")
        ));
    }
    if let Some(pending) = &entry.pending_approval {
        text.push_str(&format!(
            "\nWaiting for an answer: {}",
            question(&pending.call)
        ));
    }
    text
}

#[cfg(test)]
mod tests;
