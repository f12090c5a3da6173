//! Contract tests: the real Claude Code CLI (the pinned 2.1.197 and the newest, installed by
//! `scripts/install-claude-cli.sh`) against the stand-in Messages API, driven by the planner
//! `planbot run` builds from its configuration: the production argv, path guard and sandbox.
//! Plain `cargo test` skips them with a message when the CLI is absent; `.ci/run` sets
//! `PLANBOT_REQUIRE_CONTRACT=1` so that they must run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use planbot::claude::{RunnerConfig, TurnStatus};
use planbot::config::Config;
use planbot::planning::{PhaseStatus, Planner, PlanningSession, Prompts, ReplyOutcome};
use planbot::walls::Walls;
use tokio_util::sync::CancellationToken;

use crate::messages_api::MessagesApi;

/// The CLI version the fixtures were recorded from; the newest published one is tested too.
pub const CLI_VERSION: &str = "2.1.197";

/// One installed Claude Code CLI.
#[derive(Debug, Clone)]
pub struct Cli {
    pub path: PathBuf,
    /// `pinned` or `newest`, for messages.
    pub version: &'static str,
}

/// The pinned and the newest CLI: `PLANBOT_REAL_CLAUDE` and `PLANBOT_REAL_CLAUDE_LATEST`, or the
/// install script's caches. Empty (after saying so) when none is installed and the tests may skip;
/// with `PLANBOT_REQUIRE_CONTRACT` both must be there.
pub fn real_clis(test: &str) -> Vec<Cli> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = |label: &str| {
        std::env::var_os("PLANBOT_CLI_CACHE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/planbot"))
            .join(format!("claude-code-{label}"))
            .join("node_modules/@anthropic-ai/claude-code-linux-x64/claude")
    };
    let find = |var: &str, label: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| Some(cache(label)).filter(|p| p.is_file()))
    };
    let clis: Vec<Cli> = [
        ("pinned", find("PLANBOT_REAL_CLAUDE", CLI_VERSION)),
        ("newest", find("PLANBOT_REAL_CLAUDE_LATEST", "latest")),
    ]
    .into_iter()
    .filter_map(|(version, path)| path.map(|path| Cli { path, version }))
    .collect();
    if clis.len() < 2 {
        if std::env::var_os("PLANBOT_REQUIRE_CONTRACT").is_some() {
            panic!(
                "{test}: the pinned and the newest Claude Code CLI are required (PLANBOT_REQUIRE_CONTRACT) but only {clis:?} are installed; run scripts/install-claude-cli.sh {CLI_VERSION} and scripts/install-claude-cli.sh latest"
            );
        }
        eprintln!(
            "SKIPPED {test} for a missing CLI: {} of 2 installed (scripts/install-claude-cli.sh)",
            clis.len()
        );
    }
    clis
}

/// The real CLI behind a launcher that points it at the stand-in API with a throwaway HOME.
pub struct RealClaude {
    pub home: tempfile::TempDir,
    pub api: MessagesApi,
    /// `pinned` or `newest`.
    pub version: &'static str,
    /// The CLI's own binary, which the launcher runs.
    pub cli: PathBuf,
}

impl RealClaude {
    /// One per installed CLI (pinned and newest); see [`real_clis`].
    pub async fn all(test: &str) -> Vec<RealClaude> {
        let mut all = Vec::new();
        for cli in real_clis(test) {
            let mut claude = RealClaude::start(&cli.path).await;
            claude.version = cli.version;
            all.push(claude);
        }
        all
    }

