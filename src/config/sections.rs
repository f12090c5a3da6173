//! The settings read in groups: the numbers (turns, time limits, sizes, budgets), the chats'
//! (front ends, approvals, the database's pool), the phases and the sandbox.

use super::*;

/// Turns, time limits, sizes and budgets.
pub(super) struct Limits {
    pub(super) max_turns: u32,
    pub(super) retry_max_turns: u32,
    pub(super) turn_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_concurrent_runs: usize,
    pub(super) progress_interval: Duration,
    pub(super) retry_delay: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) max_attachment_bytes: u64,
    pub(super) plan_budget_usd: Option<f64>,
    pub(super) user_daily_budget_usd: Option<f64>,
    pub(super) approval_timeout: Duration,
}

impl Limits {
    pub(super) fn read(e: &Env, file: &mut FileConfig) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_turns: e.bounded(
                "PLANBOT_MAX_TURNS",
                file.max_turns.take(),
                1..=MAX_TURNS,
                20,
            )?,
            retry_max_turns: e.bounded(
                "PLANBOT_RETRY_MAX_TURNS",
                file.retry_max_turns.take(),
                1..=MAX_TURNS,
                30,
            )?,
            turn_timeout: Duration::from_secs(e.bounded(
                "PLANBOT_TURN_TIMEOUT_SECS",
                file.turn_timeout_secs.take(),
                1..=A_WEEK_SECS,
                600,
            )?),
            idle_timeout: Duration::from_secs(e.bounded(
                "PLANBOT_IDLE_TIMEOUT_SECS",
                file.idle_timeout_secs.take(),
                1..=A_WEEK_SECS,
                300,
            )?),
            max_concurrent_runs: e.bounded(
                "PLANBOT_MAX_CONCURRENT_RUNS",
                file.max_concurrent_runs.take(),
                1..=MAX_CONCURRENT_RUNS,
                4,
            )?,
            progress_interval: Duration::from_millis(e.bounded(
                "PLANBOT_PROGRESS_INTERVAL_MS",
                file.progress_interval_ms.take(),
                1..=AN_HOUR_MS,
                1500,
            )?),
            retry_delay: Duration::from_millis(e.bounded(
                "PLANBOT_RETRY_DELAY_MS",
                file.retry_delay_ms.take(),
                0..=AN_HOUR_MS,
                2000,
            )?),
            shutdown_grace: Duration::from_secs(e.bounded(
                "PLANBOT_SHUTDOWN_GRACE_SECS",
                file.shutdown_grace_secs.take(),
                0..=A_DAY_SECS,
                30,
            )?),
            // 20 MB is what the Bot API lets a bot download; a self-hosted Bot API server allows
            // up to 2000 MB.
            max_attachment_bytes: e.bounded(
                "PLANBOT_MAX_ATTACHMENT_MB",
                file.max_attachment_mb.take(),
                1..=2000,
                20,
            )? * 1024
                * 1024,
            plan_budget_usd: e.amount("PLANBOT_PLAN_BUDGET_USD", file.plan_budget_usd.take())?,
            user_daily_budget_usd: e.amount(
                "PLANBOT_USER_DAILY_BUDGET_USD",
                file.user_daily_budget_usd.take(),
            )?,
            approval_timeout: Duration::from_secs(e.bounded(
                "PLANBOT_APPROVAL_TIMEOUT_SECS",
                file.approval_timeout_secs.take(),
                10..=A_WEEK_SECS,
                600,
            )?),
        })
    }
}

/// The front ends', approvals' and the database pool's settings.
pub(super) struct Chats {
    pub(super) approvers: Vec<String>,
    pub(super) approvable_tools: Vec<String>,
    pub(super) http_addr: std::net::SocketAddr,
    pub(super) telegram_api_url: String,
    pub(super) telegram_webhook_url: Option<String>,
    pub(super) discord_api_url: String,
    pub(super) discord_guild_id: Option<u64>,
    pub(super) discord_allowed_roles: Vec<String>,
    pub(super) discord_shards: Option<super::DiscordShards>,
    pub(super) database_pool_size: usize,
    pub(super) lease: Duration,
    pub(super) replica_count: u32,
}

