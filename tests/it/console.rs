//! The real `planbot` binary: a piped console session with the fake `claude`, and the CLI.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::util::FakeClaude;

pub fn planbot() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_planbot"));
    // A clean environment: only what the test sets, plus PATH and HOME.
    command.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // The fake `claude` keeps its records in a temp dir, which the sandbox hides; the tests of
    // the sandbox turn it back on.
    command.env("PLANBOT_SANDBOX", "off");
    command
}

/// `planbot console` in `dir` on `claude`, its state and workspaces there, stdin piped.
fn console_in(dir: &Path, claude: &Path) -> Command {
    let mut command = planbot();
    command
        .arg("console")
        .current_dir(dir)
        .env("PLANBOT_CLAUDE_BIN", claude)
        .env("PLANBOT_STATE_DIR", dir.join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
        .stdin(Stdio::piped());
    command
}

/// Checks that `pieces` appear in `text` in this order.
fn assert_in_order(text: &str, pieces: &[&str]) {
    let mut at = 0;
    for piece in pieces {
        let found = text[at..]
            .find(piece)
            .unwrap_or_else(|| panic!("missing {piece:?} after byte {at} in:\n{text}"));
        at += found + piece.len();
    }
}

/// Writes `input` to a child's stdin, closes it, and waits for the child's output.
fn feed(mut child: std::process::Child, input: &[u8]) -> Output {
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `planbot console` in `dir` with `input` piped in.
pub fn console(dir: &Path, claude: &Path, input: &str, extra_env: &[(&str, &str)]) -> Output {
    let child = planbot()
        .arg("console")
        .current_dir(dir)
        .env("PLANBOT_CLAUDE_BIN", claude)
        .env("PLANBOT_STATE_DIR", dir.join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
        .envs(extra_env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("planbot runs");
    let output = feed(child, input.as_bytes());
    if !output.status.success() {
        panic!(
            "planbot console failed: {}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

pub const SESSION: &str = "/plan todo-app a shared todo list for families\n\
Parents and kids\n\
Chores, with reminders\n\
/1\n\
Keep it small\n\
/finalize\n";

#[test]
fn a_piped_session_plans_and_finalizes() {
    let fake = FakeClaude::new(json!([
        {"kind": "answer", "text": "Who uses it?\n\nPHASE_STATUS: needs_input"},
        {"kind": "echo"}, {"kind": "echo", "status": "ready_to_advance"},
        {"kind": "answer", "text": "CEO: what is the wedge?\nPHASE_STATUS: needs_input"},
        {"kind": "echo"},
        {"kind": "answer", "text": "# Todo app plan\n\n## Summary\nSmall and shared.\n\nPHASE_STATUS: ready_to_advance"},
    ]));
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        ("TELEGRAM_BOT_TOKEN", "123456:telegram-secret"),
        ("DISCORD_TOKEN", "discord-secret"),
        ("CLAUDECODE", "1"),
        ("ANTHROPIC_API_KEY", "passes-through"),
    ];
    let out = console(dir.path(), &fake.bin(), SESSION, &secrets);
    let transcript = String::from_utf8_lossy(&out.stdout);
    let expected_order = [
        "Planning `todo-app`: 4 phases, starting with /office-hours.",
        "Who uses it?",
        "/1 Continue to /plan-ceo-review  /2 Finalize  /3 Cancel",
        "You said: 'Parents and kids'",
        "You said: 'Chores, with reminders'",
        "CEO: what is the wedge?",
        "/1 Continue to /plan-eng-review  /2 Finalize  /3 Cancel",
        "You said: 'Keep it small'",
        "✅ Plan `todo-app` finalized after 6 turns ($0.01). Saved to `todo-app/final-plan.md` in the workspace.",
        "# Todo app plan",
        "[attached final-plan.md",
    ];
    assert_in_order(&transcript, &expected_order);
    assert!(!transcript.contains("PHASE_STATUS"), "{transcript}");
    // No path of the server is shown (#15, 10).
    assert!(
        !transcript.contains(dir.path().to_str().unwrap()),
        "{transcript}"
    );
    let ws = dir.path().join("workspace/todo-app");
    let plan = std::fs::read_to_string(ws.join("final-plan.md")).unwrap();
    assert!(plan.starts_with("# Todo app plan") && !plan.contains("PHASE_STATUS"));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.join("plan.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "approved");
    assert!(ws.join("phases/01-office-hours.md").is_file());
    assert!(ws.join("phases/02-plan-ceo-review.md").is_file());

    // The secrets never reached claude; what Claude Code needs did.
    let calls = fake.calls();
    assert_eq!(calls.len(), 6);
    for call in &calls {
        let env = call["env"].as_object().unwrap();
        for name in ["TELEGRAM_BOT_TOKEN", "DISCORD_TOKEN", "CLAUDECODE"] {
            assert!(!env.contains_key(name), "{name} reached claude");
        }
        assert_eq!(env["ANTHROPIC_API_KEY"], "passes-through");
        assert!(env.contains_key("HOME"));
        assert_eq!(call["cwd"], json!(ws.canonicalize().unwrap()));
    }
    // Out of planning mode: the state file holds no plan.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/planning.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["sessions"], json!({}));
    // No secret in planbot's own output either.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("secret") && !transcript.contains("secret"));
}

#[test]
fn a_restart_resumes_the_plan_where_it_was() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    console(
        dir.path(),
        &fake.bin(),
        "/plan resume-me an idea\nfirst answer\n",
        &[],
    );
    let out = console(dir.path(), &fake.bin(), "/status\nsecond answer\n", &[]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains("`resume-me`: phase 1 of 4, /office-hours"),
        "{transcript}"
    );
    assert!(
        transcript.contains("reply 3 in session 00000000-0000-4000-8000-000000000001"),
        "{transcript}"
    );
    let calls = fake.calls();
    assert_eq!(
        crate::util::arg_after(&calls[2], "--resume"),
        Some("00000000-0000-4000-8000-000000000001")
    );
}

#[test]
fn sessions_and_check_report_the_state() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    console(dir.path(), &fake.bin(), "/plan listed an idea\n", &[]);
    let env = |c: &mut Command| {
        c.current_dir(dir.path())
            .env("PLANBOT_CLAUDE_BIN", fake.bin())
            .env("PLANBOT_STATE_DIR", dir.path().join("state"));
    };
    let mut sessions = planbot();
    env(&mut sessions);
    let out = sessions.arg("sessions").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.starts_with("CHAT")
            && table.contains("console:local")
            && table.contains("listed")
            && table.contains("office-hours (1/4)"),
        "{table}"
    );

    // The skills are looked up in the home planbot runs with: this test's own, never the real
    // one of whoever runs the tests (gstack may be installed there).
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".claude/skills/plan-ceo-review")).unwrap();
    std::fs::write(
        home.join(".claude/skills/plan-ceo-review/SKILL.md"),
        "---\n---\n",
    )
    .unwrap();
    let mut check = planbot();
    env(&mut check);
    let out = check.arg("check").env("HOME", &home).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("claude found") && report.contains("2.1.197"),
        "{report}"
    );
    assert!(
        report.contains("phase /office-hours: skill not installed, uses planbot's built-in prompt")
            && report.contains("phase /plan-ceo-review: skill installed"),
        "{report}"
    );

    // A corrupt state file and a missing claude make check fail, naming both.
    std::fs::write(
        dir.path().join("state/planning.json"),
        b"{\"version\": 1, \"sess",
    )
    .unwrap();
    let mut check = planbot();
    env(&mut check);
    let out = check
        .env("PLANBOT_CLAUDE_BIN", "/nonexistent/claude")
        .arg("check")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        report.contains("FAIL claude (/nonexistent/claude) does not run"),
        "{report}"
    );
    assert!(
        report.contains("FAIL planning.json needs attention"),
        "{report}"
    );
}

