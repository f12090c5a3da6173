//! Configuration: built-in defaults, then an optional `planbot.toml`, then the environment,
//! validated once into a typed [`Config`] whose errors name the setting.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::claude::approval::APPROVABLE;
use crate::claude::env as child_env;
use crate::claude::{CommonArgs, RunnerConfig, Sandbox, SandboxMode, ToolPolicy, tool_policy};
use crate::planning::{DEFAULT_PHASES, Phase, PlanSettings, parse_phases};

mod env;
mod parts;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use env::Env;
use sections::{Chats, Limits};

/// A secret: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The tools a planning turn may use by default: reading and writing inside the slug's workspace
/// (the turn's working directory), web search and skills. A `Read` rule governs `Glob` and `Grep`
/// too; see [`crate::claude::policy`].
pub const DEFAULT_ALLOWED_TOOLS: &str = "Read(./**),Edit(./**),Write(./**),WebSearch,Skill";
const PERMISSION_MODES: [&str; 6] = [
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];

/// Bounds of the numeric settings: a value past them is a mistake, and some would overflow a
/// clock or a semaphore.
const MAX_TURNS: u32 = 10_000;
const A_WEEK_SECS: u64 = 7 * 24 * 3600;
const A_DAY_SECS: u64 = 24 * 3600;
const AN_HOUR_MS: u64 = 3600 * 1000;
const MAX_CONCURRENT_RUNS: usize = 10_000;

/// planbot's own secrets: never passed to `claude`.
const SECRET_VARS: [&str; 3] = [
    "TELEGRAM_BOT_TOKEN",
    "DISCORD_TOKEN",
    "PLANBOT_DATABASE_URL",
];
/// Keys `claude` needs, whose values must still never appear in a message.
const API_KEY_VARS: [&str; 2] = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"];

/// The child's environment; its `Debug` names the variables, never their values.
#[derive(Clone, PartialEq, Default)]
pub struct ChildEnv(pub BTreeMap<String, String>);

impl fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Discord's gateway shards a planbot connects, as `DISCORD_SHARDS` gives them: a range out of
/// their total, `first-last/total` (both ends included) or `n/total`; or `shared/total`, all of
/// them shared through the database by the replicas, each taking its part and a dead one's. A
/// guild's events come on shard `(guild_id >> 22) % total`, direct messages on shard 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscordShards {
    pub first: u32,
    pub last: u32,
    pub total: u32,
    /// `shared/total`: leased among the replicas rather than fixed.
    pub shared: bool,
}

impl std::str::FromStr for DiscordShards {
    type Err = String;

    fn from_str(value: &str) -> Result<DiscordShards, String> {
        let wrong =
            || format!("{value:?} is not first-last/total, n/total or shared/total (e.g. 0-1/4)");
        let (range, total) = value.trim().split_once('/').ok_or_else(wrong)?;
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| wrong());
        let total = number(total)?;
        if range.trim() == "shared" {
            if total == 0 {
                return Err(wrong());
            }
            return Ok(DiscordShards {
                first: 0,
                last: total - 1,
                total,
                shared: true,
            });
        }
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(range)?, number(range)?),
        };
        if first > last || last >= total {
            return Err(format!(
                "{value:?}: shards are numbered 0 to total-1, the first no later than the last"
            ));
        }
        Ok(DiscordShards {
            first,
            last,
            total,
            shared: false,
        })
    }
}

impl fmt::Display for DiscordShards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shared {
            return write!(f, "shared/{}", self.total);
        }
        write!(f, "{}-{}/{}", self.first, self.last, self.total)
    }
}

