use super::*;

/// Every text here (and the failure texts of planning), rendered with sample values.
fn samples(entry: &SessionEntry) -> Vec<(&'static str, String)> {
    use crate::claude::TurnStatus;
    use crate::planning::{PlanError, notice};
    let failure = |status: TurnStatus| crate::planning::failure_message(&status);
    vec![
        ("NOTHING_PLANNED", NOTHING_PLANNED.to_string()),
        ("NOTHING_PLANNED_HINT", NOTHING_PLANNED_HINT.to_string()),
        ("NOT_PAUSED", NOT_PAUSED.to_string()),
        ("FILES_NEED_A_PLAN", FILES_NEED_A_PLAN.to_string()),
        ("question: fetch", question(&sample_fetch())),
        (
            "question: search",
            question(&ToolCall {
                tool: "WebSearch".into(),
                input: serde_json::json!({"query": "family todo apps"}),
            }),
        ),
        (
            "allow_for_plan",
            allow_for_plan(&sample_fetch()).unwrap_or_default(),
        ),
        ("awaiting_answer", awaiting_answer(&sample_fetch())),
        ("NOT_YOURS", NOT_YOURS.to_string()),
        (
            "answered: once",
            answered(
                &sample_fetch(),
                QuestionAnswer::AllowOnce,
                std::time::Duration::from_secs(600),
            ),
        ),
        (
            "answered: plan",
            answered(
                &sample_fetch(),
                QuestionAnswer::AllowForPlan,
                std::time::Duration::from_secs(600),
            ),
        ),
        (
            "answered: deny",
            answered(
                &sample_fetch(),
                QuestionAnswer::Deny,
                std::time::Duration::from_secs(600),
            ),
        ),
        (
            "answered: expired",
            answered(
                &sample_fetch(),
                QuestionAnswer::Expired,
                std::time::Duration::from_secs(600),
            ),
        ),
        (
            "file_too_large",
            file_too_large("spec.pdf", Some(25 << 20), 20 << 20),
        ),
        ("file_not_received", file_not_received("spec.pdf")),
        ("PLAN_USAGE", PLAN_USAGE.to_string()),
        ("INTERRUPTED_BY_RESTART", INTERRUPTED_BY_RESTART.to_string()),
        ("paused_now", paused_now()),
        ("RESUMED", RESUMED.to_string()),
        ("CANCELLED", CANCELLED.to_string()),
        ("EMPTY_REPLY", EMPTY_REPLY.to_string()),
        ("STALE", STALE.to_string()),
        ("STOPPING", STOPPING.to_string()),
        ("STRANGER", STRANGER.to_string()),
        ("JOB_PANICKED", JOB_PANICKED.to_string()),
        ("SAVE_FAILED", SAVE_FAILED.to_string()),
        ("too_long", too_long(16_001, 16_000)),
        ("CONSOLE_WELCOME", CONSOLE_WELCOME.to_string()),
        ("FOREIGN_BUTTON", FOREIGN_BUTTON.to_string()),
        ("ATTACH_USAGE", ATTACH_USAGE.to_string()),
        ("no_file_at", no_file_at(&"notes/spec.pdf", &"not a file")),
        ("no_such_choice", no_such_choice(9)),
        ("confirm_cancel", confirm_cancel(3)),
        ("full_reply_attached", full_reply_attached(24_000)),
        (
            "plan error: slug",
            crate::planning::validate_slug("Bad_Slug")
                .unwrap_err()
                .to_string(),
        ),
        (
            "plan error: taken",
            PlanError::Taken("todo-app".into()).to_string(),
        ),
        ("plan error: last phase", PlanError::LastPhase.to_string()),
        (
            "plan error: workspace",
            PlanError::Workspace {
                slug: "todo-app".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }
            .to_string(),
        ),
        (
            "plan error: link",
            PlanError::Unsafe(crate::planning::workspace::WorkspaceError::Symlink(
                "todo-app/phases".into(),
            ))
            .to_string(),
        ),
        ("queue_full", queue_full(5)),
        ("queued", queued(2)),
        ("planning", planning("todo-app", 4, "office-hours")),
        ("last_phase", last_phase("plan-eng-review")),
        ("cancelled_plan", cancelled_plan("todo-app")),
        ("working_on", working_on("office-hours")),
        ("writing_final_plan", writing_final_plan("todo-app")),
        (
            "finalized",
            finalized("todo-app", 6, 0.42, "todo-app/final-plan.md"),
        ),
        (
            "final_plan_not_saved",
            final_plan_not_saved(
                "`final-plan.md` in the plan's workspace is a symbolic link; planbot does not write through links. Remove it and try again",
            ),
        ),
        (
            "interrupted_by_crash",
            interrupted_by_crash("todo-app", "office-hours"),
        ),
        (
            "restored_from_backup",
            restored_from_backup("todo-app", "09:41 UTC"),
        ),
        (
            "already_planning",
            already_planning("todo-app", "office-hours"),
        ),
        ("unknown_command", unknown_command("frob")),
        ("paused", paused()),
        ("over_plan_budget", over_plan_budget("todo-app", 5.0, 4.0)),
        ("over_daily_budget", over_daily_budget(2.5, 2.0)),
        // Its age changes with the clock: numbers are masked.
        (
            "status",
            regex::Regex::new(r"\d+")
                .unwrap()
                .replace_all(&status(entry), "N")
                .into_owned(),
        ),
        ("help", crate::commands::help_text()),
        ("notice: session lost", notice::SESSION_LOST.to_string()),
        (
            "notice: skill missing",
            notice::skill_missing("office-hours"),
        ),
        (
            "notice: moved aside",
            notice::moved_aside(&["todo-app/CLAUDE.md".into()]),
        ),
        (
            "notice: denied",
            notice::denied(&["Bash".into(), "WebFetch".into()]),
        ),
        ("failure: max turns", failure(TurnStatus::MaxTurns)),
        (
            "failure: rate limited",
            failure(TurnStatus::ApiError {
                status: Some(429),
                message: "API Error: 429 rate_limit_error".into(),
            }),
        ),
        (
            "failure: api error",
            failure(TurnStatus::ApiError {
                status: Some(529),
                message: "API Error: 529 Overloaded".into(),
            }),
        ),
        (
            "failure: went quiet",
            failure(TurnStatus::TimedOut { idle: true }),
        ),
        (
            "failure: took too long",
            failure(TurnStatus::TimedOut { idle: false }),
        ),
        ("failure: not installed", failure(TurnStatus::NotInstalled)),
        ("failure: budget", failure(TurnStatus::BudgetExceeded)),
        (
            "failure: crash",
            failure(TurnStatus::Crashed {
                exit: Some(1),
                stderr_tail: "Error: Invalid API key · Please run /login\n    at x (cli.js:1:1)"
                    .into(),
            }),
        ),
        (
            "failure: start",
            failure(TurnStatus::StartFailed {
                reason: "Permission denied (os error 13)".into(),
            }),
        ),
    ]
}

