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
        let phases_spec = match (e.str("PLANBOT_PHASES"), file.phases.take()) {
            (Some(spec), _) => spec.to_string(),
            (None, Some(list)) => list.join(","),
            (None, None) => DEFAULT_PHASES.to_string(),
        };
        let phases = parse_phases(&phases_spec).map_err(|err| invalid("PLANBOT_PHASES", err))?;
        let (telegram_token, telegram_file) = e.secret(
            "TELEGRAM_BOT_TOKEN",
            "TELEGRAM_BOT_TOKEN_FILE",
            "telegram-bot-token",
        )?;
        let (discord_token, discord_file) =
            e.secret("DISCORD_TOKEN", "DISCORD_TOKEN_FILE", "discord-token")?;
        let sandbox = match e
            .str("PLANBOT_SANDBOX")
            .map(str::to_string)
            .or(file.sandbox.take())
        {
            None => SandboxMode::Auto,
            Some(value) => SandboxMode::parse(&value).ok_or_else(|| {
                invalid(
                    "PLANBOT_SANDBOX",
                    format!("{value:?} is not one of auto, bwrap, off"),
                )
            })?,
        };
        let database_url = e
            .str("PLANBOT_DATABASE_URL")
            .filter(|u| !u.trim().is_empty())
            .map(Secret::new);
        let webhook_secret = e
            .str("TELEGRAM_WEBHOOK_SECRET")
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let child = ChildSide::of(
            &e,
            &mut file,
            [
                &telegram_token,
                &discord_token,
                &database_url,
                &webhook_secret,
            ],
        );
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
            approvers: e
                .list("PLANBOT_APPROVERS")
                .or(file.approvers.take())
                .unwrap_or_default(),
            approvable_tools: e
                .list("PLANBOT_APPROVABLE_TOOLS")
                .or(file.approvable_tools.take())
                .unwrap_or_else(|| vec!["WebFetch".into()]),
            approval_timeout: Duration::from_secs(e.bounded(
                "PLANBOT_APPROVAL_TIMEOUT_SECS",
                file.approval_timeout_secs.take(),
                10..=A_WEEK_SECS,
                600,
            )?),
            phases,
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
            claude_args: claude_args(&e, &mut file)?,
            progress_interval: Duration::from_millis(e.bounded(
                "PLANBOT_PROGRESS_INTERVAL_MS",
                file.progress_interval_ms.take(),
                1..=AN_HOUR_MS,
                1500,
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
            retry_delay: Duration::from_millis(e.bounded(
                "PLANBOT_RETRY_DELAY_MS",
                file.retry_delay_ms.take(),
                0..=AN_HOUR_MS,
                2000,
            )?),
            database_pool_size: e.bounded(
                "PLANBOT_DATABASE_POOL_SIZE",
                file.database_pool_size.take(),
                2..=256,
                8,
            )?,
            database_url,
            telegram_webhook_url: e
                .str("TELEGRAM_WEBHOOK_URL")
                .filter(|u| !u.trim().is_empty())
                .map(str::to_string),
            telegram_webhook_secret: webhook_secret,
            http_addr: e
                .parse("PLANBOT_HTTP_ADDR")?
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 8080))),
            telegram_token,
            telegram_api_url: e
                .str("TELEGRAM_API_URL")
                .map(str::to_string)
                .or(file.telegram_api_url.take())
                .unwrap_or_else(|| "https://api.telegram.org".into()),
            discord_token,
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
            secret_files: telegram_file.into_iter().chain(discord_file).collect(),
            plan_budget_usd: e.amount("PLANBOT_PLAN_BUDGET_USD", file.plan_budget_usd.take())?,
            user_daily_budget_usd: e.amount(
                "PLANBOT_USER_DAILY_BUDGET_USD",
                file.user_daily_budget_usd.take(),
            )?,
            shutdown_grace: Duration::from_secs(e.bounded(
                "PLANBOT_SHUTDOWN_GRACE_SECS",
                file.shutdown_grace_secs.take(),
                0..=A_DAY_SECS,
                30,
            )?),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_tools()?;
        if !PERMISSION_MODES.contains(&self.claude_args.permission_mode.as_str()) {
            return Err(invalid(
                "PLANBOT_PERMISSION_MODE",
                format!(
                    "{:?} is not one of {}",
                    self.claude_args.permission_mode,
                    PERMISSION_MODES.join(", ")
                ),
            ));
        }
        for (name, users) in [
            ("PLANBOT_ALLOWED_USERS", &self.allowed_users),
            ("PLANBOT_APPROVERS", &self.approvers),
        ] {
            for user in users {
                let valid = user
                    .split_once(':')
                    .is_some_and(|(adapter, id)| !adapter.is_empty() && !id.is_empty());
                if !valid {
                    return Err(invalid(
                        name,
                        format!(
                            "{user:?} is not of the form adapter:user_id (e.g. telegram:12345)"
                        ),
                    ));
                }
            }
        }
        if let Some(url) = &self.telegram_webhook_url {
            let parsed = url::Url::parse(url).map_err(|e| {
                invalid("TELEGRAM_WEBHOOK_URL", format!("{url:?} is not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "TELEGRAM_WEBHOOK_URL",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            let secret_ok = self.telegram_webhook_secret.as_ref().is_some_and(|s| {
                let s = s.expose();
                (1..=256).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            if !secret_ok {
                return Err(invalid(
                    "TELEGRAM_WEBHOOK_SECRET",
                    "is required with TELEGRAM_WEBHOOK_URL (anyone can reach a webhook; only Telegram knows the secret): 1 to 256 of A-Z, a-z, 0-9, _ and -".to_string(),
                ));
            }
        }
        if let Some(url) = &self.database_url
            && let Err(e) = <tokio_postgres::Config as std::str::FromStr>::from_str(url.expose())
        {
            return Err(invalid(
                "PLANBOT_DATABASE_URL",
                format!("not a PostgreSQL URL (postgres://user:password@host:port/db): {e}"),
            ));
        }
        for tool in &self.approvable_tools {
            if !APPROVABLE.contains(&tool.as_str()) {
                return Err(invalid(
                    "PLANBOT_APPROVABLE_TOOLS",
                    format!(
                        "{tool:?} cannot be approved by button; only {} can (they touch no local path)",
                        APPROVABLE.join(" and ")
                    ),
                ));
            }
        }
        for (name, url) in [
            ("TELEGRAM_API_URL", &self.telegram_api_url),
            ("DISCORD_API_URL", &self.discord_api_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    name,
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }

    /// Tools that widen the agent's reach are refused unless the operator says so knowingly.
    fn validate_tools(&self) -> Result<(), ConfigError> {
        for domain in &self.webfetch_domains {
            let valid = !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid {
                return Err(invalid(
                    "PLANBOT_WEBFETCH_DOMAINS",
                    format!("{domain:?} is not a domain name (like docs.example.com)"),
                ));
            }
        }
        if self.unsafe_tools {
            return Ok(());
        }
        let policy = self.tool_policy();
        if !policy.unsafe_entries.is_empty() {
            return Err(invalid(
                "PLANBOT_ALLOWED_TOOLS",
                format!(
                    "{} would let Claude act outside the plan's workspace (scope file tools as \
                     Read(./**), list web domains in PLANBOT_WEBFETCH_DOMAINS); set \
                     PLANBOT_UNSAFE_TOOLS=true to allow it knowingly",
                    policy.unsafe_entries.join(", ")
                ),
            ));
        }
        if !self.path_guard {
            return Err(invalid(
                "PLANBOT_PATH_GUARD",
                "turning the path guard off needs PLANBOT_UNSAFE_TOOLS=true",
            ));
        }
        Ok(())
    }

    /// The tool lists every turn gets.
    pub fn tool_policy(&self) -> ToolPolicy {
        tool_policy(
            &self.claude_args.allowed_tools,
            &self.webfetch_domains,
            &self.approvable(),
        )
    }

    /// The tools asked about by button: none without the path guard, which answers for them.
    pub fn approvable(&self) -> Vec<String> {
        if self.path_guard {
            self.approvable_tools.clone()
        } else {
            Vec::new()
        }
    }

    /// What weakens the agent's confinement, for a warning at start-up.
    pub fn unsafe_choices(&self) -> Vec<String> {
        let mut choices = self.tool_policy().unsafe_entries;
        if !self.path_guard {
            choices.push("PLANBOT_PATH_GUARD=false".into());
        }
        if self.bypasses_permissions() {
            choices.push("PLANBOT_PERMISSION_MODE=bypassPermissions".into());
        }
        choices
    }

    /// The directories and files a sandboxed turn must not see, and what it keeps.
    pub fn sandbox_layout(&self, bwrap: PathBuf, planbot_exe: Option<PathBuf>) -> Sandbox {
        let env = &self.child_environment.0;
        let home = env.get("HOME").map(PathBuf::from);
        let config_dir = env
            .get("CLAUDE_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".claude")));
        let mut hidden_dirs: Vec<PathBuf> = [
            "/tmp",
            "/var/tmp",
            "/home",
            "/root",
            "/run/secrets",
            "/run/credentials",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        hidden_dirs.push(std::env::temp_dir());
        hidden_dirs.extend(home.clone());
        hidden_dirs.push(canonical(&self.state_dir));
        hidden_dirs.push(canonical(&self.workspace_dir));
        hidden_dirs.extend(std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from));
        let mut writable: Vec<PathBuf> = config_dir.iter().cloned().collect();
        if env.get("CLAUDE_CONFIG_DIR").is_none()
            && let Some(home) = &home
        {
            writable.push(home.join(".claude.json"));
        }
        // The CLI, and what it runs on (a node from a version manager), may live in the home.
        let mut readable: Vec<PathBuf> = env
            .get("PATH")
            .map(|p| std::env::split_paths(p).collect())
            .unwrap_or_default();
        let path_var = env.get("PATH").map(std::ffi::OsString::from);
        if let Some(bin) =
            crate::claude::sandbox::find_program(&self.claude_bin, path_var.as_deref())
            && let Some(dir) = bin.canonicalize().ok().as_deref().and_then(Path::parent)
        {
            readable.push(dir.to_path_buf());
        }
        readable.extend(planbot_exe);
        Sandbox {
            bwrap,
            hidden_dirs,
            hidden_files: self.secret_files.clone(),
            writable,
            readable,
            config_dir,
        }
    }

    /// Whether `bypassPermissions` was chosen (allowed only explicitly, with a warning).
    pub fn bypasses_permissions(&self) -> bool {
        self.claude_args.permission_mode == "bypassPermissions"
    }

    /// Environment variables `claude` must never see.
    pub fn env_to_remove(&self) -> Vec<String> {
        let mut names: Vec<String> = SECRET_VARS.iter().map(|v| v.to_string()).collect();
        names.extend(self.secret_env.iter().cloned());
        names
    }

    pub fn runner_config(&self) -> RunnerConfig {
        // A relative path with a directory part is taken from planbot's own working directory,
        // not the plan's (where turns run); a bare name is looked up on PATH.
        let bin = if self.claude_bin.components().count() > 1 {
            absolute(&self.claude_bin)
        } else {
            self.claude_bin.clone()
        };
        RunnerConfig {
            bin,
            turn_timeout: self.turn_timeout,
            idle_timeout: self.idle_timeout,
            max_concurrent: self.max_concurrent_runs,
            env_remove: self.env_to_remove(),
            env: Some(self.child_environment.0.clone()),
            pid_dir: Some(self.pid_dir()),
            ..RunnerConfig::default()
        }
    }

    /// Where running `claude` process groups are recorded (see [`crate::claude::reap_orphans`]).
    pub fn pid_dir(&self) -> PathBuf {
        self.state_dir.join("running")
    }

    /// The flags of every turn; `path_guard` is planbot's own binary when the guard is on.
    pub fn common_args(&self, path_guard: Option<PathBuf>) -> CommonArgs {
        let policy = self.tool_policy();
        CommonArgs {
            tools: policy.tools,
            allowed_tools: policy.allow,
            disallowed_tools: policy.deny,
            path_guard: path_guard.filter(|_| self.path_guard),
            ..self.claude_args.clone()
        }
    }

    pub fn plan_settings(&self, common: CommonArgs) -> PlanSettings {
        let root = absolute(&self.workspace_dir);
        PlanSettings {
            max_turns: self.max_turns,
            retry_max_turns: self.retry_max_turns,
            retry_delay: self.retry_delay,
            workspace_root: root,
            phases: self.phases.clone(),
            approvable: if common.path_guard.is_some() {
                self.approvable()
            } else {
                Vec::new()
            },
            webfetch_domains: self.webfetch_domains.clone(),
            common,
        }
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
        // A database URL's password on its own, too.
        if let Some(password) = e
            .str("PLANBOT_DATABASE_URL")
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.password().map(str::to_string))
            .filter(|p| p.len() >= 8)
        {
            secret_values.push(Secret::new(password));
        }
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

/// Typed reads of the environment; an empty variable counts as unset. `file` is the
/// `planbot.toml` the other values came from, named in errors about them.
struct Env<'a> {
    vars: &'a HashMap<String, String>,
    file: Option<&'a Path>,
}

impl Env<'_> {
    fn str(&self, name: &str) -> Option<&str> {
        non_empty(self.vars, name)
    }

    /// A number within `range`, from the environment, else the file, else `default`; an error
    /// names the variable, or the file and its key.
    fn bounded<T>(
        &self,
        name: &str,
        from_file: Option<T>,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Copy + fmt::Display,
        T::Err: fmt::Display,
    {
        let (value, setting) = match self.parse::<T>(name)? {
            Some(value) => (value, name.to_string()),
            None => match from_file {
                Some(value) => (value, self.file_key(name)),
                None => return Ok(default),
            },
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(
                &setting,
                format!(
                    "{value} is out of range: it must be from {} to {}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// An amount of money: positive and finite, or unset.
    fn amount(&self, name: &str, from_file: Option<f64>) -> Result<Option<f64>, ConfigError> {
        let (value, setting) = match self.parse::<f64>(name)? {
            Some(value) => (value, name.to_string()),
            None => match from_file {
                Some(value) => (value, self.file_key(name)),
                None => return Ok(None),
            },
        };
        if value.is_finite() && value > 0.0 {
            Ok(Some(value))
        } else {
            Err(invalid(
                &setting,
                format!("{value} is not an amount: it must be a positive number of USD"),
            ))
        }
    }

    /// How `name` is spelled in `planbot.toml`, with the file: `planbot.toml: max_turns`.
    fn file_key(&self, name: &str) -> String {
        let key = name.trim_start_matches("PLANBOT_").to_ascii_lowercase();
        match self.file {
            Some(path) => format!("{}: {key}", path.display()),
            None => key,
        }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.str(name).map(PathBuf::from)
    }

    fn list(&self, name: &str) -> Option<Vec<String>> {
        self.str(name).map(split_list)
    }

    /// A secret from `name`, or the file named by `file_var`, or systemd's credential
    /// `credential`; with the file it came from.
    fn secret(
        &self,
        name: &str,
        file_var: &str,
        credential: &str,
    ) -> Result<(Option<Secret>, Option<PathBuf>), ConfigError> {
        let file = match (self.str(name), self.path(file_var)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    file_var,
                    format!("set either {name} or {file_var}, not both"),
                ));
            }
            (Some(value), None) => return Ok((Some(Secret::new(value)), None)),
            (None, Some(path)) => Some((file_var.to_string(), path)),
            (None, None) => self
                .path("CREDENTIALS_DIRECTORY")
                .map(|dir| dir.join(credential))
                .filter(|path| path.exists())
                .map(|path| ("CREDENTIALS_DIRECTORY".to_string(), path)),
        };
        let Some((setting, path)) = file else {
            return Ok((None, None));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(&setting, format!("cannot read {}: {e}", path.display())))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(invalid(&setting, format!("{} is empty", path.display())));
        }
        Ok((Some(Secret::new(value)), Some(path)))
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.str(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| invalid(name, format!("{v:?} is not valid: {e}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        assert_eq!(c.claude_bin, PathBuf::from("claude"));
        assert_eq!(c.state_dir, PathBuf::from("./state"));
        assert_eq!(c.max_turns, 20);
        assert_eq!(c.retry_max_turns, 30);
        assert_eq!(c.turn_timeout, Duration::from_secs(600));
        assert_eq!(c.max_concurrent_runs, 4);
        assert_eq!(c.claude_args.permission_mode, "dontAsk");
        assert!(c.allowed_users.is_empty());
        assert_eq!(c.phases.len(), 4);
        assert!(c.phases[3].optional);
        assert_eq!(c.telegram_api_url, "https://api.telegram.org");
        assert_eq!(c.discord_api_url, "https://discord.com");
        assert!(
            c.claude_args
                .allowed_tools
                .contains(&"Write(./**)".to_string())
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("planbot.toml");
        std::fs::write(
            &file,
            "max_turns = 5\nstate_dir = \"/from/file\"\nphases = [\"a\", \"b?\"]\n",
        )
        .unwrap();
        let c = Config::from_sources(
            Some(&file),
            &env(&[
                ("PLANBOT_MAX_TURNS", "7"),
                ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ]),
        )
        .unwrap();
        assert_eq!(c.max_turns, 7);
        assert_eq!(c.state_dir, PathBuf::from("/from/file"));
        assert_eq!(c.phases.len(), 2);
        assert!(c.phases[1].optional);
        assert_eq!(format!("{:?}", c.telegram_token), "Some(***)");
        assert!(!format!("{c:?}").contains("123:abc"));
        // The file is found through PLANBOT_CONFIG too.
        let c = Config::from_sources(None, &env(&[("PLANBOT_CONFIG", file.to_str().unwrap())]))
            .unwrap();
        assert_eq!(c.max_turns, 5);
    }

    #[test]
    fn errors_name_the_setting() {
        let cases = [
            ("PLANBOT_MAX_TURNS", "lots"),
            ("PLANBOT_MAX_TURNS", "0"),
            ("PLANBOT_PERMISSION_MODE", "yolo"),
            ("PLANBOT_ALLOWED_USERS", "telegram"),
            ("PLANBOT_PHASES", "a,../b"),
            ("TELEGRAM_API_URL", "ftp://x"),
            ("PLANBOT_MAX_BUDGET_USD", "-1"),
        ];
        for (name, value) in cases {
            let err = Config::from_sources(None, &env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("planbot.toml");
        std::fs::write(&file, "max_turn = 5\n").unwrap();
        let err = Config::from_sources(Some(&file), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_turn"), "{err}");
    }

    #[test]
    fn tools_that_reach_outside_the_workspace_need_the_unsafe_switch() {
        for (name, value) in [
            ("PLANBOT_ALLOWED_TOOLS", "Read,Edit(./**)"),
            ("PLANBOT_ALLOWED_TOOLS", "Read(./**),Bash"),
            ("PLANBOT_ALLOWED_TOOLS", "WebFetch"),
            ("PLANBOT_PATH_GUARD", "false"),
            ("PLANBOT_WEBFETCH_DOMAINS", "evil.com/path"),
            ("PLANBOT_SANDBOX", "maybe"),
        ] {
            let err = Config::from_sources(None, &env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
        }
        let c = Config::from_sources(
            None,
            &env(&[
                ("PLANBOT_ALLOWED_TOOLS", "Read,Bash"),
                ("PLANBOT_UNSAFE_TOOLS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.unsafe_choices(), ["Read", "Bash"]);
        let c =
            Config::from_sources(None, &env(&[("PLANBOT_WEBFETCH_DOMAINS", "docs.rs")])).unwrap();
        assert!(c.unsafe_choices().is_empty());
        assert!(
            c.common_args(None)
                .allowed_tools
                .contains(&"WebFetch(domain:docs.rs)".into())
        );
    }

    #[test]
    fn new_settings_are_checked_and_name_themselves() {
        for (vars, named) in [
            (
                vec![("TELEGRAM_WEBHOOK_URL", "https://bot.example/hook")],
                "TELEGRAM_WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("TELEGRAM_WEBHOOK_URL", "https://bot.example/hook"),
                    ("TELEGRAM_WEBHOOK_SECRET", "has space"),
                ],
                "TELEGRAM_WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("TELEGRAM_WEBHOOK_URL", "ftp://bot.example/hook"),
                    ("TELEGRAM_WEBHOOK_SECRET", "ok"),
                ],
                "TELEGRAM_WEBHOOK_URL",
            ),
            (
                vec![("PLANBOT_HTTP_ADDR", "everywhere")],
                "PLANBOT_HTTP_ADDR",
            ),
            (
                vec![("PLANBOT_DATABASE_URL", "postgres://u:pw@h:notaport/db")],
                "PLANBOT_DATABASE_URL",
            ),
            (
                vec![("PLANBOT_APPROVABLE_TOOLS", "WebFetch,Bash")],
                "PLANBOT_APPROVABLE_TOOLS",
            ),
            (vec![("PLANBOT_APPROVERS", "telegram")], "PLANBOT_APPROVERS"),
            (
                vec![("PLANBOT_APPROVAL_TIMEOUT_SECS", "1")],
                "PLANBOT_APPROVAL_TIMEOUT_SECS",
            ),
            (
                vec![("PLANBOT_MAX_ATTACHMENT_MB", "0")],
                "PLANBOT_MAX_ATTACHMENT_MB",
            ),
        ] {
            let err = Config::from_sources(None, &env(&vars))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(named), "{vars:?}: {err}");
            assert!(
                !err.contains("pw@"),
                "the database password was shown: {err}"
            );
        }
        let c = Config::from_sources(
            None,
            &env(&[
                ("PLANBOT_DATABASE_URL", "postgres://u:db-password-1@h/db"),
                ("TELEGRAM_WEBHOOK_SECRET", "hook-secret-99"),
            ]),
        )
        .unwrap();
        let secrets: Vec<&str> = c.secret_values.iter().map(|s| s.expose()).collect();
        assert!(secrets.contains(&"postgres://u:db-password-1@h/db"));
        assert!(secrets.contains(&"hook-secret-99"));
        assert!(secrets.contains(&"db-password-1"));
        assert_eq!(c.approvable_tools, ["WebFetch"]);
        assert_eq!(c.http_addr.port(), 8080);
    }

    #[test]
    fn tokens_come_from_files_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "123:from-file\n").unwrap();
        let path = file.to_str().unwrap();
        let c = Config::from_sources(None, &env(&[("TELEGRAM_BOT_TOKEN_FILE", path)])).unwrap();
        assert_eq!(c.telegram_token.as_ref().unwrap().expose(), "123:from-file");
        assert_eq!(c.secret_files, std::slice::from_ref(&file));
        let both = env(&[
            ("TELEGRAM_BOT_TOKEN_FILE", path),
            ("TELEGRAM_BOT_TOKEN", "x"),
        ]);
        assert!(Config::from_sources(None, &both).is_err());
        std::fs::write(dir.path().join("discord-token"), "discord-from-credentials").unwrap();
        let creds = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        let c = Config::from_sources(None, &creds).unwrap();
        assert_eq!(
            c.discord_token.unwrap().expose(),
            "discord-from-credentials"
        );
        let missing = env(&[("DISCORD_TOKEN_FILE", "/nonexistent/token")]);
        let err = Config::from_sources(None, &missing).unwrap_err();
        assert!(err.to_string().starts_with("DISCORD_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn the_child_environment_is_an_allowlist_and_its_debug_shows_no_value() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("PATH", "/bin"),
                ("TELEGRAM_BOT_TOKEN", "123:abc"),
                ("ANTHROPIC_API_KEY", "sk-ant-secret-value"),
                ("CLAUDECODE", "1"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        let names: Vec<&String> = c.child_environment.0.keys().collect();
        assert_eq!(
            names,
            [
                "ANTHROPIC_API_KEY",
                "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB",
                "PATH"
            ]
        );
        assert!(!format!("{c:?}").contains("sk-ant-secret-value"));
        assert_eq!(
            c.secret_values.len(),
            2,
            "the token and the API key are scrubbed"
        );
    }

    #[test]
    fn numbers_that_would_break_planbot_are_refused_by_name() {
        let cases = [
            (
                "PLANBOT_PROGRESS_INTERVAL_MS",
                "0",
                "progress_interval_ms = 0",
            ),
            (
                "PLANBOT_TURN_TIMEOUT_SECS",
                "18446744073709551615",
                "turn_timeout_secs = 18446744073709551615",
            ),
            ("PLANBOT_IDLE_TIMEOUT_SECS", "0", "idle_timeout_secs = 0"),
            (
                "PLANBOT_MAX_CONCURRENT_RUNS",
                "9999999999999",
                "max_concurrent_runs = 9999999999999",
            ),
            (
                "PLANBOT_SHUTDOWN_GRACE_SECS",
                "18446744073709551615",
                "shutdown_grace_secs = 18446744073709551615",
            ),
            ("PLANBOT_PLAN_BUDGET_USD", "NaN", "plan_budget_usd = nan"),
            (
                "PLANBOT_USER_DAILY_BUDGET_USD",
                "-5",
                "user_daily_budget_usd = -5.0",
            ),
            ("PLANBOT_MAX_BUDGET_USD", "inf", "max_budget_usd = inf"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("planbot.toml");
        for (name, value, toml_line) in cases {
            let err = Config::from_sources(None, &env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={value}: {err}");
            std::fs::write(&file, format!("{toml_line}\n")).unwrap();
            let err = Config::from_sources(Some(&file), &env(&[])).unwrap_err();
            let key = toml_line.split(' ').next().unwrap();
            assert!(
                err.to_string()
                    .starts_with(&format!("{}: {key}:", file.display())),
                "{toml_line}: {err}"
            );
        }
    }
}
