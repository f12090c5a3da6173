//! Shared helpers: the fake `claude` set up per test, and readers of what it recorded.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use planbot::claude::{Runner, RunnerConfig};
use serde_json::Value;

/// The fake `claude` built with the test suite.
pub fn fake_claude_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_planbot-fake-claude"))
}

/// A fixture recorded from the real Claude Code CLI.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-cli")
        .join(name)
}

/// One test's fake `claude`: its own state directory, scenario and launcher script.
pub struct FakeClaude {
    pub dir: tempfile::TempDir,
}

impl FakeClaude {
    /// A fake that takes `steps` in order, then echoes.
    pub fn new(steps: Value) -> FakeClaude {
        let dir = tempfile::tempdir().expect("temp dir");
        let scenario = dir.path().join("scenario.json");
        std::fs::write(&scenario, serde_json::json!({ "steps": steps }).to_string()).unwrap();
        let launcher = dir.path().join("claude");
        // The launcher passes the fake its state through the environment without touching the
        // test process's own environment (shared by parallel tests).
        std::fs::write(
            &launcher,
            format!(
                "#!/bin/sh\nFAKE_CLAUDE_DIR='{}' FAKE_CLAUDE_SCENARIO='{}' exec '{}' \"$@\"\n",
                dir.path().join("state").display(),
                scenario.display(),
                fake_claude_bin().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        FakeClaude { dir }
    }

    /// The executable to configure as `PLANBOT_CLAUDE_BIN`.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("claude")
    }

    /// A working directory for turns.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Value> {
        read_jsonl(&self.dir.path().join("state/calls.jsonl"))
    }

    /// `(start, end)` in ms of every call that ran to its end.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        read_jsonl(&self.dir.path().join("state/spans.jsonl"))
            .iter()
            .map(|v| (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap()))
            .collect()
    }

    /// Pids of grandchildren that hanging steps started.
    pub fn grandchildren(&self) -> Vec<i32> {
        read_jsonl(&self.dir.path().join("state/grandchildren"))
            .iter()
            .filter_map(|v| v.as_i64().map(|p| p as i32))
            .collect()
    }

    /// A runner on this fake with short limits for tests.
    pub fn runner(&self, tweak: impl FnOnce(&mut RunnerConfig)) -> Runner {
        let mut config = RunnerConfig {
            bin: self.bin(),
            kill_grace: Duration::from_millis(300),
            exit_grace: Duration::from_millis(300),
            ..RunnerConfig::default()
        };
        tweak(&mut config);
        Runner::new(config)
    }
}

/// The complete lines of a JSON-lines file: a line the fake is still writing (no newline yet)
/// is not read, so a test that polls while a call starts never sees half a line.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The argument after `flag` in a recorded call.
pub fn arg_after<'a>(call: &'a Value, flag: &str) -> Option<&'a str> {
    let args = call["args"].as_array()?;
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.as_str()
}

/// Whether a process is still alive (a zombie counts as gone: it has exited).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Every live process in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && alive(pid) {
            members.push(pid);
        }
    }
    members
}

/// Waits (boundedly) until `done` holds: a killed process takes a moment to disappear.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    // Up to 10 s: generous, since the machine may be busy with the other tests.
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}");
}

/// `planbot run` in `dir` with the fake `claude` and `env`; its log in `dir/planbot.log`.
pub fn run_planbot(dir: &Path, claude: &FakeClaude, env: &[(&str, &str)]) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("planbot.log"))
        .expect("log file");
    let child = crate::console::planbot()
        .arg("run")
        .current_dir(dir)
        .env("PLANBOT_CLAUDE_BIN", claude.bin())
        .env("PLANBOT_STATE_DIR", dir.join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
        .env("PLANBOT_MAX_CONCURRENT_RUNS", "10")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("planbot run");
    Running(child, dir.join("state/running"))
}

/// A running `planbot run`, killed when dropped, with every `claude` group it recorded (in its
/// state dir's `running/`), so that a failing test leaves no process behind.
pub struct Running(pub Child, PathBuf);

impl Running {
    /// Waits (at most 60 s) for planbot to exit on its own; a planbot that does not is killed
    /// when the test fails, so a regression fails CI rather than hanging it.
    pub async fn exit(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        tokio::task::spawn_blocking(move || {
            loop {
                if let Some(status) = self.0.try_wait().expect("wait") {
                    return status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "planbot did not exit within 60 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("planbot exited within 60 s")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        planbot::claude::reap_orphans(&self.1);
    }
}

pub use crate::wait::wait_until;

/// The payload of the first of `buttons` (label, payload) whose label starts with `label_start`.
pub fn button(buttons: Vec<(String, String)>, label_start: &str) -> String {
    let names: Vec<String> = buttons.iter().map(|(label, _)| label.clone()).collect();
    buttons
        .into_iter()
        .find(|(label, _)| label.starts_with(label_start))
        .unwrap_or_else(|| panic!("no {label_start:?} button in {names:?}"))
        .1
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
