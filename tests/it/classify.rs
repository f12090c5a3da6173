//! Classification over the real CLI's recorded output, and synthetic edge cases.

use planbot::claude::{Exit, RawTurn, StreamEvent, TurnStatus, classify};

use crate::util::fixture;

/// Builds the raw turn the runner would produce from a recorded stream.
fn raw_from_fixture(name: &str, exit: i32) -> RawTurn {
    let text = std::fs::read_to_string(fixture(&format!("{name}.jsonl"))).unwrap();
    let stderr = std::fs::read_to_string(fixture(&format!("{name}.stderr"))).unwrap_or_default();
    let mut raw = RawTurn {
        exit: Exit::Code(exit),
        stopped: None,
        result: None,
        init_session_id: None,
        assistant_text: String::new(),
        stderr_tail: stderr,
        missing_command: None,
    };
    for line in text.lines() {
        let event = StreamEvent::parse(line.as_bytes()).expect("every recorded line parses");
        assert!(
            !matches!(event, StreamEvent::Unknown(_)),
            "{name}: {line:.80}"
        );
        if raw.init_session_id.is_none() {
            raw.init_session_id = event.session_id().map(str::to_string);
        }
        if let StreamEvent::Result(result) = event {
            raw.result = Some(result);
        }
    }
    raw
}

/// A recorded case: fixture name, the CLI's exit code, and what its outcome must be.
type Case = (&'static str, i32, Box<dyn Fn(&TurnStatus) -> bool>);

#[test]
fn every_recorded_case_is_classified() {
    let cases: Vec<Case> = vec![
        (
            "start-success",
            0,
            Box::new(
                move |s| matches!(s, TurnStatus::Answered { text } if text.contains("Plan a todo app for families")),
            ),
        ),
        (
            "start-skill",
            0,
            Box::new(
                |s| matches!(s, TurnStatus::Answered { text } if text.contains("Ask about the product")),
            ),
        ),
        (
            "resume-success",
            0,
            Box::new(
                move |s| matches!(s, TurnStatus::Answered { text } if text.ends_with("PHASE_STATUS: ready_to_advance")),
            ),
        ),
        (
            "resume-partial",
            0,
            Box::new(
                |s| matches!(s, TurnStatus::Answered { text } if text.contains("Streaming please")),
            ),
        ),
        (
            "max-turns-then-resume",
            0,
            Box::new(
                |s| matches!(s, TurnStatus::Answered { text } if text.contains("keep digging")),
            ),
        ),
        ("max-turns", 1, Box::new(|s| *s == TurnStatus::MaxTurns)),
        (
            "resume-missing",
            1,
            Box::new(|s| *s == TurnStatus::ResumeNotFound),
        ),
        (
            "unknown-skill",
            0,
            Box::new(|s| {
                *s == TurnStatus::UnknownSkill {
                    name: "office-hours".into(),
                }
            }),
        ),
        (
            "api-overloaded",
            1,
            Box::new(
                |s| matches!(s, TurnStatus::ApiError { status: Some(529), message } if message.starts_with("API Error: 529")),
            ),
        ),
    ];
    for (name, exit, check) in &cases {
        let outcome = classify(&raw_from_fixture(name, *exit));
        assert!(check(&outcome.status), "{name}: {:?}", outcome.status);
        assert!(outcome.has_result, "{name}");
        assert!(outcome.session_id.is_some(), "{name}");
    }
    // Every fixture file is covered.
    let files = std::fs::read_dir(fixture(""))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"));
    assert_eq!(files.count(), cases.len());
}

#[test]
fn api_errors_are_transient_only_when_overloaded() {
    let status = classify(&raw_from_fixture("api-overloaded", 1)).status;
    assert!(status.is_transient_api_error());
    let outcome = classify(&raw_from_fixture("start-success", 0));
    assert_eq!(outcome.cost_usd, 0.00055);
    assert_eq!(outcome.num_turns, 1);
    assert_eq!(outcome.usage.and_then(|u| u.output_tokens), Some(20));
}

#[test]
fn max_turns_keeps_the_session_for_the_retry() {
    let outcome = classify(&raw_from_fixture("max-turns", 1));
    assert_eq!(
        outcome.session_id.as_deref(),
        Some("dd0f705e-f339-4b23-a323-6d73b7dc6581")
    );
    assert_eq!(outcome.subtype.as_deref(), Some("error_max_turns"));
}

#[test]
fn no_result_line_is_a_crash_even_with_exit_zero() {
    let mut raw = raw_from_fixture("start-success", 0);
    raw.result = None;
    let outcome = classify(&raw);
    assert!(
        matches!(&outcome.status, TurnStatus::Crashed { exit: Some(0), stderr_tail } if stderr_tail.contains("without a result")),
        "{:?}",
        outcome.status
    );
    assert!(!outcome.has_result);

    raw.stderr_tail = "No conversation found with session ID: x".into();
    raw.exit = Exit::Code(1);
    assert_eq!(classify(&raw).status, TurnStatus::ResumeNotFound);
}

#[test]
fn empty_result_text_is_an_empty_answer() {
    let mut raw = raw_from_fixture("start-success", 0);
    if let Some(r) = raw.result.as_mut() {
        r.result = None;
    }
    assert_eq!(
        classify(&raw).status,
        TurnStatus::Answered {
            text: String::new()
        }
    );
}
