//! The runner against the fake `claude`: stdin, cwd, limits, kills, concurrency.

use std::time::Duration;

use planbot::claude::{
    CommonArgs, Progress, RawTurn, Runner, Stopped, TurnArgs, TurnSpec, TurnStatus, build_args,
    classify,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::util::{FakeClaude, alive, eventually, fixture, group_members};

fn spec(fake: &FakeClaude, prompt: &str, partial: bool) -> TurnSpec {
    let common = CommonArgs {
        stream_partial: partial,
        ..CommonArgs::default()
    };
    let turn = TurnArgs {
        max_turns: 20,
        resume: None,
        system_prompt_file: None,
        workspace: None,
        approvals: Default::default(),
    };
    TurnSpec {
        args: build_args(&common, &turn),
        prompt: prompt.to_string(),
        cwd: fake.work(),
        files: Vec::new(),
        command: None,
    }
}

async fn run(runner: &Runner, spec: TurnSpec) -> (RawTurn, Vec<Progress>) {
    let mut seen = Vec::new();
    let raw = runner
        .run(spec, &CancellationToken::new(), &mut |p| seen.push(p))
        .await;
    (raw, seen)
}

#[tokio::test]
async fn prompt_goes_on_stdin_and_the_turn_runs_in_the_pinned_cwd() {
    let fake = FakeClaude::new(json!([]));
    let runner = fake.runner(|_| {});
    let big = "x".repeat(200 * 1024);
    let (raw, progress) = run(&runner, spec(&fake, &format!("hello {big}"), false)).await;
    let outcome = classify(&raw);
    assert!(
        matches!(&outcome.status, TurnStatus::Answered { text } if text.contains("You said: 'hello xxx"))
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["stdin"].as_str().unwrap().len(), 6 + big.len());
    assert_eq!(calls[0]["cwd"], json!(fake.work()));
    assert!(
        !calls[0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("hello"))
    );
    assert_eq!(progress.first(), Some(&Progress::Started));
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::Text(t) if t.contains("You said")))
    );
    assert_eq!(outcome.session_id, raw.init_session_id);
}

#[tokio::test]
async fn partial_messages_stream_text_once() {
    let fake = FakeClaude::new(
        json!([{"kind": "answer", "text": "A reply long enough to arrive in several pieces of forty bytes."}]),
    );
    let (raw, progress) = run(&fake.runner(|_| {}), spec(&fake, "go", true)).await;
    let text: String = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        "A reply long enough to arrive in several pieces of forty bytes."
    );
    assert!(
        progress
            .iter()
            .filter(|p| matches!(p, Progress::Text(_)))
            .count()
            > 1
    );
    assert!(raw.result.is_some());
}

#[tokio::test]
async fn garbage_huge_lines_unknown_events_and_a_missing_final_newline() {
    let fake = FakeClaude::new(json!([{"kind": "garbage"}]));
    let (raw, _) = run(&fake.runner(|_| {}), spec(&fake, "hi", false)).await;
    let outcome = classify(&raw);
    assert!(
        matches!(&outcome.status, TurnStatus::Answered { text } if text.contains("You said: 'hi'")),
        "{:?}",
        outcome.status
    );
    assert!(raw.assistant_text.len() > 3 * 1024 * 1024);
}

#[tokio::test]
async fn recorded_streams_replay_through_the_runner() {
    let fake = FakeClaude::new(json!([
        {"kind": "replay", "file": fixture("max-turns.jsonl"), "exit": 1},
        {"kind": "replay", "file": fixture("resume-partial.jsonl"), "exit": 0},
    ]));
    let runner = fake.runner(|_| {});
    let (raw, _) = run(&runner, spec(&fake, "x", false)).await;
    assert_eq!(classify(&raw).status, TurnStatus::MaxTurns);
    let (raw, progress) = run(&runner, spec(&fake, "x", true)).await;
    assert!(matches!(classify(&raw).status, TurnStatus::Answered { .. }));
    let streamed: String = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(streamed.starts_with("[fake model] reply 3") && streamed.ends_with("needs_input"));
}

