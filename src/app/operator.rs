//! The operator's commands: `planbot check`, `planbot sessions`, `planbot migrate-state`.

use super::*;

/// One line of `planbot check`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    pub ok: bool,
    pub what: String,
}

/// `planbot check`: every problem an operator should fix before users notice. With `running`,
/// it checks a planbot that is running (a health check): the state dir's lock must be held.
pub async fn check(config: &Config, running: bool) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut say = |ok: bool, what: String| lines.push(CheckLine { ok, what });
    say(true, "configuration is valid".into());
    let cli = crate::walls::cli_version(config).await;
    match &cli {
        Ok(version) => say(
            true,
            format!("claude found ({}): {version}", config.claude_bin.display()),
        ),
        Err(e) => say(
            false,
            format!(
                "claude ({}) does not run: {e}. Install Claude Code with `npm install -g @anthropic-ai/claude-code` and log in once with `claude`",
                config.claude_bin.display()
            ),
        ),
    }
    check_state(
        &config.state_dir,
        running,
        config.database_url.is_none(),
        &mut say,
    );
    if let Some(url) = &config.database_url {
        check_database(url, config.database_pool_size, &mut say).await;
        if config.replicas() {
            check_replicas(config, url, &mut say).await;
        }
    }
    match Walls::raise(config, &cli).await {
        Ok(walls) => {
            // A wall that is down was allowed by the configuration (validated at load, and
            // `PLANBOT_SANDBOX=bwrap` fails above): a warning, not a failure.
            for (up, what) in walls.describe(config) {
                say(true, if up { what } else { format!("warning: {what}") });
            }
        }
        Err(e) => say(false, e),
    }
    check_phases_and_front_ends(config, &mut say);
    lines
}

/// The state directory: writable, held by a planbot or not (as `running` expects), and its
/// `planning.json` healthy.
fn check_state(dir: &Path, running: bool, file_store: bool, say: &mut impl FnMut(bool, String)) {
    match std::fs::create_dir_all(dir).and_then(|()| probe_write(dir)) {
        Ok(()) => say(true, format!("state dir {} is writable", dir.display())),
        Err(e) => say(
            false,
            format!("state dir {} is not writable: {e}", dir.display()),
        ),
    }
    match (StateLock::probe(dir), running) {
        (Ok(()), false) => say(true, "no other planbot holds the state dir".into()),
        (Err(e), false) => say(false, e.to_string()),
        (Ok(()), true) => say(false, "planbot is not running on this state dir".into()),
        (Err(_), true) => say(true, "planbot is running on this state dir".into()),
    }
    if !file_store {
        return;
    }
    match store::inspect(dir) {
        Ok((state, report)) => {
            let interrupted = state
                .sessions
                .values()
                .filter(|e| e.status != EntryStatus::Planning)
                .count();
            if report.is_healthy() && report.problem.is_none() {
                say(
                    true,
                    format!(
                        "planning.json is healthy: {} plans ({interrupted} interrupted or running)",
                        state.sessions.len()
                    ),
                );
            } else {
                say(
                    false,
                    format!("planning.json needs attention: {}", describe(&report)),
                );
            }
        }
        Err(e) => say(false, e.to_string()),
    }
}

/// `planbot migrate-state --to postgres`: copies `planning.json` into an empty database, with
/// planbot stopped (the state dir's lock is taken for the copy). Returns what it did.
pub async fn migrate_state(config: &Config) -> Result<String, AppError> {
    let Some(url) = &config.database_url else {
        return Err(AppError::Unsupported(
            "set PLANBOT_DATABASE_URL to the database to copy the plans into".into(),
        ));
    };
    let _lock = StateLock::acquire(&config.state_dir)?;
    let (state, report) = store::inspect(&config.state_dir)?;
    if let Some(problem) = &report.problem {
        return Err(AppError::Unsupported(format!(
            "planning.json needs attention first ({problem}); see `planbot check`"
        )));
    }
    let target = PgStore::new(url, 2)?;
    target.migrate().await?;
    if target.count().await? > 0 || target.audit_count().await? > 0 {
        return Err(AppError::Unsupported(format!(
            "the database at {} already holds plans or audit lines; migrate-state copies into an empty one only",
            crate::store_pg::describe_url(url.expose())
        )));
    }
    target.import(&state.sessions).await?;
    // The audit log too, so that the daily budgets and the history count what was spent here.
    let lines = Audit::new(&config.state_dir).all_lines();
    for batch in lines.chunks(1000) {
        crate::store::Shared::record(&target, batch).await?;
    }
    Ok(format!(
        "Copied {} plans from {} and {} audit lines into PostgreSQL at {}. planning.json and audit.jsonl are left as they were; planbot uses the database while PLANBOT_DATABASE_URL is set.",
        state.sessions.len(),
        config.state_dir.join("planning.json").display(),
        lines.len(),
        crate::store_pg::describe_url(url.expose())
    ))
}