#[test]
fn configuration_errors_name_the_setting() {
    let out = planbot()
        .env("PLANBOT_MAX_TURNS", "many")
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PLANBOT_MAX_TURNS"));
    let out = planbot().arg("run").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("planbot console"));
}

#[test]
fn ctrl_c_cancels_the_turn_and_a_second_leaves() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader};

    let fake = FakeClaude::new(json!([{"kind": "hang"}]));
    let dir = tempfile::tempdir().unwrap();
    let mut child = planbot()
        .arg("console")
        .current_dir(dir.path())
        .env("PLANBOT_CLAUDE_BIN", fake.bin())
        .env("PLANBOT_STATE_DIR", dir.path().join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.path().join("workspace"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"/plan stuck an idea\n").unwrap();
    crate::util::eventually("claude never started", || !fake.calls().is_empty());
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("Cancelled.") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("Cancelled.")), "{seen:?}");
    // The plan survives a cancelled turn; a second Ctrl-C, with nothing running, leaves.
    kill(pid, Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(stdin);
    let state = std::fs::read_to_string(dir.path().join("state/planning.json")).unwrap();
    assert!(state.contains("\"slug\":\"stuck\""), "{state}");
    let pid = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    crate::util::eventually("claude survived", || {
        crate::util::group_members(pid).is_empty()
    });
}