#[tokio::test]
async fn a_result_then_a_hang_is_still_an_answer() {
    let fake = FakeClaude::new(json!([{"kind": "result_then_hang"}]));
    let (raw, _) = run(&fake.runner(|_| {}), spec(&fake, "hi", false)).await;
    assert!(matches!(classify(&raw).status, TurnStatus::Answered { .. }));
    assert!(raw.stopped.is_none());
    // Answered at its result line; the process is ended in the background.
    let pid = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    crate::wait::wait_until(
        "the group to end",
        10,
        || group_members(pid).is_empty(),
        || format!("{:?}", group_members(pid)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_turn_in_a_workspace_waits_until_the_last_process_has_exited() {
    let fake = FakeClaude::new(json!([
        {"kind": "result_then_linger", "delay_ms": 150},
        {"kind": "echo"},
    ]));
    let runner = fake.runner(|_| {});
    // The first is answered at its result line while its process lingers; the second, in the
    // same workspace, starts only once that process is gone.
    let (first, _) = run(&runner, spec(&fake, "one", false)).await;
    let (second, _) = run(&runner, spec(&fake, "two", false)).await;
    for raw in [&first, &second] {
        assert!(matches!(classify(raw).status, TurnStatus::Answered { .. }));
    }
    crate::wait::wait_until(
        "both spans",
        10,
        || fake.spans().len() == 2,
        || format!("{:?} {:?}", fake.spans(), fake.calls().len()),
    )
    .await;
    let mut spans = fake.spans();
    spans.sort();
    assert!(
        spans[0].1 <= spans[1].0,
        "the second process started while the first still ran: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_every_process_still_exiting_after_its_answer() {
    let fake = FakeClaude::new(json!([{"kind": "result_then_linger", "delay_ms": 200}]));
    let runner = fake.runner(|_| {});
    let (raw, _) = run(&runner, spec(&fake, "one", false)).await;
    assert!(matches!(classify(&raw).status, TurnStatus::Answered { .. }));
    let pid = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    // Answered while its process still runs; at shutdown, nothing of it is left.
    assert!(
        !group_members(pid).is_empty(),
        "the process had already ended"
    );
    runner.drain().await;
    assert!(group_members(pid).is_empty(), "{:?}", group_members(pid));
}

#[tokio::test]
async fn crash_carries_exit_code_and_stderr() {
    let fake = FakeClaude::new(
        json!([{"kind": "crash", "exit": 3, "stderr": "segfault in the flux capacitor"}]),
    );
    let (raw, _) = run(&fake.runner(|_| {}), spec(&fake, "hi", false)).await;
    assert_eq!(
        classify(&raw).status,
        TurnStatus::Crashed {
            exit: Some(3),
            stderr_tail: "segfault in the flux capacitor\n".into()
        }
    );
}

#[tokio::test]
async fn wall_clock_limit_kills_the_whole_group() {
    let fake =
        FakeClaude::new(json!([{"kind": "hang", "grandchild": true, "ignore_sigint": true}]));
    let runner = fake.runner(|c| c.turn_timeout = Duration::from_millis(800));
    let (raw, _) = run(&runner, spec(&fake, "hi", false)).await;
    assert_eq!(raw.stopped, Some(Stopped::WallClock));
    assert_eq!(classify(&raw).status, TurnStatus::TimedOut { idle: false });
    let pid = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    let grandchildren = fake.grandchildren();
    assert_eq!(grandchildren.len(), 1);
    eventually("the grandchild survived", || !alive(grandchildren[0]));
    eventually("the group survived", || group_members(pid).is_empty());
}

#[tokio::test]
async fn idle_limit_ends_a_silent_turn() {
    let fake = FakeClaude::new(json!([{"kind": "hang"}]));
    let runner = fake.runner(|c| c.idle_timeout = Duration::from_millis(500));
    let (raw, _) = run(&runner, spec(&fake, "hi", false)).await;
    assert_eq!(classify(&raw).status, TurnStatus::TimedOut { idle: true });
}

#[tokio::test]
async fn cancel_ends_a_turn_and_its_grandchildren() {
    let fake = FakeClaude::new(json!([{"kind": "hang", "grandchild": true}]));
    let runner = fake.runner(|_| {});
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = started.clone();
    let turn = tokio::spawn({
        let runner = runner.clone();
        let spec = spec(&fake, "hi", false);
        async move {
            runner
                .run(spec, &cancel, &mut |p| {
                    if p == Progress::Started {
                        notify.notify_one();
                    }
                })
                .await
        }
    });
    started.notified().await;
    // Wait until the fake has recorded its grandchild, then cancel.
    while fake.grandchildren().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.cancel();
    // A guard against hanging the suite, not a performance claim.
    let raw = tokio::time::timeout(Duration::from_secs(10), turn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(classify(&raw).status, TurnStatus::Cancelled);
    eventually("the grandchild survived", || {
        !alive(fake.grandchildren()[0])
    });
    let pid = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    eventually("the group survived", || group_members(pid).is_empty());
}

#[tokio::test]
async fn missing_binary_is_not_installed() {
    let fake = FakeClaude::new(json!([]));
    let runner = fake.runner(|c| c.bin = "/nonexistent/claude".into());
    let (raw, _) = run(&runner, spec(&fake, "hi", false)).await;
    let status = classify(&raw).status;
    assert_eq!(status, TurnStatus::NotInstalled);
    assert!(
        status
            .describe()
            .contains("npm install -g @anthropic-ai/claude-code")
    );
}

#[tokio::test]
async fn concurrency_limit_queues_the_rest() {
    let fake = FakeClaude::new(json!([
        {"kind": "slow", "delay_ms": 300}, {"kind": "slow", "delay_ms": 300},
        {"kind": "slow", "delay_ms": 300}, {"kind": "slow", "delay_ms": 300},
        {"kind": "slow", "delay_ms": 300}, {"kind": "slow", "delay_ms": 300},
    ]));
    let runner = fake.runner(|c| c.max_concurrent = 2);
    let mut turns = Vec::new();
    for i in 0..6 {
        let runner = runner.clone();
        // Six plans, six workspaces (turns in one workspace run one after the other).
        let mut spec = spec(&fake, "hi", false);
        spec.cwd = spec.cwd.join(format!("plan-{i}"));
        std::fs::create_dir_all(&spec.cwd).unwrap();
        turns.push(tokio::spawn(async move {
            let mut queued = false;
            let raw = runner
                .run(spec, &CancellationToken::new(), &mut |p| {
                    queued |= p == Progress::Queued
                })
                .await;
            (raw, queued)
        }));
    }
    let mut queued = 0;
    for turn in turns {
        let (raw, was_queued) = turn.await.unwrap();
        assert!(matches!(classify(&raw).status, TurnStatus::Answered { .. }));
        queued += usize::from(was_queued);
    }
    assert!(queued >= 4, "{queued} turns reported queueing");
    // Each turn is answered at its result line; the fake notes its span as it exits.
    crate::wait::wait_until(
        "every turn's span",
        10,
        || fake.spans().len() == 6,
        || format!("{:?}", fake.spans()),
    )
    .await;
    let spans = fake.spans();
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} ran at once");
}
