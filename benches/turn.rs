//! planbot's own cost per turn around the subprocess (build argv, spawn, feed stdin, read and
//! parse stream-json, classify), against spawning a trivial process: the same fake binary asked
//! for `--version`. Both run here, now, so the ratio holds across machines.
//!
//! `cargo bench --bench turn` (`PLANBOT_BENCH_TURNS` sets the count, default 500).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use planbot::claude::{CommonArgs, Runner, RunnerConfig, TurnArgs, TurnSpec, build_args, classify};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-cli/start-success.jsonl");
    // SAFETY: set before any thread exists; the fake reads it to replay a recorded turn.
    unsafe { std::env::set_var("FAKE_CLAUDE_REPLAY", &fixture) };
    let fake = PathBuf::from(env!("CARGO_BIN_EXE_planbot-fake-claude"));
    let turns: usize = std::env::var("PLANBOT_BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cwd = tempfile::tempdir().expect("temp dir");

    let mut baseline = Vec::with_capacity(turns);
    let mut turn = Vec::with_capacity(turns);
    let runner = Runner::new(RunnerConfig {
        bin: fake.clone(),
        ..RunnerConfig::default()
    });
    let common = CommonArgs::default();
    rt.block_on(async {
        for _ in 0..turns {
            // Interleaved, so both see the same machine state.
            let start = Instant::now();
            let status = tokio::process::Command::new(&fake)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .expect("spawn");
            assert!(status.success());
            baseline.push(start.elapsed());

            let start = Instant::now();
            let args = build_args(
                &common,
                &TurnArgs {
                    max_turns: 20,
                    resume: None,
                    system_prompt_file: None,
                },
            );
            let spec = TurnSpec {
                args,
                prompt: "/office-hours a todo app".into(),
                cwd: cwd.path().to_path_buf(),
            };
            let raw = runner
                .run(spec, &CancellationToken::new(), &mut |_| {})
                .await;
            let outcome = classify(&raw);
            turn.push(start.elapsed());
            assert!(matches!(
                outcome.status,
                planbot::claude::TurnStatus::Answered { .. }
            ));
        }
    });
    baseline.sort();
    turn.sort();
    let (b50, b99) = (percentile(&baseline, 0.5), percentile(&baseline, 0.99));
    let (t50, t99) = (percentile(&turn, 0.5), percentile(&turn, 0.99));
    println!("turn overhead over {turns} turns (fake claude replaying a recorded turn)");
    println!("| | median | p99 |");
    println!("|---|---|---|");
    println!("| spawn a trivial process (baseline) | {b50:?} | {b99:?} |");
    println!("| planbot turn: argv, spawn, stdin, parse, classify | {t50:?} | {t99:?} |");
    println!(
        "| ratio | {:.2}x | {:.2}x |",
        t50.as_secs_f64() / b50.as_secs_f64(),
        t99.as_secs_f64() / b99.as_secs_f64()
    );
}
