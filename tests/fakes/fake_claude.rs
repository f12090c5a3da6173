//! A fake `claude` for planbot's tests: speaks the CLI's stream-json on stdout, driven by a scenario.
//!
//! Environment:
//! - `FAKE_CLAUDE_DIR` (required): its working state. `calls.jsonl` gets one line per call (argv,
//!   stdin, cwd, environment, pid); `sessions/` holds the sessions it created, with their cwd, so
//!   `--resume` fails like the real CLI when the id is unknown or the cwd differs.
//! - `FAKE_CLAUDE_SCENARIO` (optional): a JSON file `{"steps": [...]}`; each call takes the next
//!   step, and when none are left it answers by echoing. Step kinds: `answer` (`text`, `delay_ms`,
//!   `status`), `max_turns`, `api_error` (`status`), `unknown_skill`, `crash` (`exit`, `stderr`),
//!   `hang` (`grandchild`, `ignore_sigint`), `result_then_hang`, `result_then_linger`
//!   (`text` or an echo, `delay_ms` after the result, then `write` `body` into its cwd, then
//!   exit), `no_result`
//!   (`exit`, `text`), `garbage`,
//!   `replay` (`file`, `exit`: print a recorded stream verbatim), `slow` (`delay_ms`, then echo),
//!   `defer` (`tool`, `input`: the turn ends waiting on that call, as a hook's `defer` makes it).
//!
//! - `FAKE_CLAUDE_REPLAY` (benchmarks): print that recorded stream and exit, nothing else. With
//!   `FAKE_CLAUDE_REPLAY_DELAY_MS` it pauses that long after the first text it prints (or before
//!   the result when there is none), and with `FAKE_CLAUDE_REPLAY_LEAD_MS` that long before its
//!   first text (as the model takes a while to start); with `FAKE_CLAUDE_STAMP` it appends
//!   `<pid> start|text|result <unix ns>` lines there: when it started, and when it is about to
//!   print its first text and its result.
//!
//! It fails loudly (exit 97) on a call it cannot make sense of, so a test notices.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