    async fn start(cli: &Path) -> RealClaude {
        let api = MessagesApi::start().await;
        let home = tempfile::tempdir().unwrap();
        let launcher = home.path().join("claude");
        std::fs::write(
            &launcher,
            format!(
                "#!/bin/sh\nexport HOME='{home}' ANTHROPIC_BASE_URL='{url}' ANTHROPIC_API_KEY=sk-standin \
                 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=0 DISABLE_AUTOUPDATER=1\n\
                 exec '{cli}' \"$@\"\n",
                home = home.path().display(),
                url = api.url(),
                cli = cli.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        RealClaude {
            home,
            api,
            version: "",
            cli: cli.to_path_buf(),
        }
    }

    /// Lets `WebFetch` reach `page`: its certificate trusted, and no check of the domain with
    /// claude.ai first (unreachable here; `skipWebFetchPreflight` in the user's settings).
    pub fn allow_web(&self, page: &crate::web_page::WebPage) {
        let settings = self.home.path().join(".claude");
        std::fs::create_dir_all(&settings).unwrap();
        std::fs::write(
            settings.join("settings.json"),
            r#"{"skipWebFetchPreflight": true}"#,
        )
        .unwrap();
        let launcher = std::fs::read_to_string(self.launcher()).unwrap();
        let trusted = launcher.replacen(
            "#!/bin/sh\n",
            &format!(
                "#!/bin/sh\nexport NODE_EXTRA_CA_CERTS='{}'\n",
                page.cert.display()
            ),
            1,
        );
        std::fs::write(self.launcher(), trusted).unwrap();
    }

    pub fn launcher(&self) -> PathBuf {
        self.home.path().join("claude")
    }

    /// Installs a skill in the throwaway HOME, as gstack would.
    pub fn install_skill(&self, name: &str, body: &str) {
        let dir = self.home.path().join(".claude/skills").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("SKILL.md"),
            format!("---\nname: {name}\ndescription: {body}\n---\n\n{body}\n"),
        )
        .unwrap();
    }

    /// A plan on the planner `planbot run` builds from its configuration (`settings` on top of
    /// the defaults): the production argv, path guard and sandbox, on this CLI.
    pub async fn session(&self, settings: &[(&str, &str)]) -> PlanningSession {
        self.session_with(settings, |_| {}).await
    }

    /// [`RealClaude::session`] with the runner's configuration changed by `adjust`.
    pub async fn session_with(
        &self,
        settings: &[(&str, &str)],
        adjust: impl FnOnce(&mut RunnerConfig),
    ) -> PlanningSession {
        let planner = self.planner(settings, adjust).await;
        let entry = planner
            .new_plan(
                "console",
                "local",
                "todo-app",
                "Plan a todo app for families",
            )
            .unwrap();
        PlanningSession::new(planner, entry)
    }

    /// The planner `planbot run` builds from its configuration (`settings` on top of the
    /// defaults), with the runner's configuration changed by `adjust`.
    pub async fn planner(
        &self,
        settings: &[(&str, &str)],
        adjust: impl FnOnce(&mut RunnerConfig),
    ) -> Planner {
        let root = self.home.path();
        // The CLI's directory on PATH, as an installed CLI is: a sandboxed turn may read it.
        let cli_dir = self.cli.parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(cli_dir).chain(std::env::split_paths(&path)))
                .unwrap();
        let mut env = HashMap::from([("PATH".to_string(), path.to_string_lossy().into_owned())]);
        env.insert("HOME".into(), root.display().to_string());
        env.insert(
            "PLANBOT_CLAUDE_BIN".into(),
            self.launcher().display().to_string(),
        );
        env.insert(
            "PLANBOT_STATE_DIR".into(),
            root.join("state").display().to_string(),
        );
        env.insert(
            "PLANBOT_WORKSPACE_DIR".into(),
            root.join("workspace").display().to_string(),
        );
        env.insert("PLANBOT_RETRY_DELAY_MS".into(), "10".into());
        env.insert("PLANBOT_TURN_TIMEOUT_SECS".into(), "120".into());
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_sources(None, &env).unwrap();
        let cli = planbot::walls::cli_version(&config).await;
        let planbot = PathBuf::from(env!("CARGO_BIN_EXE_planbot"));
        let walls = Walls::raise_for(&config, &cli, Ok(planbot)).await.unwrap();
        assert!(
            walls.guard.is_some(),
            "the path guard runs, as in production"
        );
        let mut runner = config.runner_config();
        adjust(&mut runner);
        planbot::app::planner_for(&config, &walls, Prompts::default(), runner)
    }