/// Everything planbot is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub claude_bin: PathBuf,
    pub state_dir: PathBuf,
    pub workspace_dir: PathBuf,
    /// Overrides of the compiled-in prompts; `None` uses those.
    pub prompts_dir: Option<PathBuf>,
    /// `adapter:user_id` entries allowed to plan; the console's local user always is.
    pub allowed_users: Vec<String>,
    /// `PLANBOT_APPROVERS`: `adapter:user_id` entries who may answer any plan's questions
    /// (besides the person who started it).
    pub approvers: Vec<String>,
    /// `PLANBOT_APPROVABLE_TOOLS`: tools whose calls the user allows or denies by button.
    pub approvable_tools: Vec<String>,
    /// `PLANBOT_APPROVAL_TIMEOUT_SECS`: an unanswered question is denied after this.
    pub approval_timeout: Duration,
    pub phases: Vec<Phase>,
    pub max_turns: u32,
    pub retry_max_turns: u32,
    pub turn_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_runs: usize,
    /// The flags every turn gets: permission mode, tools, directories, model, budget, streaming.
    pub claude_args: CommonArgs,
    /// `PLANBOT_WEBFETCH_DOMAINS`: the only domains `WebFetch` may reach.
    pub webfetch_domains: Vec<String>,
    /// `PLANBOT_UNSAFE_TOOLS`: the operator knowingly widens the agent's reach.
    pub unsafe_tools: bool,
    /// `PLANBOT_SANDBOX`.
    pub sandbox: SandboxMode,
    /// `PLANBOT_PATH_GUARD`: the `PreToolUse` hook that confines every tool call.
    pub path_guard: bool,
    /// `PLANBOT_CHILD_ENV`: more variable names (or `PREFIX*`) passed to `claude`.
    pub child_env: Vec<String>,
    /// What `claude` gets of planbot's environment (the allowlist applied at load).
    pub child_environment: ChildEnv,
    /// Values that must never leave in a message (tokens, API keys).
    pub secret_values: Vec<Secret>,
    /// Files holding secrets, hidden from the sandbox.
    pub secret_files: Vec<PathBuf>,
    /// How often a progress message may be edited.
    pub progress_interval: Duration,
    /// `PLANBOT_MAX_ATTACHMENT_MB`, in bytes: larger files sent to a plan are refused.
    pub max_attachment_bytes: u64,
    /// Base delay of the one retry after an overloaded API.
    pub retry_delay: Duration,
    /// `PLANBOT_DATABASE_URL`: plans in PostgreSQL instead of `planning.json` (a secret: it
    /// may hold a password).
    pub database_url: Option<Secret>,
    /// `PLANBOT_DATABASE_POOL_SIZE`: connections to PostgreSQL at most.
    pub database_pool_size: usize,
    /// `PLANBOT_LEASE_SECS`: how long a replica holds a chat without renewing its lease.
    pub lease: Duration,
    /// `PLANBOT_REPLICAS`: how many planbots send for the bot (its overall message rate is
    /// divided among them).
    pub replica_count: u32,
    pub telegram_token: Option<Secret>,
    pub telegram_api_url: String,
    /// `TELEGRAM_WEBHOOK_URL`: Telegram posts updates there instead of planbot polling.
    pub telegram_webhook_url: Option<String>,
    /// `TELEGRAM_WEBHOOK_SECRET`: every webhook request must carry it.
    pub telegram_webhook_secret: Option<Secret>,
    /// `PLANBOT_HTTP_ADDR`: where planbot serves HTTP (the webhook, `/healthz`).
    pub http_addr: std::net::SocketAddr,
    pub discord_token: Option<Secret>,
    pub discord_api_url: String,
    /// Commands are registered in this guild only, and only this guild (and direct messages)
    /// is served; `None` registers them globally.
    pub discord_guild_id: Option<u64>,
    /// Discord role ids one of which a guild member must hold, besides being allowed.
    pub discord_allowed_roles: Vec<String>,
    /// `DISCORD_SHARDS`: the gateway shards this planbot connects (replicas divide them);
    /// `None` connects the one shard a bot of fewer than 2,500 guilds needs.
    pub discord_shards: Option<DiscordShards>,
    /// More environment variable names never passed to `claude`.
    pub secret_env: Vec<String>,
    /// No turn starts for a plan that has spent this much.
    pub plan_budget_usd: Option<f64>,
    /// No turn starts for a user who has spent this much today (UTC).
    pub user_daily_budget_usd: Option<f64>,
    /// On SIGTERM or Ctrl-C, how long running turns may take to finish.
    pub shutdown_grace: Duration,
}

/// A setting that is not valid, named as the user wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {problem}")]
    Invalid { setting: String, problem: String },
    #[error("could not read the config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {problem}")]
    FileFormat { path: PathBuf, problem: String },
}

