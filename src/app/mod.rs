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
use crate::store::{self, Inbox, LoadReport, SessionStore, Shared, StateLock, Store, StoreError};
use crate::store_pg::PgStore;
use crate::walls::Walls;

mod operator;

pub use operator::{CheckLine, check, migrate_state, sessions_table};

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
    _held: Option<(StateLock, Option<deadpool_postgres::Object>)>,
    /// With PostgreSQL: where events are kept until handled.
    inbox: Option<Arc<dyn Inbox>>,
    /// With several planbots on the database: the leases.
    shared: Option<Arc<dyn Shared>>,
    pub planner: Planner,
    /// When the state came from `planning.json.bak` because the file was damaged: the
    /// backup's time, which every chat is told.
    pub restored_from_backup: Option<String>,
}

/// The planner `planbot run` uses: `runner_config` (the configured one) and the configured
/// flags, inside the walls raised.
pub fn planner_for(
    config: &Config,
    walls: &Walls,
    prompts: Prompts,
    mut runner_config: crate::claude::RunnerConfig,
) -> Planner {
    runner_config.sandbox = walls.sandbox.clone();
    let mut common = config.common_args(walls.guard.clone());
    common.permission_prompts_none = walls.permission_prompts_none();
    let runner = Runner::new(runner_config);
    Planner::new(runner, prompts, config.plan_settings(common))
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
        let (store, file_store, held, inbox, shared, report) = match &config.database_url {
            None => {
                let (store, report) = Store::open(&config.state_dir)?;
                let shared: Arc<dyn SessionStore> = Arc::new(store.clone());
                (shared, Some(store), None, None, None, report)
            }
            Some(url) => {
                // The state dir still holds the lock, the running claude groups and the offsets.
                std::fs::create_dir_all(&config.state_dir).map_err(|source| StoreError::Write {
                    path: config.state_dir.clone(),
                    source,
                })?;
                let lock = StateLock::acquire(&config.state_dir)?;
                let (store, claim, report) = open_database(url, config).await?;
                let store = Arc::new(store);
                let shared = config.replicas().then(|| store.clone() as Arc<dyn Shared>);
                (
                    store.clone() as Arc<dyn SessionStore>,
                    None,
                    Some((lock, claim)),
                    Some(store as Arc<dyn Inbox>),
                    shared,
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
        let planner = planner_for(config, &walls, prompts, config.runner_config());
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
            inbox,
            shared,
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
                inbox: self.inbox.clone(),
                shared: self.shared.clone(),
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

/// Opens PostgreSQL: migrated, and for a planbot alone on it, held (a second is refused) and
/// the turns a stop cut off marked interrupted; replicas lease each chat instead.
async fn open_database(
    url: &crate::config::Secret,
    config: &Config,
) -> Result<(PgStore, Option<deadpool_postgres::Object>, LoadReport), StoreError> {
    let store = PgStore::new(url, config.database_pool_size)?.with_lease(config.lease);
    let version = store.migrate().await?;
    let (claim, interrupted) = if config.replicas() {
        (None, Vec::new())
    } else {
        (Some(store.claim().await?), store.recover().await?)
    };
    let sessions = store.count().await?;
    tracing::info!(
        database = %crate::store_pg::describe_url(url.expose()),
        version,
        sessions,
        replicas = config.replicas(),
        "plans are in PostgreSQL"
    );
    Ok((
        store,
        claim,
        LoadReport {
            sessions: usize::try_from(sessions).unwrap_or(usize::MAX),
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
        inbox: None,
        shared: None,
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
    router.handle_kept(console::ADAPTER).await;
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
            let outbound =
                TelegramOutbound::new(token, &config.telegram_api_url, config.replica_count)
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
                shards: config.discord_shards,
                share: config.replica_count,
                leases: core.shared.clone(),
            };
            let outbound = DiscordOutbound::new(&settings).map_err(AppError::Unsupported)?;
            outbounds.push((discord::ADAPTER, outbound.clone()));
            Some((outbound, settings))
        }
        None => None,
    };
    let router = core.router(&config, outbounds).await;
    let serving = CancellationToken::new();
    let serve_shared = tokio::spawn(router.clone().serve_shared(serving.clone()));
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
    // Replicas answer their probes whichever front ends they run.
    let probes_run = async {
        if !config.replicas() || config.telegram_webhook_url.is_some() {
            return Ok(());
        }
        let result =
            crate::adapters::serve_probes(config.http_addr, router.clone(), stop.clone()).await;
        stop.cancel();
        result
    };
    let (telegram_result, discord_result, probes_result) =
        tokio::join!(telegram_run, discord_run, probes_run);
    // No new events are taken; running turns get the grace period, then are interrupted.
    router.shutdown(config.shutdown_grace).await;
    serving.cancel();
    let _ = serve_shared.await;
    core.close().await;
    tracing::info!("planbot stopped");
    telegram_result
        .and(discord_result)
        .and(probes_result)
        .map_err(AppError::FrontEnd)
}
