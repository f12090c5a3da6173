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
    /// List the plans in progress (planning.json).
    Sessions,
    /// Check the configuration, claude, the state dir and the phase skills; non-zero on a problem.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let code = runtime.block_on(async move {
        let result = match cli.command {
            Command::Console => {
                let (interrupts, shutdown) = planbot::shutdown::console_signals();
                planbot::app::run_console(config, interrupts, shutdown).await
            }
            Command::Run => {
                let shutdown = CancellationToken::new();
                planbot::shutdown::cancel_on_signal(shutdown.clone());
                planbot::app::run(config, shutdown).await
            }
            Command::Sessions => match planbot::app::sessions_table(&config) {
                Ok(table) => {
                    print!("{table}");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            },
            Command::Check => {
                let lines = planbot::app::check(&config).await;
                for line in &lines {
                    println!("{} {}", if line.ok { "ok  " } else { "FAIL" }, line.what);
                }
                if lines.iter().all(|l| l.ok) {
                    return ExitCode::SUCCESS;
                }
                return ExitCode::FAILURE;
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("planbot: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // A blocking read of stdin may still be pending; it must not keep planbot from exiting.
    runtime.shutdown_background();
    code
}