/// The optional `planbot.toml`: the same settings, named like the variables without `PLANBOT_`
/// and in lower case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    claude_bin: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    workspace_dir: Option<PathBuf>,
    prompts_dir: Option<PathBuf>,
    allowed_users: Option<Vec<String>>,
    approvers: Option<Vec<String>>,
    approvable_tools: Option<Vec<String>>,
    approval_timeout_secs: Option<u64>,
    database_pool_size: Option<usize>,
    lease_secs: Option<u64>,
    replicas: Option<u32>,
    phases: Option<Vec<String>>,
    max_turns: Option<u32>,
    retry_max_turns: Option<u32>,
    turn_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_concurrent_runs: Option<usize>,
    permission_mode: Option<String>,
    allowed_tools: Option<Vec<String>>,
    add_dirs: Option<Vec<PathBuf>>,
    model: Option<String>,
    max_budget_usd: Option<f64>,
    stream_partial: Option<bool>,
    progress_interval_ms: Option<u64>,
    max_attachment_mb: Option<u64>,
    retry_delay_ms: Option<u64>,
    telegram_api_url: Option<String>,
    discord_api_url: Option<String>,
    discord_guild_id: Option<u64>,
    discord_allowed_roles: Option<Vec<String>>,
    discord_shards: Option<String>,
    secret_env: Option<Vec<String>>,
    plan_budget_usd: Option<f64>,
    user_daily_budget_usd: Option<f64>,
    shutdown_grace_secs: Option<u64>,
    webfetch_domains: Option<Vec<String>>,
    unsafe_tools: Option<bool>,
    sandbox: Option<String>,
    path_guard: Option<bool>,
    child_env: Option<Vec<String>>,
}

impl Config {
    /// Loads from `file` (if given or named by `PLANBOT_CONFIG`) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::from_sources(file, &env)
    }

    /// Loads from an explicit environment map (tests use this).
    pub fn from_sources(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let path = file
            .map(Path::to_path_buf)
            .or_else(|| non_empty(env, "PLANBOT_CONFIG").map(PathBuf::from));
        let mut file = FileConfig::read(path.as_deref())?;
        let e = Env {
            vars: env,
            file: path.as_deref(),
        };
        let phases = sections::phases(&e, &mut file)?;
        let sandbox = sections::sandbox(&e, &mut file)?;
        let secrets = sections::secrets(&e, &mut file)?;
        let child = secrets.child;
        let limits = Limits::read(&e, &mut file)?;
        let chats = Chats::read(&e, &mut file)?;
        let config = Config {
            claude_bin: e
                .path("PLANBOT_CLAUDE_BIN")
                .or(file.claude_bin.take())
                .unwrap_or_else(|| "claude".into()),
            state_dir: e
                .path("PLANBOT_STATE_DIR")
                .or(file.state_dir.take())
                .unwrap_or_else(|| "./state".into()),
            workspace_dir: e
                .path("PLANBOT_WORKSPACE_DIR")
                .or(file.workspace_dir.take())
                .unwrap_or_else(|| "./workspace".into()),
            prompts_dir: e.path("PLANBOT_PROMPTS_DIR").or(file.prompts_dir.take()),
            allowed_users: e
                .list("PLANBOT_ALLOWED_USERS")
                .or(file.allowed_users.take())
                .unwrap_or_default(),
            approvers: chats.approvers,
            approvable_tools: chats.approvable_tools,
            approval_timeout: limits.approval_timeout,
            phases,
            max_turns: limits.max_turns,
            retry_max_turns: limits.retry_max_turns,
            turn_timeout: limits.turn_timeout,
            idle_timeout: limits.idle_timeout,
            max_concurrent_runs: limits.max_concurrent_runs,
            claude_args: claude_args(&e, &mut file)?,
            progress_interval: limits.progress_interval,
            max_attachment_bytes: limits.max_attachment_bytes,
            retry_delay: limits.retry_delay,
            database_pool_size: chats.database_pool_size,
            lease: chats.lease,
            replica_count: chats.replica_count,
            database_url: secrets.database_url,
            telegram_webhook_url: chats.telegram_webhook_url,
            telegram_webhook_secret: secrets.webhook_secret,
            http_addr: chats.http_addr,
            telegram_token: secrets.telegram_token,
            telegram_api_url: chats.telegram_api_url,
            discord_token: secrets.discord_token,
            discord_api_url: chats.discord_api_url,
            discord_guild_id: chats.discord_guild_id,
            discord_allowed_roles: chats.discord_allowed_roles,
            discord_shards: chats.discord_shards,
            child_environment: child.environment,
            secret_env: child.secret_env,
            webfetch_domains: e
                .list("PLANBOT_WEBFETCH_DOMAINS")
                .or(file.webfetch_domains.take())
                .unwrap_or_default(),
            unsafe_tools: e
                .parse("PLANBOT_UNSAFE_TOOLS")?
                .or(file.unsafe_tools.take())
                .unwrap_or(false),
            sandbox,
            path_guard: e
                .parse("PLANBOT_PATH_GUARD")?
                .or(file.path_guard.take())
                .unwrap_or(true),
            child_env: child.child_env,
            secret_values: child.secret_values,
            secret_files: secrets.files,
            plan_budget_usd: limits.plan_budget_usd,
            user_daily_budget_usd: limits.user_daily_budget_usd,
            shutdown_grace: limits.shutdown_grace,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The path with links resolved where it exists, else its absolute form.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| absolute(path))
}

