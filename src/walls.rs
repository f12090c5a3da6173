//! The agent's confinement, raised once at start-up: explicit tools and rules (every turn's
//! argv), the path guard (planbot's own binary as a `PreToolUse` hook) and the sandbox
//! (bubblewrap), plus the hardening the installed CLI knows (detected from `claude --version`).
//! Each wall holds on its own; `planbot check` says which are up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::claude::{Sandbox, SandboxMode};
use crate::config::Config;

/// The first CLI version with `--permission-prompts none`.
const PERMISSION_PROMPTS_SINCE: (u32, u32, u32) = (2, 1, 259);

/// What is up for this run.
#[derive(Debug, Clone)]
pub struct Walls {
    /// The sandbox every turn runs in, when bubblewrap works (or was asked for).
    pub sandbox: Option<Sandbox>,
    /// Why there is no sandbox, when there is none.
    pub sandbox_missing: Option<String>,
    /// planbot's own binary, run as the path guard; `None` when the guard is off.
    pub guard: Option<PathBuf>,
    /// The installed CLI's version, when it answered.
    pub cli_version: Option<(u32, u32, u32)>,
}

impl Walls {
    /// Detects what this machine and the CLI (`claude --version` as it answered, asked once by
    /// the caller) allow. Fails only where the operator asked for a wall that cannot stand
    /// (`PLANBOT_SANDBOX=bwrap` without a working bubblewrap).
    pub async fn raise(config: &Config, cli: &Result<String, String>) -> Result<Walls, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("the path guard needs planbot's own path, which is unknown: {e}"));
        Walls::raise_for(config, cli, exe).await
    }

    /// [`Walls::raise`] with planbot's binary given (the contract tests run the guard of the
    /// `planbot` they built, not of the test binary).
    pub async fn raise_for(
        config: &Config,
        cli: &Result<String, String>,
        exe: Result<PathBuf, String>,
    ) -> Result<Walls, String> {
        let (sandbox, sandbox_missing) = match config.sandbox {
            SandboxMode::Off => (None, Some("PLANBOT_SANDBOX=off".to_string())),
            mode => {
                let bwrap = crate::claude::sandbox::find_program(
                    Path::new("bwrap"),
                    std::env::var_os("PATH").as_deref(),
                );
                let probed = match &bwrap {
                    Some(bwrap) => {
                        let bwrap = bwrap.clone();
                        tokio::task::spawn_blocking(move || Sandbox::probe(&bwrap))
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()))
                    }
                    None => Err("bubblewrap (bwrap) is not installed".to_string()),
                };
                match (probed, bwrap) {
                    (Ok(()), Some(bwrap)) => {
                        (Some(config.sandbox_layout(bwrap, exe.clone().ok())), None)
                    }
                    (Err(why), _) if mode == SandboxMode::Bwrap => {
                        return Err(format!("PLANBOT_SANDBOX=bwrap, but {why}"));
                    }
                    (Err(why), _) => (None, Some(why)),
                    // A probe succeeds only with a bwrap to run.
                    (Ok(()), None) => (None, None),
                }
            }
        };
        let guard = if config.path_guard { Some(exe?) } else { None };
        let cli_version = cli.as_deref().ok().and_then(parse_version);
        Ok(Walls {
            sandbox,
            sandbox_missing,
            guard,
            cli_version,
        })
    }

    /// Whether the CLI takes `--permission-prompts none`.
    pub fn permission_prompts_none(&self) -> bool {
        self.cli_version
            .is_some_and(|v| v >= PERMISSION_PROMPTS_SINCE)
    }

    /// One line per wall, for the log and `planbot check`: (up, what).
    pub fn describe(&self, config: &Config) -> Vec<(bool, String)> {
        let policy = config.tool_policy();
        let approvable = config.approvable();
        let asked = if approvable.is_empty() {
            String::new()
        } else {
            format!("; asked by button: {}", approvable.join(", "))
        };
        let mut lines = vec![(
            true,
            format!(
                "wall 1, tools: {} (allowed: {}{asked}; always denied: {})",
                policy.tools.join(", "),
                policy.allow.join(", "),
                policy.deny.join(", ")
            ),
        )];
        lines.push(match &self.guard {
            Some(_) => (true, "wall 2, path guard: on".to_string()),
            None => (
                false,
                "wall 2, path guard: off (PLANBOT_PATH_GUARD=false)".to_string(),
            ),
        });
        lines.push(match (&self.sandbox, &self.sandbox_missing) {
            (Some(_), _) => (true, "wall 3, sandbox: bubblewrap".to_string()),
            (None, Some(why)) => (false, format!("wall 3, sandbox: off ({why})")),
            (None, None) => (false, "wall 3, sandbox: off".to_string()),
        });
        let unsafe_choices = config.unsafe_choices();
        if !unsafe_choices.is_empty() {
            lines.push((
                false,
                format!(
                    "PLANBOT_UNSAFE_TOOLS: the agent's reach is widened by {}",
                    unsafe_choices.join(", ")
                ),
            ));
        }
        lines
    }

    /// Logs the walls once at start-up: a warning for each that is down.
    pub fn log(&self, config: &Config) {
        for (up, line) in self.describe(config) {
            if up {
                tracing::info!("{line}");
            } else {
                tracing::warn!("{line}");
            }
        }
    }
}

/// `claude --version`, run with the child's environment.
pub async fn cli_version(config: &Config) -> Result<String, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&config.claude_bin)
            .arg("--version")
            // Never the console's input: a child that reads (or sets non-blocking) its stdin
            // would take the user's first lines.
            .stdin(std::process::Stdio::null())
            .env_clear()
            .envs(&config.child_environment.0)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "`claude --version` did not answer within 30 s".to_string())?
    .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("`claude --version` failed with {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `2.1.332 (Claude Code)` → (2, 1, 332).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_compared() {
        assert_eq!(parse_version("2.1.332 (Claude Code)"), Some((2, 1, 332)));
        assert_eq!(parse_version("garbage"), None);
        let walls = |v| Walls {
            sandbox: None,
            sandbox_missing: None,
            guard: None,
            cli_version: v,
        };
        assert!(!walls(Some((2, 1, 197))).permission_prompts_none());
        assert!(walls(Some((2, 1, 259))).permission_prompts_none());
        assert!(walls(Some((2, 2, 0))).permission_prompts_none());
        assert!(!walls(None).permission_prompts_none());
    }
}