#[test]
fn the_health_check_passes_while_planbot_runs_and_fails_when_it_does_not() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    let check = || {
        planbot()
            .args(["check", "--running"])
            .current_dir(dir.path())
            .env("PLANBOT_CLAUDE_BIN", fake.bin())
            .env("PLANBOT_STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap()
    };
    let log = std::fs::File::create(dir.path().join("console.log")).unwrap();
    let mut running = console_in(dir.path(), &fake.bin())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // planbot takes a moment to start and lock its state dir: ask until it holds it (bounded,
    // generously: the machine may be busy with other tests).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut healthy = check();
    while !healthy.status.success() && std::time::Instant::now() < deadline {
        if let Some(status) = running.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
            panic!("the console exited ({status}) before the check passed:\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        healthy = check();
    }
    let text = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert!(healthy.status.success(), "{text}");
    assert!(
        text.contains("planbot is running on this state dir"),
        "{text}"
    );
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    let stopped = check();
    let text = String::from_utf8_lossy(&stopped.stdout).into_owned();
    assert!(!stopped.status.success(), "{text}");
    assert!(text.contains("planbot is not running"), "{text}");
}

/// Runs `program` as another user than planbot's when the tests run as root (nobody, as the
/// dumpability test and the PostgreSQL server need), else as the tests' own user.
pub fn as_test_user(program: &std::path::Path) -> Command {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

#[test]
fn no_process_of_the_same_user_can_read_planbots_environment() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut planbot = as_test_user(Path::new(env!("CARGO_BIN_EXE_planbot")));
    planbot
        .arg("console")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PLANBOT_STATE_DIR", dir.path().join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.path().join("workspace"))
        .env("PLANBOT_SANDBOX", "off")
        .env("TELEGRAM_BOT_TOKEN", "123456:dumpable-test-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut planbot = planbot.spawn().unwrap();
    // A process of the same user that is dumpable, as a control: its environment is readable.
    let mut control = as_test_user(Path::new("/bin/sleep"))
        .arg("30")
        .env("CONTROL", "visible")
        .spawn()
        .unwrap();
    let read = |pid: u32| {
        let mut cat = as_test_user(Path::new("/bin/cat"));
        cat.arg(format!("/proc/{pid}/environ"));
        cat.output().unwrap()
    };
    crate::util::eventually("planbot starts", || {
        dir.path().join("state/planbot.lock").exists()
    });
    let control_env = read(control.id());
    assert!(
        String::from_utf8_lossy(&control_env.stdout).contains("CONTROL=visible"),
        "the control's environment is readable: the test can fail"
    );
    let planbot_env = read(planbot.id());
    assert!(
        !planbot_env.status.success(),
        "planbot's environ was readable"
    );
    assert!(!String::from_utf8_lossy(&planbot_env.stdout).contains("dumpable-test-secret"));
    let _ = control.kill();
    let _ = control.wait();
    drop(planbot.stdin.take());
    assert!(planbot.wait().unwrap().success());
}

#[test]
fn a_killed_planbot_leaves_no_claude_behind_after_its_restart() {
    let fake = FakeClaude::new(json!([
        {"kind": "slow", "delay_ms": 60000},
        {"kind": "echo"},
    ]));
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        console_in(dir.path(), &fake.bin())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"/plan app a shared list\n").unwrap();
    crate::util::eventually("the slow turn starts", || fake.calls().len() == 1);
    let orphan = fake.calls()[0]["pid"].as_i64().unwrap() as i32;
    first.kill().unwrap();
    first.wait().unwrap();
    drop(stdin);
    assert!(
        crate::util::alive(orphan),
        "kill -9 leaves the turn's claude running"
    );

    let mut second = start();
    second
        .stdin
        .take()
        .unwrap()
        .write_all(b"Families first\n")
        .unwrap();
    let output = second.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    crate::util::eventually("the orphan is gone", || !crate::util::alive(orphan));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{stdout}");
    assert!(
        calls[1]["stdin"]
            .as_str()
            .unwrap()
            .contains("Families first"),
        "the chat continues: {stdout}"
    );
    assert!(stdout.contains("[fake claude] reply 1"), "{stdout}");
    assert!(
        std::fs::read_dir(dir.path().join("state/running"))
            .unwrap()
            .next()
            .is_none(),
        "no record is left"
    );
}

#[test]
fn a_sandbox_that_was_asked_for_but_cannot_stand_refuses_to_start() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    // No bwrap on this PATH.
    let out = console_in(dir.path(), &fake.bin())
        .env("PATH", dir.path())
        .env("PLANBOT_SANDBOX", "bwrap")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("PLANBOT_SANDBOX=bwrap, but bubblewrap (bwrap) is not installed"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_byte_is_replaced_and_the_session_goes_on() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    let mut child = console_in(dir.path(), &fake.bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input: &[u8] = b"/plan cafe an idea\ncaf\xe9 au lait\r\nand then more\n";
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let calls = fake.calls();
    assert_eq!(calls.len(), 3, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        calls[1]["stdin"]
            .as_str()
            .unwrap()
            .contains("caf\u{FFFD} au lait\n</user_message>")
    );
    assert!(
        calls[2]["stdin"]
            .as_str()
            .unwrap()
            .contains("and then more")
    );
}

#[test]
fn a_bare_number_is_an_answer_and_cancelling_asks_once_more() {
    let fake = FakeClaude::new(json!([
        {"kind": "answer", "text": "How many users: 1, 2 or 3?\n\nPHASE_STATUS: needs_input"},
    ]));
    let dir = tempfile::tempdir().unwrap();
    let input = "/plan numbers an idea\n3\n/3\nno, keep it\n/9\n/3\n/3\n";
    let out = console(dir.path(), &fake.bin(), input, &[]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    let calls = fake.calls();
    // "3" answered Claude's question; "no, keep it" too, after the first /3 was not confirmed.
    assert_eq!(calls.len(), 3, "{transcript}");
    assert!(
        calls[1]["stdin"]
            .as_str()
            .unwrap()
            .contains("<user_message>\n3\n")
    );
    assert!(
        transcript.contains("Type /3 again to drop this plan"),
        "{transcript}"
    );
    assert!(
        transcript.contains("There is no choice /9 now."),
        "{transcript}"
    );
    assert!(
        transcript.contains("Cancelled planning `numbers`"),
        "{transcript}"
    );
    assert_eq!(transcript.matches("Cancelled planning").count(), 1);
}

#[test]
fn a_damaged_state_file_is_restored_from_its_backup_and_said_so() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    // Two sessions: the second's whole write of the file keeps the first's as the backup.
    console(dir.path(), &fake.bin(), "/plan keep an idea\n", &[]);
    console(dir.path(), &fake.bin(), "second thought\n", &[]);
    let state = dir.path().join("state");
    assert!(state.join("planning.json.bak").is_file());
    std::fs::write(state.join("planning.json"), b"{\"sessions\": {not json").unwrap();
    let out = console(dir.path(), &fake.bin(), "", &[]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains(
            "planbot's state file was damaged, so `keep` was restored from the backup taken at"
        ) && transcript.contains("Your last message may need sending again."),
        "{transcript}"
    );
    assert!(
        !transcript.contains("planbot restarted while a turn"),
        "{transcript}"
    );
    // The damaged file is kept for the operator.
    let kept = std::fs::read_dir(&state).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("planning.json.corrupt-")
    });
    assert!(kept);
}