/// An absolute form of `path` without resolving links (the directory may not exist yet).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn invalid(setting: &str, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        problem: problem.to_string(),
    }
}

fn non_empty<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Claude Code CLI's arguments common to every turn, from the environment or the file.
fn claude_args(e: &Env, file: &mut FileConfig) -> Result<CommonArgs, ConfigError> {
    Ok(CommonArgs {
        tools: Vec::new(),
        disallowed_tools: Vec::new(),
        path_guard: None,
        permission_prompts_none: false,
        permission_mode: e
            .str("PLANBOT_PERMISSION_MODE")
            .map(str::to_string)
            .or(file.permission_mode.take())
            .unwrap_or_else(|| "dontAsk".into()),
        allowed_tools: e
            .list("PLANBOT_ALLOWED_TOOLS")
            .or(file.allowed_tools.take())
            .unwrap_or_else(|| split_list(DEFAULT_ALLOWED_TOOLS)),
        add_dirs: e
            .list("PLANBOT_ADD_DIRS")
            .map(|l| l.into_iter().map(PathBuf::from).collect())
            .or(file.add_dirs.take())
            .unwrap_or_default(),
        model: e
            .str("PLANBOT_MODEL")
            .map(str::to_string)
            .or(file.model.take()),
        max_budget_usd: e.amount("PLANBOT_MAX_BUDGET_USD", file.max_budget_usd.take())?,
        stream_partial: e
            .parse("PLANBOT_STREAM_PARTIAL")?
            .or(file.stream_partial.take())
            .unwrap_or(true),
    })
}

/// What reaches the `claude` child, and what must never: its environment (an allowlist), the
/// names and values of secrets.
struct ChildSide {
    environment: ChildEnv,
    secret_env: Vec<String>,
    child_env: Vec<String>,
    secret_values: Vec<Secret>,
}

impl ChildSide {
    fn of(e: &Env, file: &mut FileConfig, tokens: [&Option<Secret>; 4]) -> ChildSide {
        let secret_env = e
            .list("PLANBOT_SECRET_ENV")
            .or(file.secret_env.take())
            .unwrap_or_default();
        let child_env = e
            .list("PLANBOT_CHILD_ENV")
            .or(file.child_env.take())
            .unwrap_or_default();
        let mut never_passed: Vec<String> = SECRET_VARS.iter().map(|v| v.to_string()).collect();
        never_passed.extend(secret_env.iter().cloned());
        let parent: BTreeMap<String, String> =
            e.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut secret_values: Vec<Secret> = tokens.into_iter().flatten().cloned().collect();
        // A database URL's password on its own, too (from the variable or its file).
        let passwords: Vec<Secret> = secret_values
            .iter()
            .filter_map(|s| url::Url::parse(s.expose()).ok())
            .filter_map(|u| u.password().map(str::to_string))
            .filter(|p| p.len() >= 8)
            .map(Secret::new)
            .collect();
        secret_values.extend(passwords);
        for name in secret_env.iter().map(String::as_str).chain(API_KEY_VARS) {
            if let Some(value) = e.str(name).filter(|v| v.len() >= 8) {
                secret_values.push(Secret::new(value));
            }
        }
        ChildSide {
            environment: ChildEnv(child_env::child_env(&parent, &child_env, &never_passed)),
            secret_env,
            child_env,
            secret_values,
        }
    }
}

impl FileConfig {
    /// `planbot.toml` at `path`, or nothing set when there is none.
    fn read(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::FileFormat {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }
}
