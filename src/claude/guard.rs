//! `planbot hook path-guard`: the `PreToolUse` hook that keeps every tool call inside the turn's
//! workspace, whatever the CLI's own permission rules mean.
//!
//! The CLI runs it once per tool call with the call as JSON on stdin. It resolves every path the
//! tool would touch (symlinks and `..` included) and denies anything outside the workspace, and
//! the files inside it that the CLI loads as instructions. It fails closed: input it cannot read,
//! and a tool it does not know that carries a path, are denied. It says nothing when a call may
//! go on, so the CLI's rules still decide (a hook's "allow" would skip them).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use super::approval::{Answer, Approvals, ToolCall};

/// Names inside the workspace that the CLI reads as instructions or configuration.
const PROTECTED_NAMES: [&str; 4] = ["claude.md", "claude.local.md", ".claude", ".mcp.json"];
/// Tools that touch no local path.
const PATH_FREE: [&str; 7] = [
    "WebSearch",
    "WebFetch",
    "Skill",
    "TodoWrite",
    "ExitPlanMode",
    "AskUserQuestion",
    "ToolSearch",
];
/// Tools whose effect cannot be confined by looking at paths.
const UNCHECKABLE: [&str; 4] = ["Bash", "BashOutput", "KillShell", "PowerShell"];
const METACHARS: [char; 4] = ['*', '?', '[', '{'];

/// The hook's answer for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No objection: the CLI's own rules decide.
    Pass,
    Deny(String),
    /// An approvable call the user allowed.
    Allow,
    /// An approvable call to ask the user about: the turn ends with it.
    Defer,
}

/// Reads one hook call from stdin and prints the verdict; the process exit code.
pub fn run(workspace: &Path, approvals: &Approvals) -> i32 {
    let mut input = String::new();
    let verdict = match std::io::stdin().read_to_string(&mut input) {
        Ok(_) => match serde_json::from_str::<Value>(&input) {
            Ok(call) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                decide(workspace, home.as_deref(), approvals, &call)
            }
            Err(_) => Verdict::Deny("planbot's path guard could not read the tool call".into()),
        },
        Err(_) => Verdict::Deny("planbot's path guard could not read the tool call".into()),
    };
    let (decision, reason) = match verdict {
        Verdict::Pass => return 0,
        Verdict::Deny(reason) => ("deny", Some(reason)),
        Verdict::Allow => ("allow", None),
        Verdict::Defer => ("defer", None),
    };
    let mut answer = json!({"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
    }});
    if let Some(reason) = reason {
        answer["hookSpecificOutput"]["permissionDecisionReason"] = json!(reason);
    }
    println!("{answer}");
    0
}

/// Decides one call: an approvable tool's from the approvals, every other from [`check`].
pub fn decide(
    workspace: &Path,
    home: Option<&Path>,
    approvals: &Approvals,
    call: &Value,
) -> Verdict {
    let tool = call.get("tool_name").and_then(Value::as_str);
    let input = call.get("tool_input").cloned().unwrap_or(Value::Null);
    if let Some(tool) = tool
        && let Some(answer) = approvals.answer(&ToolCall {
            tool: tool.to_string(),
            input,
        })
    {
        return match answer {
            Answer::Allow => Verdict::Allow,
            Answer::Deny(reason) => Verdict::Deny(reason),
            Answer::Defer => Verdict::Defer,
        };
    }
    check(workspace, home, call)
}

/// Decides one call: `{"tool_name": ..., "tool_input": {...}}`.
pub fn check(workspace: &Path, home: Option<&Path>, call: &Value) -> Verdict {
    let Some(tool) = call.get("tool_name").and_then(Value::as_str) else {
        return Verdict::Deny("the tool call names no tool".into());
    };
    let input = call.get("tool_input").cloned().unwrap_or(Value::Null);
    if UNCHECKABLE.contains(&tool) {
        return Verdict::Deny(format!("planbot does not allow {tool}"));
    }
    if PATH_FREE.contains(&tool) {
        return Verdict::Pass;
    }
    let Some(root) = resolve(workspace, workspace, None) else {
        return Verdict::Deny("the workspace cannot be resolved".into());
    };
    let targets = match targets_of(tool, &input) {
        Ok(targets) => targets,
        Err(reason) => return Verdict::Deny(reason),
    };
    for target in targets {
        if let Err(reason) = inside(&root, workspace, home, &target) {
            return Verdict::Deny(reason);
        }
    }
    Verdict::Pass
}

/// A path a tool would touch: a plain path, or a glob whose fixed part is checked.
#[derive(Debug)]
enum Target {
    Path(String),
    /// A glob pattern, relative to `base` (a path) when it is not absolute.
    Glob {
        base: Option<String>,
        pattern: String,
    },
}