/// The copy as reviewers read it: `copy.snapshot` beside this file holds every sample, and a
/// wording change shows in review as a change to it (`UPDATE_SNAPSHOTS=1` rewrites it).
#[test]
fn the_copy_matches_its_reviewed_snapshot() {
    let entry = sample_entry();
    let rendered: String = samples(&entry)
        .iter()
        .map(|(name, text)| format!("## {name}\n{text}\n\n"))
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/conversation/copy.snapshot"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &rendered).unwrap();
    }
    let reviewed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        reviewed == rendered,
        "the copy changed: rerun with UPDATE_SNAPSHOTS=1 and review the diff of {path}"
    );
}

use crate::conversation::sample_entry;

fn sample_fetch() -> ToolCall {
    ToolCall {
        tool: "WebFetch".into(),
        input: serde_json::json!({"url": "https://example.com/pricing", "prompt": "Prices?"}),
    }
}

/// Every text here, rendered with sample values, is well-formed: no runs of spaces (a lost
/// line continuation), no placeholder left, no pair of words said twice in a row.
#[test]
fn every_message_is_well_formed() {
    let entry = sample_entry();
    let all = samples(&entry);
    for (_, text) in &all {
        assert!(!text.contains("  "), "a run of spaces: {text:?}");
        assert!(
            !text.contains('{') && !text.contains('}'),
            "a placeholder: {text:?}"
        );
        assert!(!text.contains("/tmp/"), "a server path: {text:?}");
        // No doubled prefix: no pair of words said again within the next few.
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect();
        let pairs: Vec<(&String, &String)> = words.iter().zip(words.iter().skip(1)).collect();
        for (i, pair) in pairs.iter().enumerate() {
            let again = pairs.iter().skip(i + 1).take(4).any(|p| p == pair);
            assert!(!again, "doubled {pair:?}: {text:?}");
        }
    }
}

#[test]
fn status_shows_the_plans_allowances_and_its_open_question() {
    let mut asking = sample_entry();
    asking.approved = vec!["WebFetch(domain:docs.rs)".into()];
    asking.pending_approval = Some(crate::planning::state::PendingApproval {
        call: sample_fetch(),
        asked_at: chrono::Utc::now(),
    });
    let text = status(&asking);
    assert!(
        text.contains("\nAllowed for this plan: WebFetch(domain:docs.rs)")
            && text.ends_with(
                "\nWaiting for an answer: Claude wants to fetch https://example.com/pricing"
            ),
        "{text}"
    );
}
