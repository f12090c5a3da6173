//! What a finished turn means: one function, [`classify`], over everything the run produced.
//!
//! The CLI's `subtype: success` alone does not mean success (an API error arrives as
//! `subtype: success, is_error: true`), so the decision uses the exit status, the presence of a
//! `result` line, `subtype`, `is_error`, `api_error_status`, `errors`, `num_turns` and the text.

use super::approval::ToolCall;
use super::events::{ResultEvent, Usage};

/// How the process ended, as the runner saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Ended by this signal.
    Signal(i32),
    /// The binary could not be found.
    NotFound,
    /// Spawning failed for another reason (permissions, resources).
    SpawnFailed,
}

/// Why the runner ended a turn itself, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The wall-clock limit passed.
    WallClock,
    /// No output line for the idle limit.
    Idle,
    /// Cancelled from outside.
    Cancelled,
}

/// Everything a finished run produced, before interpretation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTurn {
    pub exit: Exit,
    /// Set when the runner ended the turn, not the CLI.
    pub stopped: Option<Stopped>,
    /// The `result` line, if one came.
    pub result: Option<ResultEvent>,
    /// The session id from the first line that named one (init).
    pub init_session_id: Option<String>,
    /// All assistant text seen, for a turn that ended without a result.
    pub assistant_text: String,
    /// The last few KiB of stderr (or the spawn error).
    pub stderr_tail: String,
    /// The slash command the prompt invoked, when the CLI's init line showed it is not
    /// installed (the runner then ends the turn before the model answers it as plain text).
    pub missing_command: Option<String>,
}

/// The classified end of a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnStatus {
    /// The model answered; `text` may be empty.
    Answered { text: String },
    /// `--max-turns` ran out before an answer.
    MaxTurns,
    /// The Messages API failed (overload, rate limit, server error).
    ApiError {
        status: Option<u16>,
        message: String,
    },
    /// `--resume` named a session the CLI cannot find.
    ResumeNotFound,
    /// The prompt named a slash command (skill) that is not installed.
    UnknownSkill { name: String },
    /// `--max-budget-usd` was reached.
    BudgetExceeded,
    /// `claude` could not be started at all (permissions, a missing working directory).
    StartFailed { reason: String },
    /// The CLI failed in a way not listed above.
    Crashed {
        exit: Option<i32>,
        stderr_tail: String,
    },
    /// The wall-clock or idle limit ended the turn.
    TimedOut { idle: bool },
    /// Cancelled from outside.
    Cancelled,
    /// The binary was not found.
    NotInstalled,
    /// The path guard deferred an approvable tool call: the turn waits for the user's answer.
    Deferred { call: ToolCall },
}

/// A classified turn with what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    pub status: TurnStatus,
    /// The CLI's session id: from the result line, else from init.
    pub session_id: Option<String>,
    /// Whether a `result` line arrived (only then may the session id be stored).
    pub has_result: bool,
    pub cost_usd: f64,
    pub num_turns: u32,
    pub usage: Option<Usage>,
    /// The result's subtype as printed, for the record.
    pub subtype: Option<String>,
    /// Tools the CLI refused during the turn (`permission_denials`), each named once.
    pub denied_tools: Vec<String>,
}