fn targets_of(tool: &str, input: &Value) -> Result<Vec<Target>, String> {
    let field = |name: &str| -> Result<Option<String>, String> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{tool}'s {name} is not a string")),
        }
    };
    let required = |name: &str| -> Result<String, String> {
        field(name)?.ok_or_else(|| format!("{tool} names no {name}"))
    };
    Ok(match tool {
        "Read" | "Write" | "Edit" | "MultiEdit" => vec![Target::Path(required("file_path")?)],
        "NotebookEdit" | "NotebookRead" => vec![Target::Path(required("notebook_path")?)],
        "LS" => vec![Target::Path(required("path")?)],
        "Glob" => {
            let base = field("path")?;
            let mut targets = vec![Target::Path(base.clone().unwrap_or_else(|| ".".into()))];
            targets.push(Target::Glob {
                base,
                pattern: required("pattern")?,
            });
            targets
        }
        "Grep" => {
            let base = field("path")?;
            let mut targets = vec![Target::Path(base.clone().unwrap_or_else(|| ".".into()))];
            if let Some(glob) = field("glob")? {
                targets.push(Target::Glob {
                    base,
                    pattern: glob,
                });
            }
            targets
        }
        // Any other tool: every string that looks like a path is checked; one that carries a
        // path it cannot place is denied by `inside`.
        _ => {
            let mut found = Vec::new();
            collect_paths(input, &mut found);
            found.into_iter().map(Target::Path).collect()
        }
    })
}

fn collect_paths(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if looks_like_path(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_paths(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with('~')
        || s.starts_with("./")
        || s.split('/').any(|c| c == "..")
        || s.starts_with("file:")
}

/// Checks that `target` stays in the workspace (`root` resolved) and avoids protected names.
fn inside(
    root: &Path,
    workspace: &Path,
    home: Option<&Path>,
    target: &Target,
) -> Result<(), String> {
    let (path, shown) = match target {
        Target::Path(p) => (p.clone(), p.clone()),
        Target::Glob { base, pattern } => {
            if Path::new(pattern)
                .components()
                .any(|c| c == Component::ParentDir)
            {
                return Err(format!("the pattern {pattern} climbs out of the workspace"));
            }
            let fixed = fixed_prefix(pattern);
            let joined = match base {
                Some(base) if !pattern.starts_with('/') && !pattern.starts_with('~') => {
                    format!("{base}/{fixed}")
                }
                _ => fixed,
            };
            (joined, pattern.clone())
        }
    };
    if path.contains('\0') {
        return Err("a path with a NUL byte".into());
    }
    let Some(resolved) = resolve(Path::new(&path), workspace, home) else {
        return Err(format!("{shown} cannot be resolved"));
    };
    let Ok(relative) = resolved.strip_prefix(root) else {
        return Err(format!(
            "{shown} is outside this plan's workspace; planbot allows only files inside it"
        ));
    };
    let protected = relative.components().any(|c| {
        let name = c.as_os_str().to_string_lossy().to_lowercase();
        PROTECTED_NAMES.contains(&name.as_str())
    });
    if protected {
        return Err(format!(
            "{shown} is a Claude Code instruction or settings file; planbot does not allow it"
        ));
    }
    Ok(())
}

/// The part of a glob pattern before its first component with a metacharacter.
fn fixed_prefix(pattern: &str) -> String {
    let mut parts = Vec::new();
    for part in pattern.split('/') {
        if part.contains(METACHARS) {
            break;
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return ".".into();
    }
    let joined = parts.join("/");
    if joined.is_empty() {
        "/".into()
    } else {
        joined
    }
}

/// An absolute path with `~`, `..` and every symlink that exists resolved; the part that does not
/// exist yet is appended as written (after `..` was taken out).
pub fn resolve(path: &Path, base: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let text = path.to_str()?;
    let text = text.strip_prefix("file://").unwrap_or(text);
    let path = if text == "~" || text.starts_with("~/") {
        home?.join(text.trim_start_matches('~').trim_start_matches('/'))
    } else if text.starts_with('~') {
        // `~user`: another account's home.
        return None;
    } else {
        PathBuf::from(text)
    };
    let absolute = if path.is_absolute() {
        path
    } else {
        base.join(path)
    };
    let mut resolved = PathBuf::from("/");
    let mut hops = 0;
    let mut pending: Vec<std::ffi::OsString> = absolute
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let link = std::fs::read_link(&next).ok()?;
                let target = if link.is_absolute() {
                    link
                } else {
                    resolved.join(link)
                };
                // The link's target is walked again, from the root.
                resolved = PathBuf::from("/");
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = next,
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tool: &str, input: Value) -> Value {
        json!({"tool_name": tool, "tool_input": input, "hook_event_name": "PreToolUse"})
    }

    #[test]
    fn fixed_prefixes_of_globs() {
        assert_eq!(fixed_prefix("**/*.md"), ".");
        assert_eq!(fixed_prefix("/etc/*"), "/etc");
        assert_eq!(fixed_prefix("docs/**/x"), "docs");
        assert_eq!(fixed_prefix("/*"), "/");
    }

    #[test]
    fn a_home_of_another_user_is_never_resolved() {
        assert_eq!(resolve(Path::new("~root/x"), Path::new("/w"), None), None);
        assert_eq!(resolve(Path::new("~/x"), Path::new("/w"), None), None);
        assert_eq!(
            resolve(Path::new("~/x"), Path::new("/w"), Some(Path::new("/h"))),
            Some(PathBuf::from("/h/x"))
        );
    }

    #[test]
    fn bash_is_denied_and_path_free_tools_pass() {
        let ws = Path::new("/");
        assert!(matches!(
            check(ws, None, &call("Bash", json!({"command": "ls"}))),
            Verdict::Deny(_)
        ));
        assert_eq!(
            check(ws, None, &call("WebSearch", json!({"query": "x"}))),
            Verdict::Pass
        );
        assert!(matches!(
            check(ws, None, &json!({"tool_input": {}})),
            Verdict::Deny(_)
        ));
    }
}
