//! What the configuration means for each part of planbot: the agent's tool policy and sandbox,
//! the runner, the arguments of every turn, planning.

use super::*;

impl Config {
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

    /// Whether several planbots may share the database: PostgreSQL, and front ends any number
    /// of planbots can serve together: Telegram by webhook (long polling admits one consumer per
    /// bot), Discord with `DISCORD_SHARDS` (each replica connects its own shards).
    pub fn replicas(&self) -> bool {
        self.database_url.is_some()
            && (self.telegram_token.is_some() || self.discord_token.is_some())
            && (self.telegram_token.is_none() || self.telegram_webhook_url.is_some())
            && (self.discord_token.is_none() || self.discord_shards.is_some())
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