fn main() {
    // Benchmarks: print a recorded stream and exit, with no bookkeeping of its own.
    if let Some(file) = std::env::var_os("FAKE_CLAUDE_REPLAY") {
        replay(Path::new(&file));
        return;
    }
    let dir = match std::env::var_os("FAKE_CLAUDE_DIR") {
        Some(d) => PathBuf::from(d),
        None => fail("FAKE_CLAUDE_DIR is not set"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version") {
        println!("2.1.197 (Claude Code)");
        return;
    }
    if !args.iter().any(|a| a == "-p") || !has_pair(&args, "--output-format", "stream-json") {
        fail(&format!("unexpected arguments: {args:?}"));
    }
    let mut stdin = String::new();
    if std::io::stdin().read_to_string(&mut stdin).is_err() {
        fail("stdin is not UTF-8");
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let started = now_ms();
    let _guard = lock(&dir);
    let call = next_counter(&dir, "calls");
    let step = scenario_step(call);
    append(
        &dir.join("calls.jsonl"),
        &json!({
            "call": call,
            "args": args,
            "stdin": stdin,
            "cwd": cwd,
            "env": std::env::vars().collect::<std::collections::BTreeMap<_, _>>(),
            "pid": std::process::id(),
            "step": step,
            "started_ms": started,
        }),
    );
    drop(_guard);
    run_step(&dir, &args, &stdin, &cwd, &step);
    let _guard = lock(&dir);
    append(
        &dir.join("spans.jsonl"),
        &json!({"call": call, "start": started, "end": now_ms()}),
    );
}

fn run_step(dir: &Path, args: &[String], stdin: &str, cwd: &Path, step: &Value) {
    let kind = step.get("kind").and_then(Value::as_str).unwrap_or("echo");
    let resume = value_of(args, "--resume");
    let session = match &resume {
        Some(id) => {
            if !session_exists(dir, id, cwd) {
                print_line(&json!({
                    "type": "result", "subtype": "error_during_execution", "is_error": true,
                    "num_turns": 0, "session_id": id, "total_cost_usd": 0,
                    "errors": [format!("No conversation found with session ID: {id}")],
                }));
                eprintln!("No conversation found with session ID: {id}");
                std::process::exit(1);
            }
            id.clone()
        }
        None => new_session(dir, cwd),
    };
    let delay = step.get("delay_ms").and_then(Value::as_u64).unwrap_or(0);
    // The skill a prompt invokes is installed, unless the step says it is not.
    let mut commands = vec!["office-hours".to_string()];
    if let Some(name) = stdin
        .strip_prefix('/')
        .and_then(|s| s.split_whitespace().next())
        && kind != "unknown_skill"
    {
        commands.push(name.to_string());
    }
    if kind == "unknown_skill" {
        commands.clear();
    }
    print_line(&json!({
        "type": "system", "subtype": "init", "cwd": cwd, "session_id": session,
        "slash_commands": commands, "skills": [], "claude_code_version": "2.1.197",
        "permissionMode": value_of(args, "--permission-mode"),
    }));
    match kind {
        "echo" | "slow" | "answer" => {
            std::thread::sleep(Duration::from_millis(delay));
            let text = match step.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => echo_text(dir, &session, stdin, step),
            };
            if args.iter().any(|a| a == "--include-partial-messages") {
                for chunk in text.as_bytes().chunks(40) {
                    let piece = String::from_utf8_lossy(chunk);
                    print_line(&json!({"type": "stream_event", "session_id": session,
                        "event": {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": piece}}}));
                }
            }
            assistant(&session, &text);
            result(&session, "success", false, Some(&text), 1, None);
        }
        "defer" => {
            // As when a PreToolUse hook answered `defer`: the turn ends waiting on the call.
            let call = json!({"id": "toolu_fake", "name": step["tool"], "input": step["input"]});
            print_line(
                &json!({"type": "result", "subtype": "success", "is_error": false,
                "num_turns": 1, "result": "", "stop_reason": "tool_deferred",
                "terminal_reason": "tool_deferred", "deferred_tool_use": call,
                "session_id": session, "total_cost_usd": 0.001,
                "usage": {"input_tokens": 10, "output_tokens": 20}}),
            );
        }
        "max_turns" => {
            let max = value_of(args, "--max-turns").unwrap_or_default();
            print_line(
                &json!({"type": "result", "subtype": "error_max_turns", "is_error": true,
                "num_turns": 4, "session_id": session, "total_cost_usd": 0.01,
                "errors": [format!("Reached maximum number of turns ({max})")]}),
            );
            std::process::exit(1);
        }
        "api_error" => {
            let status = step.get("status").and_then(Value::as_u64).unwrap_or(529);
            let text = format!("API Error: {status} Overloaded. This is a server-side issue.");
            assistant(&session, &text);
            result(&session, "success", true, Some(&text), 1, Some(status));
            std::process::exit(1);
        }
        "unknown_skill" => {
            let name = stdin.split_whitespace().next().unwrap_or("/x");
            let text = format!("Unknown command: {name}");
            assistant(&session, &text);
            print_line(
                &json!({"type": "result", "subtype": "success", "is_error": false,
                "num_turns": 0, "result": text, "session_id": session, "total_cost_usd": 0}),
            );
        }
        "crash" => {
            let code = step.get("exit").and_then(Value::as_i64).unwrap_or(3) as i32;
            eprintln!(
                "{}",
                step.get("stderr")
                    .and_then(Value::as_str)
                    .unwrap_or("fake crash")
            );
            std::process::exit(code);
        }
        "no_result" => {
            assistant(
                &session,
                step.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("partial work"),
            );
            let code = step.get("exit").and_then(Value::as_i64).unwrap_or(0) as i32;
            std::process::exit(code);
        }
        "garbage" => {
            println!("this is not json");
            println!("[1,2,3]");
            let huge = "x".repeat(3 * 1024 * 1024);
            print_line(&json!({"type": "assistant", "session_id": session,
                "message": {"content": [{"type": "text", "text": huge}]}}));
            print_line(&json!({"type": "mystery_event", "session_id": session}));
            let text = echo_text(dir, &session, stdin, step);
            assistant(&session, &text);
            // The last line ends without a newline.
            let line = json!({"type": "result", "subtype": "success", "is_error": false,
                "num_turns": 1, "result": text, "session_id": session, "total_cost_usd": 0.001});
            print!("{line}");
            let _ = std::io::stdout().flush();
        }
        "result_then_linger" => {
            let text = match step.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => echo_text(dir, &session, stdin, step),
            };
            assistant(&session, &text);
            result(&session, "success", false, Some(&text), 1, None);
            std::thread::sleep(Duration::from_millis(delay));
            // What an agent could still do after its answer: write into its working directory.
            if let (Some(file), Some(body)) = (
                step.get("write").and_then(Value::as_str),
                step.get("body").and_then(Value::as_str),
            ) {
                let _ = fs::write(cwd.join(file), body);
            }
        }
        "result_then_hang" => {
            let text = echo_text(dir, &session, stdin, step);
            assistant(&session, &text);
            result(&session, "success", false, Some(&text), 1, None);
            hang(step);
        }
        "hang" => hang(step),
        "replay" => {
            let file = step.get("file").and_then(Value::as_str).unwrap_or("");
            let text = fs::read_to_string(file)
                .unwrap_or_else(|e| fail(&format!("replay file {file}: {e}")));
            print!("{text}");
            let _ = std::io::stdout().flush();
            let code = step.get("exit").and_then(Value::as_i64).unwrap_or(0) as i32;
            std::process::exit(code);
        }
        other => fail(&format!("unknown step kind {other}")),
    }
}

/// Stays alive until killed; optionally with a grandchild and deaf to SIGINT.
fn hang(step: &Value) -> ! {
    if step.get("ignore_sigint").and_then(Value::as_bool) == Some(true) {
        // SAFETY: setting a signal disposition to ignore is async-signal-safe and has no handler.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::SigHandler::SigIgn,
            );
        }
    }
    if step.get("grandchild").and_then(Value::as_bool) == Some(true) {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .spawn();
        if let (Ok(child), Some(dir)) = (child, std::env::var_os("FAKE_CLAUDE_DIR")) {
            append(
                &PathBuf::from(dir).join("grandchildren"),
                &json!(child.id()),
            );
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(1000));
    }
}

fn echo_text(dir: &Path, session: &str, stdin: &str, step: &Value) -> String {
    let n = next_counter(dir, &format!("replies-{session}"));
    let said = stdin
        .trim()
        .replace("<user_message>", "")
        .replace("</user_message>", "");
    let said: String = said.trim().chars().take(200).collect();
    let status = step
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("needs_input");
    format!(
        "[fake claude] reply {n} in session {session}. You said: '{said}'.\n\nPHASE_STATUS: {status}"
    )
}

fn assistant(session: &str, text: &str) {
    print_line(&json!({"type": "assistant", "session_id": session,
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}));
}

fn result(
    session: &str,
    subtype: &str,
    is_error: bool,
    text: Option<&str>,
    turns: u32,
    api: Option<u64>,
) {
    print_line(
        &json!({"type": "result", "subtype": subtype, "is_error": is_error,
        "api_error_status": api, "num_turns": turns, "result": text, "session_id": session,
        "total_cost_usd": 0.001, "usage": {"input_tokens": 10, "output_tokens": 20}}),
    );
}

fn print_line(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn scenario_step(call: u64) -> Value {
    let Some(path) = std::env::var_os("FAKE_CLAUDE_SCENARIO") else {
        return json!({"kind": "echo"});
    };
    let text = fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("scenario: {e}")));
    let scenario: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("scenario: {e}")));
    scenario
        .get("steps")
        .and_then(Value::as_array)
        .and_then(|steps| steps.get(call as usize - 1))
        .cloned()
        .unwrap_or(json!({"kind": "echo"}))
}

