//! Section 10: planbot's follow-up with the real Claude Code CLI, against the stand-in Messages
//! API (`tests/it/messages_api.rs`), next to the same CLI run bare with the very argv, working
//! directory and prompt planbot gave it, interleaved.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::chat_path::{Console, ratio_row, row};
use super::messages_api::MessagesApi;
use super::{Sizes, sorted};

/// The newest installed CLI (what users install), else the pinned one: `PLANBOT_REAL_CLAUDE_LATEST`,
/// `PLANBOT_REAL_CLAUDE` or the install script's caches.
fn installed_cli() -> Option<(PathBuf, &'static str)> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = |label: &str| {
        home.join(".cache/planbot")
            .join(format!("claude-code-{label}"))
            .join("node_modules/@anthropic-ai/claude-code-linux-x64/claude")
    };
    [
        ("PLANBOT_REAL_CLAUDE_LATEST", "latest", "newest"),
        ("PLANBOT_REAL_CLAUDE", "2.1.197", "pinned 2.1.197"),
    ]
    .into_iter()
    .find_map(|(var, label, name)| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| Some(cache(label)))
            .filter(|p| p.is_file())
            .map(|p| (p, name))
    })
}

/// A launcher pointing the CLI at the stand-in with a throwaway HOME; it records planbot's calls:
/// the working directory and argv in `<home>/argv`, the environment in `<home>/env` (each
/// NUL-separated; the bare runs set `BARE` and are not recorded).
fn launcher(home: &Path, api: &MessagesApi, cli: &Path) -> Result<PathBuf, String> {
    let path = home.join("claude");
    let script = format!(
        "#!/bin/sh\nexport HOME='{home}' ANTHROPIC_BASE_URL='{url}' ANTHROPIC_API_KEY=sk-standin \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=0 DISABLE_AUTOUPDATER=1\n\
         if [ -z \"$BARE\" ]; then {{ printf '%s\\0' \"$PWD\"; printf '%s\\0' \"$@\"; }} > '{home}/argv'; env -0 > '{home}/env'; fi\n\
         exec '{cli}' \"$@\"\n",
        home = home.display(),
        url = api.url(),
        cli = cli.display()
    );
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(path)
}

pub async fn follow_ups(sizes: &Sizes, planbot: &Path) -> Result<(), String> {
    println!("## 10. A follow-up with the real Claude Code CLI\n");
    let Some((cli, which)) = installed_cli() else {
        println!("Skipped: no Claude Code CLI installed (scripts/install-claude-cli.sh latest).\n");
        return Ok(());
    };
    let api = MessagesApi::start().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let claude = launcher(&home, &api, &cli)?;
    let mut console = Console::start(planbot, &claude, dir.path(), &[])?;
    console
        .say("/plan bench-real a plan to measure", "reply")
        .await?;
    let (mut planbot_turns, mut bare_results, mut bare_exits, mut by_hand) =
        (vec![], vec![], vec![], vec![]);
    for i in 0..sizes.real_turns {
        let said = format!("follow-up number {i}");
        planbot_turns.push(console.say(&said, &said).await?.as_nanos() as f64);
        let (result, exit) = bare(&claude, &home, &said, true).await?;
        bare_results.push(result.as_nanos() as f64);
        bare_exits.push(exit.as_nanos() as f64);
        by_hand.push(bare(&claude, &home, &said, false).await?.0.as_nanos() as f64);
    }
    console.close().await;
    let (planbot_turns, bare_results, bare_exits, by_hand) = (
        sorted(planbot_turns),
        sorted(bare_results),
        sorted(bare_exits),
        sorted(by_hand),
    );
    println!(
        "The {which} Claude Code CLI ({}) against the stand-in Messages API; {} follow-ups in \
         `planbot console`, each followed by the same CLI run bare with the argv, environment, \
         working directory and prompt planbot had just given it (so both resume the same \
         session), and by hand (the same in this shell's environment). Sandbox off (it adds \
         about 2.4 ms, section 6).\n",
        cli.display(),
        sizes.real_turns
    );
    println!("| | median | p90 |\n|---|---|---|");
    row(
        "the CLI's own turn, bare, to its `result` line (baseline)",
        &bare_results,
    );
    row("the CLI's own turn, bare, to its exit", &bare_exits);
    row(
        "the same by hand, in this shell's environment, to its `result` line",
        &by_hand,
    );
    row(
        "a follow-up in planbot, line in to answer out",
        &planbot_turns,
    );
    ratio_row(
        "planbot / bare to its `result` line",
        &planbot_turns,
        &bare_results,
    );
    ratio_row("planbot / bare to its exit", &planbot_turns, &bare_exits);
    ratio_row(
        "planbot / by hand to its `result` line",
        &planbot_turns,
        &by_hand,
    );
    println!("\nGoal: within 5% (1.05x).\n");
    Ok(())
}

/// The CLI run bare with the argv and working directory of planbot's last call (in planbot's
/// environment too, with `as_planbot`), `said` on stdin: when its `result` line came, and when
/// it exited.
async fn bare(
    claude: &Path,
    home: &Path,
    said: &str,
    as_planbot: bool,
) -> Result<(Duration, Duration), String> {
    let recorded = |name: &str| -> Result<Vec<String>, String> {
        let bytes = std::fs::read(home.join(name)).map_err(|e| format!("{name}: {e}"))?;
        Ok(bytes
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty())
            .collect())
    };
    let mut parts = recorded("argv")?.into_iter();
    let cwd = parts.next().ok_or("no recorded call")?;
    let args: Vec<String> = parts.collect();
    let mut command = tokio::process::Command::new(claude);
    if as_planbot {
        let env = recorded("env")?;
        command
            .env_clear()
            .envs(env.iter().filter_map(|v| v.split_once('=')));
    }
    let start = Instant::now();
    let mut child = command
        .env("BARE", "1")
        .args(&args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(format!("<user_message>\n{said}\n</user_message>").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let mut reader = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let (mut text, mut result_at) = (String::new(), None);
    while let Some(line) = reader.next_line().await.map_err(|e| e.to_string())? {
        if result_at.is_none() && line.contains(r#""type":"result""#) {
            result_at = Some(start.elapsed());
        }
        text.push_str(&line);
    }
    child.wait().await.map_err(|e| e.to_string())?;
    let exited = start.elapsed();
    match result_at {
        Some(at) if text.contains(said) => Ok((at, exited)),
        _ => Err(format!(
            "the bare CLI did not answer: {}",
            text.chars().take(300).collect::<String>()
        )),
    }
}
