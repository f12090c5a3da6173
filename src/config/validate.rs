//! The checks a loaded configuration must pass, each error naming its setting.

use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        self.validate_front_ends()
    }

    /// The front ends' and the database's URLs and secrets.
    fn validate_front_ends(&self) -> Result<(), ConfigError> {
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
        if self.discord_shards.is_some() && self.discord_token.is_none() {
            return Err(invalid(
                "DISCORD_SHARDS",
                "is set without DISCORD_TOKEN: the shards are of the Discord bot's gateway",
            ));
        }
        if self.discord_shards.is_some_and(|s| s.shared) && self.database_url.is_none() {
            return Err(invalid(
                "DISCORD_SHARDS",
                "shared/… leases the shards among the replicas in PLANBOT_DATABASE_URL's database, which is not set",
            ));
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
}