/// PostgreSQL, when it holds the plans: reachable, and migrated.
/// Several replicas: what they must share besides the database, as far as this one can see.
async fn check_replicas(
    config: &Config,
    url: &crate::config::Secret,
    say: &mut impl FnMut(bool, String),
) {
    let mut ingress = Vec::new();
    if config.telegram_token.is_some() {
        ingress.push("Telegram webhook".to_string());
    }
    if let Some(shards) = config.discord_shards {
        ingress.push(format!("Discord shards {shards}"));
    }
    say(
        true,
        format!(
            "replicas: chats leased for {} s among the planbots on this database ({})",
            config.lease.as_secs(),
            ingress.join(", ")
        ),
    );
    if !config.child_environment.0.contains_key("CLAUDE_CONFIG_DIR") {
        say(
            true,
            "warning: CLAUDE_CONFIG_DIR is not set: Claude's sessions stay in this machine's home, so another replica cannot resume them; set it to a directory on the volume the replicas share".into(),
        );
    }
    let Ok(store) = PgStore::new(url, 2) else {
        return;
    };
    let Ok(plans) = crate::store::SessionStore::all(&store).await else {
        return;
    };
    // A plan's workspace is where every replica mounts the shared volume: under this one's
    // workspace dir, and there.
    let root = crate::config::absolute(&config.workspace_dir);
    let missing = plans
        .iter()
        .filter(|(_, e)| {
            let cwd = Path::new(&e.cwd);
            !cwd.starts_with(&root) || !cwd.is_dir()
        })
        .count();
    if missing > 0 {
        say(
            true,
            format!(
                "warning: {missing} of {} plans in the database have no workspace here: the workspaces ({}) must be on a volume every replica mounts at the same path",
                plans.len(),
                config.workspace_dir.display()
            ),
        );
    }
}

async fn check_database(
    url: &crate::config::Secret,
    pool_size: usize,
    say: &mut impl FnMut(bool, String),
) {
    let target = crate::store_pg::describe_url(url.expose());
    let status = match PgStore::new(url, pool_size) {
        Ok(store) => store.status(url).await,
        Err(e) => Err(e),
    };
    match status {
        Ok(s) if s.version == s.latest => say(
            true,
            format!(
                "store: PostgreSQL at {target}, reachable, migrated (schema {}), {} plans",
                s.version, s.sessions
            ),
        ),
        Ok(s) => say(
            true,
            format!(
                "store: PostgreSQL at {target}, reachable, schema {} of {}: planbot migrates it when it starts",
                s.version, s.latest
            ),
        ),
        Err(e) => say(false, format!("store: PostgreSQL at {target}: {e}")),
    }
}

/// Each phase's skill, and notes on the permission mode and the front ends.
fn check_phases_and_front_ends(config: &Config, say: &mut impl FnMut(bool, String)) {
    let skills = installed_skills();
    for phase in &config.phases {
        let installed = skills.contains(&phase.name);
        say(
            true,
            if installed {
                format!("phase /{}: skill installed", phase.name)
            } else {
                format!(
                    "phase /{}: skill not installed, uses planbot's built-in prompt",
                    phase.name
                )
            },
        );
    }
    if config.bypasses_permissions() {
        say(
            true,
            "warning: PLANBOT_PERMISSION_MODE=bypassPermissions lets Claude run any tool".into(),
        );
    }
    if config.telegram_token.is_none() && config.discord_token.is_none() {
        say(
            true,
            "no chat front end configured (TELEGRAM_BOT_TOKEN, DISCORD_TOKEN); `planbot console` works without one".into(),
        );
    }
    if config.discord_token.is_some() {
        say(
            true,
            "Discord needs the Message Content intent enabled for the bot in the Developer Portal"
                .into(),
        );
    }
}

fn describe(report: &LoadReport) -> String {
    let mut parts = Vec::new();
    if let Some(problem) = &report.problem {
        parts.push(format!("the file is unreadable ({problem})"));
    }
    if let Some(aside) = &report.moved_aside {
        parts.push(format!("a corrupt file was moved to {}", aside.display()));
    }
    if report.from_backup {
        parts.push("it would be restored from planning.json.bak".into());
    }
    if !report.unreadable.is_empty() {
        parts.push(format!(
            "entries that do not parse (kept as they are): {}",
            report.unreadable.join(", ")
        ));
    }
    parts.join("; ")
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".planbot-write-probe");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(probe)
}

/// Skill names under `~/.claude/skills/` (each a directory with a `SKILL.md`).
fn installed_skills() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let dir = Path::new(&home).join(".claude/skills");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("SKILL.md").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `planbot sessions`: a table of planning.json.
pub async fn sessions_table(config: &Config) -> Result<String, StoreError> {
    let sessions: Vec<(String, SessionEntry)> = match &config.database_url {
        None => store::inspect(&config.state_dir)?
            .0
            .sessions
            .into_iter()
            .collect(),
        Some(url) => PgStore::new(url, 2)?
            .all()
            .await?
            .into_iter()
            .map(|(chat, entry)| (chat.to_string(), entry))
            .collect(),
    };
    let audit = crate::audit::summary(&config.state_dir)
        .map(|s| format!("\n{s}\n"))
        .unwrap_or_default();
    if sessions.is_empty() {
        return Ok(format!("No plans in progress.\n{audit}"));
    }
    let mut rows = vec![[
        "CHAT".to_string(),
        "SLUG".into(),
        "PHASE".into(),
        "TURNS".into(),
        "COST".into(),
        "LAST ACTIVITY".into(),
    ]];
    for (key, e) in &sessions {
        rows.push([
            key.clone(),
            e.slug.clone(),
            format!("{} ({}/{})", e.phase, e.phase_number(), e.phases.len()),
            e.turns.to_string(),
            format!("${:.2}", e.total_cost_usd),
            e.updated_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&audit);
    Ok(out)
}
