//! The argument vector of one `claude -p` turn. The prompt is never an argument: it goes on stdin.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::approval::Approvals;

/// Settings that are the same for every turn, from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonArgs {
    /// `--permission-mode`.
    pub permission_mode: String,
    /// `--tools`: the only tools that exist for the turn; empty leaves the CLI's default set.
    pub tools: Vec<String>,
    /// `--allowedTools`, one entry each (joined with commas on the command line).
    pub allowed_tools: Vec<String>,
    /// `--disallowedTools`: denied whatever allows them.
    pub disallowed_tools: Vec<String>,
    /// planbot's own binary, run as the `PreToolUse` path guard of every turn; `None` runs none.
    pub path_guard: Option<PathBuf>,
    /// `--permission-prompts none`, on CLIs new enough to know it (2.1.259 and later).
    pub permission_prompts_none: bool,
    /// `--add-dir` for each.
    pub add_dirs: Vec<PathBuf>,
    /// `--model`, if set.
    pub model: Option<String>,
    /// `--max-budget-usd` per turn, if set.
    pub max_budget_usd: Option<f64>,
    /// `--include-partial-messages`, for streamed progress.
    pub stream_partial: bool,
}

impl Default for CommonArgs {
    fn default() -> Self {
        CommonArgs {
            permission_mode: "dontAsk".into(),
            tools: Vec::new(),
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            path_guard: None,
            permission_prompts_none: false,
            add_dirs: Vec::new(),
            model: None,
            max_budget_usd: None,
            stream_partial: false,
        }
    }
}

/// What one turn asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnArgs {
    pub max_turns: u32,
    /// `--resume <id>`; `None` starts a fresh session.
    pub resume: Option<String>,
    /// `--system-prompt-file`, on a phase's first turn.
    pub system_prompt_file: Option<PathBuf>,
    /// The turn's workspace, where the path guard confines it.
    pub workspace: Option<PathBuf>,
    /// What the path guard answers for approvable tools in this turn.
    pub approvals: Approvals,
}

/// Builds the argv (without the program name).
pub fn build_args(common: &CommonArgs, turn: &TurnArgs) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-p".into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        "--max-turns".into(),
        turn.max_turns.to_string().into(),
    ];
    if let Some(id) = &turn.resume {
        args.push("--resume".into());
        args.push(id.into());
    }
    if let Some(path) = &turn.system_prompt_file {
        args.push("--system-prompt-file".into());
        args.push(path.into());
    }
    for dir in &common.add_dirs {
        args.push("--add-dir".into());
        args.push(dir.into());
    }
    args.push("--permission-mode".into());
    args.push((&common.permission_mode).into());
    if common.permission_prompts_none {
        args.push("--permission-prompts".into());
        args.push("none".into());
    }
    // Settings and MCP servers come from the operator's own config only, never from a file the
    // agent could write into its workspace.
    args.push("--setting-sources".into());
    args.push("user".into());
    args.push("--strict-mcp-config".into());
    for (flag, list) in [
        ("--tools", &common.tools),
        ("--allowedTools", &common.allowed_tools),
        ("--disallowedTools", &common.disallowed_tools),
    ] {
        if !list.is_empty() {
            args.push(flag.into());
            args.push(list.join(",").into());
        }
    }
    if let (Some(guard), Some(workspace)) = (&common.path_guard, &turn.workspace) {
        args.push("--settings".into());
        args.push(guard_settings(guard, workspace, &turn.approvals).into());
    }
    if let Some(model) = &common.model {
        args.push("--model".into());
        args.push(model.into());
    }
    if let Some(budget) = common.max_budget_usd {
        args.push("--max-budget-usd".into());
        args.push(budget.to_string().into());
    }
    if common.stream_partial {
        args.push("--include-partial-messages".into());
    }
    args
}

/// The `--settings` JSON that runs the path guard before every tool call.
pub fn guard_settings(planbot: &Path, workspace: &Path, approvals: &Approvals) -> String {
    let quote = |text: &str| {
        shlex::try_quote(text)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| "/nonexistent/planbot-path-with-nul".into())
    };
    let mut command = format!(
        "{} hook path-guard --workspace {}",
        quote(&planbot.to_string_lossy()),
        quote(&workspace.to_string_lossy())
    );
    for arg in approvals.hook_args() {
        command.push(' ');
        command.push_str(&quote(&arg));
    }
    serde_json::json!({"hooks": {"PreToolUse": [
        {"matcher": "*", "hooks": [{"type": "command", "command": command, "timeout": 30}]}
    ]}})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn first_turn_of_a_phase() {
        let common = CommonArgs {
            tools: vec!["Read".into(), "Write".into()],
            allowed_tools: vec!["Read(./**)".into(), "Write(./**)".into()],
            disallowed_tools: vec!["Bash".into()],
            path_guard: Some("/opt/plan bot".into()),
            permission_prompts_none: true,
            add_dirs: vec!["/extra".into()],
            model: Some("opus".into()),
            max_budget_usd: Some(0.5),
            stream_partial: true,
            ..CommonArgs::default()
        };
        let turn = TurnArgs {
            max_turns: 20,
            resume: None,
            system_prompt_file: Some("/tmp/sys.md".into()),
            workspace: Some("/ws/todo-app".into()),
            approvals: Approvals {
                approvable: vec!["WebFetch".into()],
                allowed: vec!["WebFetch(domain:docs.rs)".into()],
                ..Approvals::default()
            },
        };
        let args = strings(build_args(&common, &turn));
        let settings = args[args.iter().position(|a| a == "--settings").unwrap() + 1].clone();
        let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
        assert_eq!(
            settings["hooks"]["PreToolUse"][0]["hooks"][0]["command"],
            "'/opt/plan bot' hook path-guard --workspace /ws/todo-app --approvable WebFetch \
             --allow 'WebFetch(domain:docs.rs)'"
        );
        assert_eq!(
            args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--max-turns",
                "20",
                "--system-prompt-file",
                "/tmp/sys.md",
                "--add-dir",
                "/extra",
                "--permission-mode",
                "dontAsk",
                "--permission-prompts",
                "none",
                "--setting-sources",
                "user",
                "--strict-mcp-config",
                "--tools",
                "Read,Write",
                "--allowedTools",
                "Read(./**),Write(./**)",
                "--disallowedTools",
                "Bash",
                "--settings",
                &settings.to_string(),
                "--model",
                "opus",
                "--max-budget-usd",
                "0.5",
                "--include-partial-messages"
            ]
        );
    }

    #[test]
    fn a_reply_resumes() {
        let turn = TurnArgs {
            max_turns: 30,
            resume: Some("abc".into()),
            system_prompt_file: None,
            workspace: None,
            approvals: Approvals::default(),
        };
        let args = strings(build_args(&CommonArgs::default(), &turn));
        assert_eq!(
            args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--max-turns",
                "30",
                "--resume",
                "abc",
                "--permission-mode",
                "dontAsk",
                "--setting-sources",
                "user",
                "--strict-mcp-config"
            ]
        );
    }
}