impl Chats {
    pub(super) fn read(e: &Env, file: &mut FileConfig) -> Result<Chats, ConfigError> {
        Ok(Chats {
            approvers: e
                .list("PLANBOT_APPROVERS")
                .or(file.approvers.take())
                .unwrap_or_default(),
            approvable_tools: e
                .list("PLANBOT_APPROVABLE_TOOLS")
                .or(file.approvable_tools.take())
                .unwrap_or_else(|| vec!["WebFetch".into()]),
            http_addr: e
                .parse("PLANBOT_HTTP_ADDR")?
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 8080))),
            telegram_api_url: e
                .str("TELEGRAM_API_URL")
                .map(str::to_string)
                .or(file.telegram_api_url.take())
                .unwrap_or_else(|| "https://api.telegram.org".into()),
            telegram_webhook_url: e
                .str("TELEGRAM_WEBHOOK_URL")
                .filter(|u| !u.trim().is_empty())
                .map(str::to_string),
            discord_api_url: e
                .str("DISCORD_API_URL")
                .map(str::to_string)
                .or(file.discord_api_url.take())
                .unwrap_or_else(|| "https://discord.com".into()),
            discord_guild_id: e
                .parse("DISCORD_GUILD_ID")?
                .or(file.discord_guild_id.take()),
            discord_allowed_roles: e
                .list("DISCORD_ALLOWED_ROLES")
                .or(file.discord_allowed_roles.take())
                .unwrap_or_default(),
            discord_shards: e
                .str("DISCORD_SHARDS")
                .map(str::to_string)
                .or(file.discord_shards.take())
                .map(|v| v.parse().map_err(|err| invalid("DISCORD_SHARDS", err)))
                .transpose()?,
            database_pool_size: e.bounded(
                "PLANBOT_DATABASE_POOL_SIZE",
                file.database_pool_size.take(),
                2..=256,
                8,
            )?,
            lease: Duration::from_secs(e.bounded(
                "PLANBOT_LEASE_SECS",
                file.lease_secs.take(),
                3..=600,
                15,
            )?),
            replica_count: e.bounded("PLANBOT_REPLICAS", file.replicas.take(), 1..=64, 1)?,
        })
    }
}

/// `PLANBOT_PHASES`, or the file's list, or the default phases.
pub(super) fn phases(e: &Env, file: &mut FileConfig) -> Result<Vec<Phase>, ConfigError> {
    let spec = match (e.str("PLANBOT_PHASES"), file.phases.take()) {
        (Some(spec), _) => spec.to_string(),
        (None, Some(list)) => list.join(","),
        (None, None) => DEFAULT_PHASES.to_string(),
    };
    parse_phases(&spec).map_err(|err| invalid("PLANBOT_PHASES", err))
}

/// `PLANBOT_SANDBOX`: `auto` unless set.
pub(super) fn sandbox(e: &Env, file: &mut FileConfig) -> Result<SandboxMode, ConfigError> {
    match e
        .str("PLANBOT_SANDBOX")
        .map(str::to_string)
        .or(file.sandbox.take())
    {
        None => Ok(SandboxMode::Auto),
        Some(value) => SandboxMode::parse(&value).ok_or_else(|| {
            invalid(
                "PLANBOT_SANDBOX",
                format!("{value:?} is not one of auto, bwrap, off"),
            )
        }),
    }
}

/// planbot's own secrets, and what the `claude` child gets and must never get.
pub(super) struct Secrets {
    pub(super) telegram_token: Option<Secret>,
    pub(super) discord_token: Option<Secret>,
    pub(super) database_url: Option<Secret>,
    pub(super) webhook_secret: Option<Secret>,
    /// Files the tokens came from (hidden from the sandbox).
    pub(super) files: Vec<PathBuf>,
    pub(super) child: ChildSide,
}

pub(super) fn secrets(e: &Env, file: &mut FileConfig) -> Result<Secrets, ConfigError> {
    let (telegram_token, telegram_file) = e.secret(
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_BOT_TOKEN_FILE",
        "telegram-bot-token",
    )?;
    let (discord_token, discord_file) =
        e.secret("DISCORD_TOKEN", "DISCORD_TOKEN_FILE", "discord-token")?;
    let (database_url, database_file) = e.secret(
        "PLANBOT_DATABASE_URL",
        "PLANBOT_DATABASE_URL_FILE",
        "database-url",
    )?;
    let database_url = database_url.filter(|u| !u.expose().trim().is_empty());
    let (webhook_secret, webhook_file) = e.secret(
        "TELEGRAM_WEBHOOK_SECRET",
        "TELEGRAM_WEBHOOK_SECRET_FILE",
        "telegram-webhook-secret",
    )?;
    let webhook_secret = webhook_secret.filter(|v| !v.expose().is_empty());
    let child = ChildSide::of(
        e,
        file,
        [
            &telegram_token,
            &discord_token,
            &database_url,
            &webhook_secret,
        ],
    );
    Ok(Secrets {
        telegram_token,
        discord_token,
        database_url,
        webhook_secret,
        files: [telegram_file, discord_file, database_file, webhook_file]
            .into_iter()
            .flatten()
            .collect(),
        child,
    })
}
