//! The argument vector of one `claude -p` turn. The prompt is never an argument: it goes on stdin.

use std::ffi::OsString;
use std::path::PathBuf;

/// Settings that are the same for every turn, from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonArgs {
    /// `--permission-mode`.
    pub permission_mode: String,
    /// `--allowedTools`, one entry each (joined with commas on the command line).
    pub allowed_tools: Vec<String>,
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
            allowed_tools: Vec::new(),
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
    if !common.allowed_tools.is_empty() {
        args.push("--allowedTools".into());
        args.push(common.allowed_tools.join(",").into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn first_turn_of_a_phase() {
        let common = CommonArgs {
            allowed_tools: vec!["Read".into(), "Write(./**)".into()],
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
        };
        assert_eq!(
            strings(build_args(&common, &turn)),
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
                "--allowedTools",
                "Read,Write(./**)",
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
                "dontAsk"
            ]
        );
    }
}