fn new_session(dir: &Path, cwd: &Path) -> String {
    let n = {
        let _guard = lock(dir);
        next_counter(dir, "sessions")
    };
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let sessions = dir.join("sessions");
    let _ = fs::create_dir_all(&sessions);
    let _ = fs::write(sessions.join(&id), cwd.to_string_lossy().as_bytes());
    id
}

fn session_exists(dir: &Path, id: &str, cwd: &Path) -> bool {
    fs::read_to_string(dir.join("sessions").join(id)).is_ok_and(|c| Path::new(&c) == cwd)
}

fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    value_of(args, flag).as_deref() == Some(value)
}

fn value_of(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A counter file under `dir`; callers hold [`lock`] where calls may race.
fn next_counter(dir: &Path, name: &str) -> u64 {
    let path = dir.join(format!("counter-{name}"));
    let n = fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let _ = fs::write(&path, n.to_string());
    n
}

fn lock(dir: &Path) -> File {
    let _ = fs::create_dir_all(dir);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap_or_else(|e| fail(&format!("lock: {e}")));
    if let Err(e) = file.lock() {
        fail(&format!("lock: {e}"));
    }
    file
}

fn append(path: &Path, value: &Value) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    // One write, so that a reader never sees half a line.
    let _ = file.write_all(format!("{value}\n").as_bytes());
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fail(message: &str) -> ! {
    eprintln!("fake claude: {message}");
    std::process::exit(97);
}

/// Prints a recorded stream (see the header), pausing and stamping as asked.
fn replay(file: &Path) {
    let stamps = std::env::var_os("FAKE_CLAUDE_STAMP").map(PathBuf::from);
    let stamp = |what: &str| {
        let Some(path) = &stamps else { return };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let line = format!("{} {what} {nanos}\n", std::process::id());
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    };
    stamp("start");
    let delay = std::env::var("FAKE_CLAUDE_REPLAY_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let text = fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("replay: {e}")));
    let lead = std::env::var("FAKE_CLAUDE_REPLAY_LEAD_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let mut out = std::io::stdout().lock();
    let mut paused = false;
    for line in text.lines() {
        if let (Some(lead), false) = (lead, paused)
            && line.contains(r#""text_delta""#)
        {
            let _ = out.flush();
            std::thread::sleep(lead);
        }
        let is_result = line.starts_with(r#"{"type":"result""#);
        if is_result {
            if let (Some(delay), false) = (delay, paused) {
                std::thread::sleep(delay);
            }
            stamp("result");
        }
        // Stamped before it is printed, so a reader can never act on it earlier than the stamp.
        let first_text = !paused && line.contains(r#""text_delta""#);
        if first_text {
            stamp("text");
        }
        let _ = writeln!(out, "{line}");
        if first_text {
            let _ = out.flush();
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            paused = true;
        }
    }
    let _ = out.flush();
}
