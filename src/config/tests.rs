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
    let c =
        Config::from_sources(None, &env(&[("PLANBOT_CONFIG", file.to_str().unwrap())])).unwrap();
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
    let c = Config::from_sources(None, &env(&[("PLANBOT_WEBFETCH_DOMAINS", "docs.rs")])).unwrap();
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
        (
            vec![("DISCORD_TOKEN", "t"), ("DISCORD_SHARDS", "2-1/4")],
            "DISCORD_SHARDS",
        ),
        (
            vec![("DISCORD_TOKEN", "t"), ("DISCORD_SHARDS", "4/4")],
            "DISCORD_SHARDS",
        ),
        (
            vec![("DISCORD_TOKEN", "t"), ("DISCORD_SHARDS", "0-1")],
            "DISCORD_SHARDS",
        ),
        (vec![("DISCORD_SHARDS", "0/2")], "DISCORD_SHARDS"),
        (
            vec![("DISCORD_TOKEN", "t"), ("DISCORD_SHARDS", "shared/2")],
            "DISCORD_SHARDS",
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
    // The database URL and the webhook secret too (as a compose or Kubernetes secret mounts
    // them); the password is still known as a secret on its own.
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, "postgres://u:file-password-2@h/db\n").unwrap();
    let hook_file = dir.path().join("hook");
    std::fs::write(&hook_file, "hook-from-file\n").unwrap();
    let c = Config::from_sources(
        None,
        &env(&[
            ("PLANBOT_DATABASE_URL_FILE", url_file.to_str().unwrap()),
            ("TELEGRAM_WEBHOOK_SECRET_FILE", hook_file.to_str().unwrap()),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.database_url.as_ref().unwrap().expose(),
        "postgres://u:file-password-2@h/db"
    );
    assert_eq!(
        c.telegram_webhook_secret.unwrap().expose(),
        "hook-from-file"
    );
    let secrets: Vec<&str> = c.secret_values.iter().map(|s| s.expose()).collect();
    assert!(secrets.contains(&"file-password-2"), "{secrets:?}");
    assert_eq!(c.secret_files, [url_file, hook_file]);
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

#[test]
fn replicas_need_the_database_and_front_ends_several_planbots_can_serve() {
    let db = ("PLANBOT_DATABASE_URL", "postgres://u@h/db");
    let telegram = ("TELEGRAM_BOT_TOKEN", "1:t");
    let webhook = [
        ("TELEGRAM_WEBHOOK_URL", "https://bot.example/hook"),
        ("TELEGRAM_WEBHOOK_SECRET", "s"),
    ];
    let discord = ("DISCORD_TOKEN", "d");
    let shards = ("DISCORD_SHARDS", "1-2/4");
    let replicas =
        |vars: &[(&str, &str)]| Config::from_sources(None, &env(vars)).unwrap().replicas();
    assert!(
        !replicas(&[telegram, webhook[0], webhook[1]]),
        "no database"
    );
    assert!(!replicas(&[db, telegram]), "long polling");
    assert!(replicas(&[db, telegram, webhook[0], webhook[1]]));
    assert!(!replicas(&[db, discord]), "every shard");
    assert!(replicas(&[db, discord, shards]));
    assert!(!replicas(&[db, discord, shards, telegram]), "long polling");
    assert!(replicas(&[
        db, discord, shards, telegram, webhook[0], webhook[1]
    ]));
    assert!(!replicas(&[db]), "no front end");
    let c = Config::from_sources(None, &env(&[discord, shards])).unwrap();
    let parsed = c.discord_shards.unwrap();
    assert_eq!((parsed.first, parsed.last, parsed.total), (1, 2, 4));
    assert_eq!(parsed.to_string(), "1-2/4");
    let one: super::DiscordShards = "3/8".parse().unwrap();
    assert_eq!(
        (one.first, one.last, one.total, one.shared),
        (3, 3, 8, false)
    );
    let leased: super::DiscordShards = "shared/4".parse().unwrap();
    assert_eq!(
        (leased.first, leased.last, leased.total, leased.shared),
        (0, 3, 4, true)
    );
    assert_eq!(leased.to_string(), "shared/4");
    assert!("shared/0".parse::<super::DiscordShards>().is_err());
}