/// Runs `planbot console` on a pseudo-terminal (util-linux `script`), so that it streams as it
/// does for a person; returns what the terminal showed.
fn console_on_a_terminal(dir: &Path, claude: &Path, input: &str) -> String {
    let command = format!("{} console", env!("CARGO_BIN_EXE_planbot"));
    let child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(dir)
        .env("PLANBOT_SANDBOX", "off")
        .env("PLANBOT_CLAUDE_BIN", claude)
        .env("PLANBOT_STATE_DIR", dir.join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux script runs");
    let out = feed(child, input.as_bytes());
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

#[test]
fn on_a_terminal_nothing_after_streamed_text_is_hidden() {
    let fake = FakeClaude::new(json!([
        {"kind": "no_result", "exit": 1, "text": "I looked at the idea.\nThen I"},
        {"kind": "answer", "text": "Line one\nlast line without newline"},
        {"kind": "answer", "text": "# Plan\n\nAll of it.\nPHASE_STATUS: ready_to_advance"},
    ]));
    let dir = tempfile::tempdir().unwrap();
    let screen = console_on_a_terminal(
        dir.path(),
        &fake.bin(),
        "/plan pty an idea\nagain\n/finalize\n",
    );
    let expected_order = [
        "I looked at the idea.",
        "That turn did not finish",
        "Line one",
        "last line without newline",
        "/1 Continue to /plan-ceo-review",
        "All of it.",
        "Plan `pty` finalized after 2 turns",
        "Saved to `pty/final-plan.md` in the workspace.",
    ];
    assert_in_order(&screen, &expected_order);
    assert_eq!(screen.matches("Line one").count(), 1, "{screen}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    // The sandbox is off in these tests, which planbot warns about: a log line to look at.
    let out = console(dir.path(), &fake.bin(), "/help\n", &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("wall 3, sandbox: off"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn claude_asked_its_version_never_takes_the_consoles_input() {
    let claude = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    // A `claude` that reads its stdin when asked its version (as the benchmarks' stand-in does;
    // a Node CLI may also set a shared stdin non-blocking): it must get nothing of the console's.
    let launcher = dir.path().join("claude");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then cat >/dev/null; echo '2.1.197 (Claude Code)'; exit 0; fi\nexec '{}' \"$@\"\n",
            claude.bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &launcher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let output = console(
        dir.path(),
        &launcher,
        "/plan todo-app a shared todo list\n",
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Planning `todo-app`"), "{stdout}");
    assert_eq!(claude.calls().len(), 1, "{stdout}");
}

#[test]
fn attach_brings_a_local_file_into_the_plan() {
    let fake = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("my spec.md");
    std::fs::write(&spec, "# Spec\nTwo screens.").unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 1536 * 1024]).unwrap();
    let input = format!(
        "/attach {}\n/plan specs an idea\n/attach {} read this first\n/attach {}\n/attach nowhere.md\n/attach\n",
        spec.display(),
        spec.display(),
        big.display()
    );
    let out = console(
        dir.path(),
        &fake.bin(),
        &input,
        &[("PLANBOT_MAX_ATTACHMENT_MB", "1")],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{transcript}");
    let said = calls[1]["stdin"].as_str().unwrap();
    assert!(
        said.contains("The user attached inbox/my spec.md (text/markdown, 1 KB): read this first"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("workspace/specs/inbox/my spec.md")).unwrap(),
        "# Spec\nTwo screens."
    );
    assert_in_order(
        &transcript,
        &[
            "Send files once a plan is under way",
            "read this first",
            "`big.bin` was not taken: planbot takes files up to 1 MB (PLANBOT_MAX_ATTACHMENT_MB), and it is 1.5 MB",
            "No file to attach at nowhere.md",
            "Usage: /attach <path> [caption]",
        ],
    );
    assert!(!dir.path().join("workspace/specs/inbox/big.bin").exists());
}
