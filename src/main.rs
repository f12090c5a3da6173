//! The `planbot` command: parse arguments, load config, start tracing, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// planbot: plan a product with Claude Code from Telegram, Discord or a terminal.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// A planbot.toml (also PLANBOT_CONFIG); the environment overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every front end whose token is set (TELEGRAM_BOT_TOKEN, DISCORD_TOKEN).
    Run,
    /// Plan in this terminal: no bot token needed.
    Console,
    /// List the plans in progress (planning.json, or PostgreSQL).
    Sessions,
    /// Copy the plans of planning.json into the PostgreSQL database of PLANBOT_DATABASE_URL
    /// (an empty one; planbot stopped).
    MigrateState {
        /// Where to: `postgres`.
        #[arg(long, value_parser = ["postgres"])]
        to: String,
    },
    /// Check the configuration, claude, the state dir, the agent's walls and the phase skills;
    /// non-zero on a problem.
    Check {
        /// Check a planbot that is running (a health check): its state dir must be held.
        #[arg(long)]
        running: bool,
    },
    /// Hooks the Claude Code CLI runs; not for people.
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: Hook,
    },
}

#[derive(Subcommand)]
enum Hook {
    /// The PreToolUse hook that keeps every tool call inside the turn's workspace.
    PathGuard {
        #[arg(long)]
        workspace: PathBuf,
        /// A tool whose calls the user approves (asked about unless allowed below).
        #[arg(long)]
        approvable: Vec<String>,
        /// An allowance of the plan: `WebFetch(domain:<host>)` or a tool's name.
        #[arg(long)]
        allow: Vec<String>,
        /// The one call the user allowed once (`{"tool":…,"input":…}`).
        #[arg(long)]
        allow_call: Option<String>,
        /// The one call the user denied.
        #[arg(long)]
        deny_call: Option<String>,
    },
}

fn main() -> ExitCode {
    // Before anything else: no process of the same user (an agent among them) may read planbot's
    // memory or /proc/<pid>/environ. `exec` resets this for the children.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("planbot: could not make the process undumpable: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    // The hook runs once per tool call: no configuration, no tracing, no runtime.
    if let Command::Hook { hook } = cli.command {
        return path_guard(hook);
    }
    let config = match planbot::config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("planbot: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let quiet = matches!(cli.command, Command::Console);
    planbot::telemetry::init(quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("planbot: could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli.command, config));
    // A blocking read of stdin may still be pending; it must not keep planbot from exiting.
    runtime.shutdown_background();
    code
}

/// `planbot hook path-guard`: one tool call judged.
fn path_guard(hook: Hook) -> ExitCode {
    let Hook::PathGuard {
        workspace,
        approvable,
        allow,
        allow_call,
        deny_call,
    } = hook;
    let approvals = planbot::claude::approval::Approvals::from_hook_args(
        approvable,
        allow,
        allow_call.as_deref(),
        deny_call.as_deref(),
    );
    ExitCode::from(planbot::claude::guard::run(&workspace, &approvals) as u8)
}

/// Runs a command with its configuration; what it printed went to stdout, errors to stderr.
async fn run(command: Command, config: planbot::config::Config) -> ExitCode {
    let result = match command {
        Command::Console => {
            let (interrupts, shutdown) = planbot::shutdown::console_signals();
            planbot::app::run_console(config, interrupts, shutdown).await
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            planbot::shutdown::cancel_on_signal(shutdown.clone());
            planbot::app::run(config, shutdown).await
        }
        Command::MigrateState { .. } => planbot::app::migrate_state(&config)
            .await
            .map(|done| println!("{done}")),
        Command::Sessions => planbot::app::sessions_table(&config)
            .await
            .map(|table| print!("{table}"))
            .map_err(Into::into),
        Command::Hook { .. } => Ok(()),
        Command::Check { running } => {
            let lines = planbot::app::check(&config, running).await;
            for line in &lines {
                println!("{} {}", if line.ok { "ok  " } else { "FAIL" }, line.what);
            }
            return if lines.iter().all(|l| l.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("planbot: {e}");
            ExitCode::FAILURE
        }
    }
}
