//! Wiring: builds the store, planner and router from a [`Config`] and runs front ends until
//! shutdown; and the operator's commands, `planbot check` and `planbot sessions`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::adapters::console::{self, ConsoleOutbound};
use crate::adapters::discord::{self, DiscordOutbound, DiscordSettings};
use crate::adapters::telegram::{self, TelegramOutbound};
use crate::audit::Audit;
use crate::chat::Outbound;
use crate::claude::Runner;
use crate::config::Config;
use crate::planning::state::{EntryStatus, SessionEntry};
use crate::planning::{Planner, Prompts};
use crate::router::{Router, RouterSettings};
use crate::scrub::{ScrubbedOutbound, Scrubber};
use crate::store::{self, LoadReport, SessionStore, StateLock, Store, StoreError};
use crate::store_pg::PgStore;
use crate::walls::Walls;

/// Why planbot could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not load prompts: {0}")]
    Prompts(std::io::Error),
    #[error(
        "no front end is configured: set TELEGRAM_BOT_TOKEN or DISCORD_TOKEN, or try planbot locally with `planbot console`"
    )]
    NoFrontEnd,
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    FrontEnd(String),
}

/// The pieces every front end shares (also what `planbot-bench` drives in-process).
pub struct Core {
    pub store: Arc<dyn SessionStore>,
    /// The file store, closed at shutdown (its writer thread flushes).
    file_store: Option<Store>,
    /// With PostgreSQL: the state dir's lock, and the connection holding the database for this
    /// planbot, both held until it exits.
    _held: Option<(StateLock, deadpool_postgres::Object)>,
    pub planner: Planner,
    /// When the state came from `planning.json.bak` because the file was damaged: the
    /// backup's time, which every chat is told.
    pub restored_from_backup: Option<String>,
}