    /// The user texts of the conversational requests, in order.
    pub fn conversations(&self) -> Vec<Vec<serde_json::Value>> {
        self.api
            .seen()
            .into_iter()
            .filter(|s| s.body["tools"].is_array())
            .map(|s| s.body["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

#[tokio::test]
async fn a_phase_starts_with_its_skill_and_a_reply_resumes_it() {
    for claude in RealClaude::all("a_phase_starts_with_its_skill_and_a_reply_resumes_it").await {
        claude.install_skill("office-hours", "Ask about the product.");
        let mut plan = claude.session(&[]).await;
        let cancel = CancellationToken::new();
        let reply = plan.start_phase(&cancel, &mut |_| {}).await;
        assert_eq!(
            reply.outcome,
            ReplyOutcome::Answered(PhaseStatus::NeedsInput),
            "{reply:?}"
        );
        assert!(
            reply.text.contains("reply 1 in this session")
                && reply.text.contains("Ask about the product."),
            "{}",
            reply.text
        );
        assert!(!reply.text.contains("PHASE_STATUS"));
        assert!(plan.state.missing_skills.is_empty());
        let id = plan.state.session_id.clone().expect("the CLI's session id");

        let reply = plan
            .respond("Families with kids", &cancel, &mut |_| {})
            .await;
        assert!(
            reply.text.contains("reply 2 in this session"),
            "the resumed session saw the earlier turn: {}",
            reply.text
        );
        assert!(reply.text.contains("Families with kids"));
        assert_eq!(plan.state.session_id.as_deref(), Some(id.as_str()));
        let seen: Vec<_> = claude
            .api
            .seen()
            .into_iter()
            .filter(|s| s.body["tools"].is_array())
            .collect();
        let last = seen.last().unwrap();
        let offered: Vec<&str> = last.body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        // The production tools (`--tools`), not the CLI's default set.
        assert!(
            offered.contains(&"Write")
                && offered.contains(&"WebFetch")
                && !offered.contains(&"Bash"),
            "{offered:?}"
        );
        assert!(
            last.body["messages"].as_array().unwrap().len() >= 3,
            "the resumed request carries the earlier turn"
        );
        assert_eq!(last.session_header.as_deref(), Some(id.as_str()));
        assert!(plan.state.total_cost_usd >= 0.0);
    }
}

/// Failover between replicas: a session one replica started is resumed by another that has
/// its own home but shares the Claude config dir (`CLAUDE_CONFIG_DIR`) and the workspaces' path;
/// without the shared config dir the other replica cannot find it and starts the phase again.
#[tokio::test]
async fn another_replica_resumes_a_session_through_the_shared_config_dir() {
    for claude in RealClaude::all("another_replica_resumes_a_session").await {
        for shared in [true, false] {
            let config_dir = claude.home.path().join(format!("volume-{shared}/claude"));
            let config_dir = config_dir.to_str().unwrap();
            let workspace = claude
                .home
                .path()
                .join(format!("volume-{shared}/workspace"));
            let workspace = workspace.to_str().unwrap();
            let mut first = vec![("PLANBOT_WORKSPACE_DIR", workspace)];
            if shared {
                first.push(("CLAUDE_CONFIG_DIR", config_dir));
            }
            let mut plan = claude.session(&first).await;
            let cancel = CancellationToken::new();
            let reply = plan.start_phase(&cancel, &mut |_| {}).await;
            assert!(reply.is_answered(), "{reply:?}");
            let id = plan.state.session_id.clone().expect("a session");
            // The other replica: its own home, state dir and launcher.
            let other = tempfile::tempdir().unwrap();
            let home = other.path().display().to_string();
            let launcher = other.path().join("claude");
            let script = std::fs::read_to_string(claude.launcher())
                .unwrap()
                .replace(&claude.home.path().display().to_string(), &home);
            std::fs::write(&launcher, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
            let (state, launcher) = (
                other.path().join("state").display().to_string(),
                launcher.display().to_string(),
            );
            let mut second = vec![
                ("HOME", home.as_str()),
                ("PLANBOT_STATE_DIR", state.as_str()),
                ("PLANBOT_CLAUDE_BIN", launcher.as_str()),
            ];
            second.extend_from_slice(&first);
            let planner = claude.planner(&second, |_| {}).await;
            let mut taken = PlanningSession::new(planner, plan.state.clone());
            let reply = taken
                .respond("Families with kids", &cancel, &mut |_| {})
                .await;
            let context = format!("CLI {} with shared config dir {shared}", claude.version);
            assert!(reply.is_answered(), "{context}: {reply:?}");
            if shared {
                assert!(
                    reply.text.contains("reply 2 in this session"),
                    "{context}: the earlier turn was seen: {}",
                    reply.text
                );
                assert_eq!(taken.state.session_id.as_deref(), Some(id.as_str()));
            } else {
                assert!(
                    reply
                        .notices
                        .iter()
                        .any(|n| n.contains("restarted the phase")),
                    "{context}: {reply:?}"
                );
                assert_ne!(taken.state.session_id.as_deref(), Some(id.as_str()));
            }
        }
    }
}

#[tokio::test]
async fn a_missing_skill_falls_back_to_the_built_in_prompt() {
    for claude in RealClaude::all("a_missing_skill_falls_back_to_the_built_in_prompt").await {
        let mut plan = claude.session(&[]).await;
        let reply = plan
            .start_phase(&CancellationToken::new(), &mut |_| {})
            .await;
        assert!(reply.is_answered(), "{reply:?}");
        assert_eq!(plan.state.missing_skills, ["office-hours"]);
        assert!(reply.notices[0].contains("not installed"));
        assert!(
            reply.text.contains("Run an \"office hours\" session"),
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn running_out_of_turns_is_retried_once_and_ends_answered() {
    for claude in RealClaude::all("running_out_of_turns_is_retried_once_and_ends_answered").await {
        claude.install_skill("office-hours", "Ask about the product.");
        let mut plan = claude.session(&[("PLANBOT_MAX_TURNS", "3")]).await;
        let cancel = CancellationToken::new();
        plan.start_phase(&cancel, &mut |_| {}).await;
        let id = plan.state.session_id.clone().unwrap();
        let reply = plan
            .respond("Please keep digging", &cancel, &mut |_| {})
            .await;
        assert!(reply.is_answered(), "{reply:?}");
        // The pinned CLI stops at --max-turns and planbot resumes it once; the newest (2.1.332)
        // measured here lets this turn's five tool calls run to the answer.
        if claude.version == "pinned" {
            assert!(
                reply.text.contains("Continue where you stopped"),
                "{}",
                reply.text
            );
        } else {
            assert!(reply.text.contains("keep digging"), "{}", reply.text);
        }
        assert_eq!(plan.state.session_id.as_deref(), Some(id.as_str()));
    }
}

#[tokio::test]
async fn an_overloaded_api_gets_one_retry() {
    for claude in RealClaude::all("an_overloaded_api_gets_one_retry").await {
        claude.install_skill("office-hours", "Ask about the product.");
        let mut plan = claude.session(&[]).await;
        let cancel = CancellationToken::new();
        plan.start_phase(&cancel, &mut |_| {}).await;
        let reply = plan.respond("overload please", &cancel, &mut |_| {}).await;
        assert!(reply.is_answered(), "{reply:?}");
        let tries = claude
            .conversations()
            .iter()
            .filter(|m| {
                m.last()
                    .is_some_and(|l| l.to_string().contains("overload please"))
            })
            .count();
        assert_eq!(tries, 2, "one failed request and one retry");
    }
}

#[tokio::test]
async fn a_lost_session_is_reported_by_the_real_cli() {
    for claude in RealClaude::all("a_lost_session_is_reported_by_the_real_cli").await {
        claude.install_skill("office-hours", "Ask about the product.");
        let mut plan = claude.session(&[]).await;
        let cancel = CancellationToken::new();
        plan.start_phase(&cancel, &mut |_| {}).await;
        plan.state.session_id = Some("00000000-0000-4000-8000-000000000000".into());
        let reply = plan.respond("Still there?", &cancel, &mut |_| {}).await;
        assert!(reply.is_answered(), "{reply:?}");
        assert!(
            reply
                .notices
                .iter()
                .any(|n| n.contains("restarted the phase"))
        );
        assert_ne!(
            plan.state.session_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000000")
        );
        assert!(!matches!(
            reply.outcome,
            ReplyOutcome::Failed(TurnStatus::ResumeNotFound)
        ));
    }
}

#[tokio::test]
async fn a_piped_console_session_with_the_real_cli() {
    for claude in RealClaude::all("a_piped_console_session_with_the_real_cli").await {
        claude.install_skill("office-hours", "Ask about the product.");
        let dir = tempfile::tempdir().unwrap();
        let launcher = claude.launcher();
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                crate::console::console(
                    &dir,
                    &launcher,
                    crate::console::SESSION,
                    &[("PLANBOT_RETRY_DELAY_MS", "10")],
                )
            }
        })
        .await
        .unwrap();
        let transcript = String::from_utf8_lossy(&out.stdout);
        for piece in [
            "Planning `todo-app`",
            "reply 1 in this session",
            "You said: '<user_message>\nParents and kids",
            "reply 3 in this session",
            "/1 Continue to /plan-ceo-review  /2 Finalize  /3 Cancel",
            "plan-ceo-review skill is not installed",
            "✅ Plan `todo-app` finalized",
        ] {
            assert!(
                transcript.contains(piece),
                "missing {piece:?} in:\n{transcript}"
            );
        }
        let plan =
            std::fs::read_to_string(dir.path().join("workspace/todo-app/final-plan.md")).unwrap();
        assert!(plan.contains("We are done planning `todo-app`"), "{plan}");
        assert!(dir.path().join("workspace/todo-app/plan.json").is_file());
    }
}

#[tokio::test]
async fn a_turn_over_its_budget_stops_with_the_reason() {
    for claude in RealClaude::all("a_turn_over_its_budget_stops_with_the_reason").await {
        claude.install_skill("office-hours", "Ask about the product.");
        // Each stand-in answer costs about $0.0003 at the default model's prices.
        let mut plan = claude
            .session(&[("PLANBOT_MAX_BUDGET_USD", "0.0001")])
            .await;
        let cancel = CancellationToken::new();
        plan.start_phase(&cancel, &mut |_| {}).await;
        let reply = plan
            .respond("Please keep digging", &cancel, &mut |_| {})
            .await;
        assert_eq!(
            reply.outcome,
            ReplyOutcome::Failed(TurnStatus::BudgetExceeded),
            "{} CLI: {reply:?}",
            claude.version
        );
        assert!(
            reply.text.contains("PLANBOT_MAX_BUDGET_USD"),
            "{}",
            reply.text
        );
        let digging = claude
            .conversations()
            .iter()
            .filter(|m| m.iter().any(|x| x.to_string().contains("keep digging")))
            .count();
        assert!(digging < 5, "stopped before the five tool calls: {digging}");
    }
}

#[tokio::test]
async fn a_cancelled_turn_ends_on_sigint_and_its_session_resumes() {
    for claude in RealClaude::all("a_cancelled_turn_ends_on_sigint_and_its_session_resumes").await {
        claude.install_skill("office-hours", "Ask about the product.");
        // SIGKILL follows SIGINT only after ten minutes: the CLI must end on SIGINT.
        let mut plan = claude
            .session_with(&[], |runner| runner.kill_grace = Duration::from_secs(600))
            .await;
        let cancel = CancellationToken::new();
        plan.start_phase(&cancel, &mut |_| {}).await;
        let id = plan.state.session_id.clone().unwrap();
        let asked = claude.api.seen().len();
        let stop = CancellationToken::new();
        // Cancelled while the CLI waits for the (hanging) model.
        let stopper = async {
            crate::wait::wait_until(
                "the hanging request",
                60,
                || claude.api.seen().len() > asked,
                String::new,
            )
            .await;
            stop.cancel();
            Instant::now()
        };
        let mut quiet = |_| {};
        let (reply, cancelled) =
            tokio::join!(plan.respond("hang please", &stop, &mut quiet), stopper);
        let ended = cancelled.elapsed();
        assert_eq!(
            reply.outcome,
            ReplyOutcome::Cancelled,
            "{} CLI: {reply:?}",
            claude.version
        );
        assert_eq!(
            processes_in(claude.home.path()),
            0,
            "the turn's processes are gone"
        );
        assert!(
            ended < Duration::from_secs(60),
            "{} CLI: ended by SIGINT, not by the SIGKILL ten minutes later ({ended:?})",
            claude.version
        );
        // The interrupted session is intact: the next message resumes it.
        let reply = plan.respond("Still with me?", &cancel, &mut |_| {}).await;
        assert!(reply.is_answered(), "{} CLI: {reply:?}", claude.version);
        assert!(reply.text.contains("Still with me?"), "{}", reply.text);
        assert_eq!(plan.state.session_id.as_deref(), Some(id.as_str()));
    }
}

/// How many processes work in a directory under `root`.
fn processes_in(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .filter(|cwd| cwd.starts_with(root))
        .count()
}