impl TurnStatus {
    /// A short line for logs and for the user.
    pub fn describe(&self) -> String {
        match self {
            TurnStatus::Answered { .. } => "answered".into(),
            TurnStatus::MaxTurns => "ran out of turns".into(),
            TurnStatus::ApiError { status, message } => {
                // The CLI's text often says "API Error: 429 …" itself: not twice.
                let mut message = message.trim();
                if message.to_ascii_lowercase().starts_with("api error") {
                    message = message["api error".len()..].trim_start_matches([':', ' ']);
                }
                match status {
                    Some(s) => {
                        let code = s.to_string();
                        let message = message.strip_prefix(&code).unwrap_or(message);
                        format!("API error {s}: {}", message.trim_start_matches([':', ' ']))
                    }
                    None => format!("API error: {message}"),
                }
            }
            TurnStatus::ResumeNotFound => "Claude's session was not found".into(),
            TurnStatus::UnknownSkill { name } => format!("skill /{name} is not installed"),
            TurnStatus::BudgetExceeded => "the per-turn budget was reached".into(),
            TurnStatus::StartFailed { reason } => {
                format!("Claude Code could not be started ({reason})")
            }
            TurnStatus::Crashed { exit, stderr_tail } => {
                let code = exit.map_or("a signal".to_string(), |c| format!("exit code {c}"));
                match meaningful_line(stderr_tail) {
                    Some(line) => format!("Claude Code stopped with {code}: {line}"),
                    None => format!("Claude Code stopped with {code}"),
                }
            }
            TurnStatus::TimedOut { idle: true } => "Claude went quiet for too long".into(),
            TurnStatus::TimedOut { idle: false } => "the turn took too long".into(),
            TurnStatus::Cancelled => "cancelled".into(),
            TurnStatus::NotInstalled => NOT_INSTALLED_HELP.into(),
            TurnStatus::Deferred { call } => format!("waiting to use {}", call.tool),
        }
    }
}

/// What a user sees when `claude` is missing.
pub const NOT_INSTALLED_HELP: &str = "Claude Code is not installed where planbot looks \
(PLANBOT_CLAUDE_BIN). Install it with `npm install -g @anthropic-ai/claude-code`, log in once \
with `claude`, then try again.";

const RESUME_MISSING: &str = "No conversation found with session ID";
const UNKNOWN_COMMAND: &str = "Unknown command: /";

/// The line of stderr that says what went wrong: the last error message, not a stack frame
/// (`at Object.<anonymous> (cli.js:1:1)`) nor a source excerpt.
pub fn meaningful_line(stderr: &str) -> Option<&str> {
    let is_frame = |l: &str| {
        let l = l.trim();
        l.starts_with("at ")
            || l.starts_with('^')
            || l.starts_with("node:")
            || l.starts_with("Node.js v")
            || (l.ends_with(')') && l.contains(".js:"))
    };
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_frame(l))
        .collect();
    let errorish = |l: &&&str| {
        let lower = l.to_ascii_lowercase();
        lower.contains("error") || lower.contains("invalid") || lower.contains("please run")
    };
    lines
        .iter()
        .rev()
        .find(errorish)
        .or_else(|| lines.last())
        .copied()
}

/// What to do about the failures users meet most, recognised in what the CLI said.
pub fn advice(said: &str) -> Option<&'static str> {
    let lower = said.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if any(&[
        "invalid api key",
        "/login",
        "not logged in",
        "authentication",
        "oauth token",
    ]) {
        Some(
            "Claude Code is not logged in where planbot runs: log in once with `claude` there (or set ANTHROPIC_API_KEY).",
        )
    } else if any(&["credit balance", "billing", "insufficient credit"]) {
        Some("The Anthropic account is out of credit: add credit, then send your message again.")
    } else if any(&["overloaded", "529"]) {
        Some("Claude's API is overloaded right now: send your message again in a minute.")
    } else if any(&[
        "enotfound",
        "econnrefused",
        "etimedout",
        "unable to connect",
        "network",
    ]) {
        Some("Claude's API could not be reached from the server (network): check its connection.")
    } else if any(&["unknown option", "unknown argument", "unexpected argument"]) {
        Some(
            "The installed Claude Code is too old for planbot: update it with `npm install -g @anthropic-ai/claude-code`.",
        )
    } else {
        None
    }
}

/// Classifies a finished turn.
pub fn classify(raw: &RawTurn) -> TurnOutcome {
    let result = raw.result.as_ref();
    let status = classify_status(raw);
    TurnOutcome {
        status,
        session_id: result
            .and_then(|r| r.session_id.clone())
            .or_else(|| raw.init_session_id.clone()),
        has_result: result.is_some(),
        cost_usd: result.and_then(|r| r.total_cost_usd).unwrap_or(0.0),
        num_turns: result.and_then(|r| r.num_turns).unwrap_or(0),
        usage: result.and_then(|r| r.usage),
        subtype: result.and_then(|r| r.subtype.clone()),
        denied_tools: denied_tools(result.and_then(|r| r.permission_denials.as_deref())),
    }
}