impl Core {
    /// Raises the agent's walls, opens the store and builds the planner, as `planbot run` does.
    pub async fn build(config: &Config) -> Result<Core, AppError> {
        let prompts = Prompts::load(config.prompts_dir.as_deref()).map_err(AppError::Prompts)?;
        let cli = crate::walls::cli_version(config).await;
        let walls = Walls::raise(config, &cli)
            .await
            .map_err(AppError::Unsupported)?;
        walls.log(config);
        let (store, file_store, held, report) = match &config.database_url {
            None => {
                let (store, report) = Store::open(&config.state_dir)?;
                let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
                (shared, Some(store), None, report)
            }
            Some(url) => {
                // The state dir still holds the lock, the running claude groups and the offsets.
                std::fs::create_dir_all(&config.state_dir).map_err(|source| StoreError::Write {
                    path: config.state_dir.clone(),
                    source,
                })?;
                let lock = StateLock::acquire(&config.state_dir)?;
                let (store, claim, report) = open_database(url, config.database_pool_size).await?;
                (
                    Arc::new(store) as Arc<dyn SessionStore>,
                    None,
                    Some((lock, claim)),
                    report,
                )
            }
        };
        // Only the lock holder gets here: groups left by a killed planbot are its own to end,
        // before any chat resumes their sessions.
        let reaped = crate::claude::reap_orphans(&config.pid_dir());
        if reaped > 0 {
            tracing::warn!(
                reaped,
                "ended claude processes a killed planbot left running"
            );
        }
        if !report.is_healthy() {
            tracing::error!(
                ?report,
                "planning.json needed repair; see `planbot check` and the files beside it"
            );
        }
        if config.bypasses_permissions() {
            tracing::warn!(
                "PLANBOT_PERMISSION_MODE=bypassPermissions: Claude may run any tool without asking"
            );
        }
        let mut runner_config = config.runner_config();
        runner_config.sandbox = walls.sandbox.clone();
        let mut common = config.common_args(walls.guard.clone());
        common.permission_prompts_none = walls.permission_prompts_none();
        let runner = Runner::new(runner_config);
        let planner = Planner::new(runner, prompts, config.plan_settings(common));
        let restored_from_backup = report.from_backup.then(|| {
            std::fs::metadata(config.state_dir.join("planning.json.bak"))
                .and_then(|m| m.modified())
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%H:%M UTC")
                        .to_string()
                })
                .unwrap_or_else(|_| "an earlier moment".into())
        });
        Ok(Core {
            store,
            file_store,
            _held: held,
            planner,
            restored_from_backup,
        })
    }

    /// The one router, over every front end that runs.
    pub async fn router(
        &self,
        config: &Config,
        outbounds: Vec<(&str, Arc<dyn Outbound>)>,
    ) -> Router {
        let scrubber = Scrubber::new(&config.secret_values);
        let outbounds: HashMap<String, Arc<dyn Outbound>> = outbounds
            .into_iter()
            .map(|(adapter, outbound)| {
                let scrubbed = ScrubbedOutbound::wrap(outbound, scrubber.clone());
                (adapter.to_string(), scrubbed)
            })
            .collect();
        let settings = router_settings(config);
        let audit = settings.audit.clone();
        let today = chrono::Utc::now().date_naive();
        let spent_today = tokio::task::spawn_blocking(move || {
            audit.map(|a| a.spend_on(today)).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let router = Router::new(
            self.store.clone(),
            self.planner.clone(),
            RouterSettings {
                restored_from_backup: self.restored_from_backup.clone(),
                spent_today,
                ..settings
            },
            outbounds,
        );
        tokio::spawn(router.clone().expire_questions());
        router
    }
}

impl Core {
    /// Closes the store (the file store's writer flushes and stops).
    pub async fn close(&self) {
        if let Some(store) = &self.file_store {
            store.clone().close().await;
        }
    }
}

/// Opens PostgreSQL: migrated, held for this planbot, turns cut off by a stop marked interrupted.
async fn open_database(
    url: &crate::config::Secret,
    pool_size: usize,
) -> Result<(PgStore, deadpool_postgres::Object, LoadReport), StoreError> {
    let store = PgStore::new(url, pool_size)?;
    let version = store.migrate().await?;
    let claim = store.claim().await?;
    let interrupted = store.recover().await?;
    let sessions = store.all().await?.len();
    tracing::info!(
        database = %crate::store_pg::describe_url(url.expose()),
        version,
        sessions,
        "plans are in PostgreSQL"
    );
    Ok((
        store,
        claim,
        LoadReport {
            sessions,
            interrupted,
            ..LoadReport::default()
        },
    ))
}

fn router_settings(config: &Config) -> RouterSettings {
    RouterSettings {
        allowed_users: config.allowed_users.clone(),
        allowed_guilds: config
            .discord_guild_id
            .map(|g| vec![g.to_string()])
            .unwrap_or_default(),
        allowed_roles: config.discord_allowed_roles.clone(),
        progress_interval: config.progress_interval,
        max_attachment_bytes: config.max_attachment_bytes,
        approvers: config.approvers.clone(),
        approval_timeout: config.approval_timeout,
        plan_budget_usd: config.plan_budget_usd,
        user_daily_budget_usd: config.user_daily_budget_usd,
        audit: Some(Audit::new(&config.state_dir)),
        restored_from_backup: None,
        spent_today: HashMap::new(),
    }
}

/// `planbot console`: a local chat on stdin/stdout until end of input, a second Ctrl-C or
/// `shutdown`.
pub async fn run_console(
    config: Config,
    interrupts: tokio::sync::mpsc::UnboundedReceiver<()>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let core = Core::build(&config).await?;
    let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let outbound = ConsoleOutbound::new(Box::new(std::io::stdout()), live);
    let router = core
        .router(&config, vec![(console::ADAPTER, outbound.clone())])
        .await;
    if live {
        println!("{}", crate::conversation::copy::CONSOLE_WELCOME);
    }
    router.announce_interrupted(console::ADAPTER).await;
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    console::run(router.clone(), outbound, stdin, interrupts, shutdown).await;
    router.shutdown(config.shutdown_grace).await;
    core.close().await;
    Ok(())
}

/// `planbot run`: every front end whose token is set, until `shutdown` (or until one of them
/// fails, which stops the others: a supervisor restarts planbot whole).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    if config.telegram_token.is_none() && config.discord_token.is_none() {
        return Err(AppError::NoFrontEnd);
    }
    let core = Core::build(&config).await?;
    let mut outbounds: Vec<(&str, Arc<dyn Outbound>)> = Vec::new();
    let telegram = match config.telegram_token.clone() {
        Some(token) => {
            let outbound = TelegramOutbound::new(token, &config.telegram_api_url)
                .map_err(AppError::Unsupported)?;
            outbounds.push((telegram::ADAPTER, outbound.clone()));
            Some(outbound)
        }
        None => None,
    };
    let discord = match config.discord_token.clone() {
        Some(token) => {
            let settings = DiscordSettings {
                token,
                api_url: config.discord_api_url.clone(),
                guild_id: config.discord_guild_id,
                workspace_dir: config.workspace_dir.clone(),
            };
            let outbound = DiscordOutbound::new(&settings).map_err(AppError::Unsupported)?;
            outbounds.push((discord::ADAPTER, outbound.clone()));
            Some((outbound, settings))
        }
        None => None,
    };
    let router = core.router(&config, outbounds).await;
    let stop = shutdown.child_token();
    let telegram_run = async {
        let Some(outbound) = telegram else {
            return Ok(());
        };
        let result = match &config.telegram_webhook_url {
            Some(url) => {
                let webhook = telegram::Webhook {
                    outbound,
                    router: router.clone(),
                    url: url::Url::parse(url).map_err(|e| e.to_string())?,
                    secret: config
                        .telegram_webhook_secret
                        .clone()
                        .ok_or("TELEGRAM_WEBHOOK_SECRET is not set")?,
                    addr: config.http_addr,
                };
                webhook.run(stop.clone()).await
            }
            None => {
                let poller = telegram::Poller {
                    outbound,
                    router: router.clone(),
                    offset_file: config.state_dir.join("telegram.offset"),
                };
                poller.run(stop.clone()).await
            }
        };
        stop.cancel();
        result
    };
    let discord_run = async {
        let Some((outbound, settings)) = discord else {
            return Ok(());
        };
        let result = discord::run(outbound, router.clone(), settings, stop.clone()).await;
        stop.cancel();
        result
    };
    let (telegram_result, discord_result) = tokio::join!(telegram_run, discord_run);
    // No new events are taken; running turns get the grace period, then are interrupted.
    router.shutdown(config.shutdown_grace).await;
    core.close().await;
    tracing::info!("planbot stopped");
    telegram_result
        .and(discord_result)
        .map_err(AppError::FrontEnd)
}

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
    if !target.is_empty().await? {
        return Err(AppError::Unsupported(format!(
            "the database at {} already holds plans; migrate-state copies into an empty one only",
            crate::store_pg::describe_url(url.expose())
        )));
    }
    target.import(&state.sessions).await?;
    Ok(format!(
        "Copied {} plans from {} into PostgreSQL at {}. planning.json is left as it was; planbot uses the database while PLANBOT_DATABASE_URL is set.",
        state.sessions.len(),
        config.state_dir.join("planning.json").display(),
        crate::store_pg::describe_url(url.expose())
    ))
}

/// PostgreSQL, when it holds the plans: reachable, and migrated.
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
