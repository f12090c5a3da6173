//! PlanningSession policies against the fake `claude`: what runs, with which arguments.

use std::path::PathBuf;
use std::time::Duration;

use planbot::claude::{CommonArgs, Runner, TurnStatus};
use planbot::planning::{
    DEFAULT_PHASES, PhaseStatus, PlanSettings, Planner, PlanningSession, Prompts, ReplyOutcome,
    parse_phases,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::util::{FakeClaude, arg_after};

pub fn planner(fake: &FakeClaude) -> Planner {
    planner_on(fake.runner(|_| {}), fake.dir.path().join("workspace"), 20)
}

/// A planner with the default phases and prompts, short retry delays, on `runner`.
pub fn planner_on(runner: Runner, workspace_root: PathBuf, max_turns: u32) -> Planner {
    let settings = PlanSettings {
        common: CommonArgs::default(),
        max_turns,
        retry_max_turns: 30,
        retry_delay: Duration::from_millis(10),
        workspace_root,
        phases: parse_phases(DEFAULT_PHASES).unwrap(),
        approvable: Vec::new(),
        webfetch_domains: Vec::new(),
    };
    Planner::new(runner, Prompts::default(), settings)
}

fn session(fake: &FakeClaude) -> PlanningSession {
    let planner = planner(fake);
    let entry = planner
        .new_plan("console", "local", "todo-app", "a todo app for families")
        .unwrap();
    PlanningSession::new(planner, entry)
}

fn stdin(call: &Value) -> &str {
    call["stdin"].as_str().unwrap()
}

fn has_flag(call: &Value, flag: &str) -> bool {
    call["args"].as_array().unwrap().iter().any(|a| a == flag)
}

#[tokio::test]
async fn a_phase_starts_with_its_skill_and_replies_resume_the_session() {
    let fake = FakeClaude::new(json!([
        {"kind": "answer", "text": "What problem?\n\nPHASE_STATUS: needs_input"},
        {"kind": "answer", "text": "Got it.\nPHASE_STATUS: ready_to_advance"},
    ]));
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    let reply = plan.start_phase(&cancel, &mut |_| {}).await;
    assert_eq!(reply.text, "What problem?");
    assert_eq!(
        reply.outcome,
        ReplyOutcome::Answered(PhaseStatus::NeedsInput)
    );
    let id = plan
        .state
        .session_id
        .clone()
        .expect("session stored after the result");

    let reply = plan
        .respond("Families\u{200B} forget chores", &cancel, &mut |_| {})
        .await;
    assert_eq!(reply.text, "Got it.");
    assert_eq!(plan.state.phase_status, PhaseStatus::ReadyToAdvance);
    let calls = fake.calls();
    // The idea is in idea.md, never in the prompt; the skill is pointed at it.
    assert_eq!(
        stdin(&calls[0]),
        format!(
            "/office-hours {}",
            planbot::planning::prompts::SKILL_OPENING
        )
    );
    assert_eq!(
        std::fs::read_to_string(plan.state.cwd.join("idea.md")).unwrap(),
        "a todo app for families\n"
    );
    assert!(has_flag(&calls[0], "--system-prompt-file"));
    assert_eq!(arg_after(&calls[0], "--max-turns"), Some("20"));
    assert_eq!(arg_after(&calls[1], "--resume"), Some(id.as_str()));
    assert!(!has_flag(&calls[1], "--system-prompt-file"));
    assert_eq!(
        stdin(&calls[1]),
        "<user_message>\nFamilies forget chores\n</user_message>"
    );
    let workspace = fake
        .dir
        .path()
        .join("workspace/todo-app")
        .canonicalize()
        .unwrap();
    assert_eq!(calls[0]["cwd"], json!(workspace));
    assert_eq!(calls[1]["cwd"], json!(workspace));
    assert_eq!(plan.state.turns, 2);
    assert_eq!(plan.state.recap.len(), 3);
}

#[tokio::test]
async fn a_missing_skill_falls_back_to_the_built_in_prompt_and_is_remembered() {
    let fake = FakeClaude::new(json!([{"kind": "unknown_skill"}]));
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    let reply = plan.start_phase(&cancel, &mut |_| {}).await;
    assert!(reply.is_answered(), "{reply:?}");
    assert!(reply.notices[0].contains("/office-hours skill is not installed"));
    assert_eq!(plan.state.missing_skills, ["office-hours"]);
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(stdin(&calls[1]).starts_with("Run an \"office hours\" session"));
    assert!(stdin(&calls[1]).contains("a todo app for families"));
    // The next start of this phase goes straight to the built-in prompt.
    plan.start_phase(&cancel, &mut |_| {}).await;
    assert_eq!(fake.calls().len(), 3);
    assert!(stdin(&fake.calls()[2]).starts_with("Run an \"office hours\""));
}

#[tokio::test]
async fn max_turns_resumes_once_with_the_larger_budget() {
    let fake = FakeClaude::new(json!([{"kind": "echo"}, {"kind": "max_turns"}, {"kind": "echo"}]));
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    plan.start_phase(&cancel, &mut |_| {}).await;
    let id = plan.state.session_id.clone().unwrap();
    let reply = plan.respond("dig into it", &cancel, &mut |_| {}).await;
    assert!(reply.is_answered(), "{reply:?}");
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(arg_after(&calls[2], "--resume"), Some(id.as_str()));
    assert_eq!(arg_after(&calls[2], "--max-turns"), Some("30"));
    assert!(stdin(&calls[2]).starts_with("Continue where you stopped"));
}

#[tokio::test]
async fn max_turns_twice_tells_the_user_and_keeps_the_session() {
    let fake = FakeClaude::new(
        json!([{"kind": "echo"}, {"kind": "max_turns"}, {"kind": "max_turns"}, {"kind": "echo"}]),
    );
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    plan.start_phase(&cancel, &mut |_| {}).await;
    let id = plan.state.session_id.clone().unwrap();
    let reply = plan.respond("dig", &cancel, &mut |_| {}).await;
    assert_eq!(reply.outcome, ReplyOutcome::Failed(TurnStatus::MaxTurns));
    assert!(reply.text.contains("ran out of turns twice"));
    assert_eq!(plan.state.session_id.as_deref(), Some(id.as_str()));
    let reply = plan.respond("go on", &cancel, &mut |_| {}).await;
    assert!(reply.is_answered());
    assert_eq!(arg_after(&fake.calls()[3], "--resume"), Some(id.as_str()));
}

#[tokio::test]
async fn an_overloaded_api_gets_exactly_one_retry() {
    let fake = FakeClaude::new(json!([{"kind": "api_error", "status": 529}, {"kind": "echo"}]));
    let mut plan = session(&fake);
    let reply = plan
        .start_phase(&CancellationToken::new(), &mut |_| {})
        .await;
    assert!(reply.is_answered(), "{reply:?}");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0]["args"],
        calls[1]["args"]
            .clone()
            .as_array()
            .map(|a| {
                // The system prompt file is a fresh temp file per attempt; everything else is the same.
                let mut a = a.clone();
                let i = a.iter().position(|x| x == "--system-prompt-file").unwrap();
                a[i + 1] = calls[0]["args"][i + 1].clone();
                Value::Array(a)
            })
            .unwrap()
    );
    assert_eq!(stdin(&calls[0]), stdin(&calls[1]));

    let fake = FakeClaude::new(
        json!([{"kind": "api_error", "status": 529}, {"kind": "api_error", "status": 529}]),
    );
    let mut plan = session(&fake);
    let reply = plan
        .start_phase(&CancellationToken::new(), &mut |_| {})
        .await;
    assert!(matches!(
        reply.outcome,
        ReplyOutcome::Failed(TurnStatus::ApiError {
            status: Some(529),
            ..
        })
    ));
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test]
async fn a_rate_limit_is_not_retried() {
    let fake = FakeClaude::new(json!([{"kind": "api_error", "status": 429}]));
    let mut plan = session(&fake);
    let reply = plan
        .start_phase(&CancellationToken::new(), &mut |_| {})
        .await;
    assert!(reply.text.contains("rate-limited"), "{}", reply.text);
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn a_lost_session_restarts_the_phase_from_the_recap() {
    let fake = FakeClaude::new(json!([
        {"kind": "answer", "text": "Who are the users?\nPHASE_STATUS: needs_input"},
    ]));
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    plan.start_phase(&cancel, &mut |_| {}).await;
    plan.state.session_id = Some("11111111-2222-4333-8444-555555555555".into());
    let reply = plan.respond("Busy parents", &cancel, &mut |_| {}).await;
    assert!(reply.is_answered(), "{reply:?}");
    assert!(reply.notices[0].contains("restarted the phase"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    assert!(has_flag(&calls[2], "--system-prompt-file"));
    assert!(!has_flag(&calls[2], "--resume"));
    let prompt = stdin(&calls[2]);
    assert!(prompt.contains("Who are the users?"), "{prompt}");
    assert!(prompt.ends_with("<user_message>\nBusy parents\n</user_message>"));
    assert_ne!(
        plan.state.session_id.as_deref(),
        Some("11111111-2222-4333-8444-555555555555")
    );
}

#[tokio::test]
async fn no_session_id_is_stored_without_a_result() {
    let fake = FakeClaude::new(json!([{"kind": "no_result", "exit": 0}]));
    let mut plan = session(&fake);
    let reply = plan
        .start_phase(&CancellationToken::new(), &mut |_| {})
        .await;
    assert!(matches!(
        reply.outcome,
        ReplyOutcome::Failed(TurnStatus::Crashed { .. })
    ));
    assert_eq!(plan.state.session_id, None);
}

#[tokio::test]
async fn advance_writes_the_phase_notes_and_starts_the_next_in_a_fresh_session() {
    let fake = FakeClaude::new(
        json!([{"kind": "answer", "text": "Office hours notes.\nPHASE_STATUS: ready_to_advance"}]),
    );
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    plan.start_phase(&cancel, &mut |_| {}).await;
    let first = plan.state.session_id.clone();
    plan.advance(&cancel, &mut |_| {}).await.unwrap();
    assert_eq!(plan.state.phase, "plan-ceo-review");
    assert_eq!(plan.state.phases_completed, ["office-hours"]);
    assert_ne!(plan.state.session_id, first);
    let notes = std::fs::read_to_string(plan.state.cwd.join("phases/01-office-hours.md")).unwrap();
    assert!(notes.contains("Office hours notes."));
    assert_eq!(
        stdin(&fake.calls()[1]),
        format!(
            "/plan-ceo-review {}",
            planbot::planning::prompts::SKILL_OPENING
        )
    );
}

#[tokio::test]
async fn a_retry_of_a_failed_first_turn_uses_the_phases_skill_again() {
    let fake = FakeClaude::new(json!([
        {"kind": "crash", "exit": 1, "stderr": "boom"},
        {"kind": "echo"},
    ]));
    let mut plan = session(&fake);
    let cancel = CancellationToken::new();
    let reply = plan.start_phase(&cancel, &mut |_| {}).await;
    assert!(!reply.is_answered());
    let reply = plan.respond("Families first", &cancel, &mut |_| {}).await;
    assert!(reply.is_answered(), "{reply:?}");
    let calls = fake.calls();
    let retry = stdin(&calls[1]);
    assert!(retry.starts_with("/office-hours "), "{retry}");
    assert!(retry.contains("Families first"), "{retry}");
    assert!(plan.state.missing_skills.is_empty());
}