fn denied_tools(denials: Option<&[serde_json::Value]>) -> Vec<String> {
    let mut tools: Vec<String> = Vec::new();
    for denial in denials.unwrap_or_default() {
        let name = denial
            .get("tool_name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("a tool");
        if !tools.iter().any(|t| t == name) {
            tools.push(name.to_string());
        }
    }
    tools
}

fn classify_status(raw: &RawTurn) -> TurnStatus {
    match raw.exit {
        Exit::NotFound => return TurnStatus::NotInstalled,
        Exit::SpawnFailed => {
            return TurnStatus::StartFailed {
                reason: raw.stderr_tail.trim().to_string(),
            };
        }
        _ => {}
    }
    if let Some(name) = &raw.missing_command {
        return TurnStatus::UnknownSkill { name: name.clone() };
    }
    // A result line decides, even if the runner had to end a process that hung after it.
    if let Some(result) = &raw.result {
        return classify_result(raw, result);
    }
    match raw.stopped {
        Some(Stopped::Cancelled) => return TurnStatus::Cancelled,
        Some(Stopped::Idle) => return TurnStatus::TimedOut { idle: true },
        Some(Stopped::WallClock) => return TurnStatus::TimedOut { idle: false },
        None => {}
    }
    if raw.stderr_tail.contains(RESUME_MISSING) {
        return TurnStatus::ResumeNotFound;
    }
    let tail = if raw.stderr_tail.trim().is_empty() {
        "Claude Code ended without a result".to_string()
    } else {
        raw.stderr_tail.clone()
    };
    TurnStatus::Crashed {
        exit: exit_code(raw.exit),
        stderr_tail: tail,
    }
}

fn exit_code(exit: Exit) -> Option<i32> {
    match exit {
        Exit::Code(c) => Some(c),
        _ => None,
    }
}

fn classify_result(raw: &RawTurn, r: &ResultEvent) -> TurnStatus {
    let subtype = r.subtype.as_deref().unwrap_or("");
    let is_error = r.is_error.unwrap_or(subtype != "success");
    let errors = r.errors.as_deref().unwrap_or_default();
    let text = r.result.clone().unwrap_or_default();

    if errors.iter().any(|e| e.contains(RESUME_MISSING)) {
        return TurnStatus::ResumeNotFound;
    }
    if subtype == "error_max_turns" {
        return TurnStatus::MaxTurns;
    }
    if subtype.contains("budget") {
        return TurnStatus::BudgetExceeded;
    }
    if r.api_error_status.is_some() || (is_error && text.starts_with("API Error")) {
        let message = if text.is_empty() {
            errors.join("; ")
        } else {
            text
        };
        return TurnStatus::ApiError {
            status: r.api_error_status.or_else(|| status_in_text(&message)),
            message,
        };
    }
    if is_error {
        let mut tail = errors.join("\n");
        if tail.is_empty() {
            tail = if text.is_empty() {
                raw.stderr_tail.clone()
            } else {
                text
            };
        }
        return TurnStatus::Crashed {
            exit: exit_code(raw.exit),
            stderr_tail: tail,
        };
    }
    if r.stop_reason.as_deref() == Some("tool_deferred")
        && let Some(call) = deferred_call(r)
    {
        return TurnStatus::Deferred { call };
    }
    if r.num_turns.unwrap_or(0) == 0
        && let Some(rest) = text.trim().strip_prefix(UNKNOWN_COMMAND)
    {
        let name = rest.split_whitespace().next().unwrap_or("").to_string();
        return TurnStatus::UnknownSkill { name };
    }
    TurnStatus::Answered { text }
}

/// The call a deferred turn waits on: `deferred_tool_use`'s `name` and `input`.
fn deferred_call(r: &ResultEvent) -> Option<ToolCall> {
    let deferred = r.deferred_tool_use.as_ref()?;
    Some(ToolCall {
        tool: deferred.get("name")?.as_str()?.to_string(),
        input: deferred
            .get("input")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    })
}

/// `API Error: 529 Overloaded...` carries the status in its text.
fn status_in_text(message: &str) -> Option<u16> {
    let rest = message.strip_prefix("API Error")?;
    let digits: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl TurnStatus {
    /// Overload and server errors are worth one retry; rate and usage limits are not.
    pub fn is_transient_api_error(&self) -> bool {
        match self {
            TurnStatus::ApiError { status, message } => match status {
                Some(429) => false,
                Some(s) => *s == 529 || (500..600).contains(s),
                None => {
                    let m = message.to_ascii_lowercase();
                    m.contains("overload") && !m.contains("usage limit")
                }
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_shows_its_error_message_not_a_stack_frame() {
        let stderr = "file:///cli.js:12\n    throw e;\n    ^\n\nError: Invalid API key · Please run /login\n    at Object.<anonymous> (cli.js:1:1)\n    at Module._compile (node:internal/modules/cjs/loader:1554:14)\n\nNode.js v22.1.0\n";
        let status = TurnStatus::Crashed {
            exit: Some(1),
            stderr_tail: stderr.into(),
        };
        assert_eq!(
            status.describe(),
            "Claude Code stopped with exit code 1: Error: Invalid API key · Please run /login"
        );
        assert!(
            advice(&status.describe())
                .unwrap()
                .contains("log in once with `claude`")
        );
        for (said, fix) in [
            ("Your credit balance is too low", "out of credit"),
            ("API Error: 529 Overloaded", "overloaded"),
            ("Error: connect ECONNREFUSED 1.2.3.4:443", "network"),
            ("error: unknown option '--tools'", "too old"),
        ] {
            assert!(advice(said).unwrap().contains(fix), "{said}");
        }
        assert_eq!(advice("something else"), None);
        assert_eq!(meaningful_line("  \n"), None);
    }

    fn raw(exit: Exit, result: Option<ResultEvent>) -> RawTurn {
        RawTurn {
            exit,
            stopped: None,
            result,
            init_session_id: Some("init".into()),
            assistant_text: String::new(),
            stderr_tail: String::new(),
            missing_command: None,
        }
    }

    #[test]
    fn status_is_read_from_api_error_text() {
        assert_eq!(status_in_text("API Error: 529 Overloaded."), Some(529));
        assert_eq!(status_in_text("API Error (timeout)"), None);
        assert_eq!(status_in_text("hello"), None);
    }

    #[test]
    fn transient_errors() {
        let api = |status, message: &str| TurnStatus::ApiError {
            status,
            message: message.into(),
        };
        assert!(api(Some(529), "").is_transient_api_error());
        assert!(api(Some(500), "").is_transient_api_error());
        assert!(!api(Some(429), "").is_transient_api_error());
        assert!(!api(Some(400), "").is_transient_api_error());
        assert!(api(None, "Overloaded").is_transient_api_error());
        assert!(!api(None, "usage limit reached").is_transient_api_error());
    }

    #[test]
    fn budget_subtype() {
        let r = ResultEvent {
            subtype: Some("error_max_budget_usd".into()),
            is_error: Some(true),
            ..Default::default()
        };
        assert_eq!(
            classify(&raw(Exit::Code(1), Some(r))).status,
            TurnStatus::BudgetExceeded
        );
    }

    #[test]
    fn spawn_failures() {
        assert_eq!(
            classify(&raw(Exit::NotFound, None)).status,
            TurnStatus::NotInstalled
        );
        let out = classify(&raw(Exit::SpawnFailed, None));
        assert!(matches!(out.status, TurnStatus::StartFailed { .. }));
        assert!(
            out.status
                .describe()
                .starts_with("Claude Code could not be started")
        );
        assert!(!out.has_result);
        assert_eq!(out.session_id.as_deref(), Some("init"));
    }
}
