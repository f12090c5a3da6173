//! planbot-bench: planbot's own costs, each against a baseline measured in the same run, with no
//! network and no model. The router, store and planner run in-process exactly as `planbot run`
//! wires them ([`Core`]); `claude` is the fake, replaying a recorded turn of the real CLI; a
//! recording front end stands in for Telegram and Discord.
//!
//! `cargo build --release --bins && target/release/planbot-bench` runs every section, each in a
//! child process of its own (so its memory and its fake's settings are its own); `--smoke` runs
//! them at small sizes, which the test suite does so that this cannot rot. BENCHMARKS.md has the
//! figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod chat_path;
#[allow(dead_code)]
#[path = "../tests/it/fake_telegram.rs"]
mod fake_telegram;
#[allow(dead_code)]
#[path = "../tests/it/messages_api.rs"]
mod messages_api;
mod real_cli;
mod replicas;
#[path = "../tests/it/wait.rs"]
mod wait;

use async_trait::async_trait;
use clap::Parser;
use planbot::app::Core;
use planbot::config::Config;
use planbot::durable::write_durably;
use planbot::planning::state::SessionEntry;
use planbot::router::{
    ChatKey, Inbound, MessageKind, MessageRef, Outbound, Outgoing, Router, SendError,
};
use planbot::store::{State, Store, inspect};
use serde_json::json;

/// Each run of a section (a process of its own), with the section `--only` names it by.
const RUNS: [(&str, &str); 11] = [
    ("overhead", "overhead"),
    ("parallel", "parallel"),
    ("state", "state"),
    ("memory", "memory"),
    ("streaming", "streaming"),
    ("streaming-late", "streaming"),
    ("telegram", "telegram"),
    ("telegram-many", "telegram"),
    ("console", "console"),
    ("real-cli", "real-cli"),
    ("replicas", "replicas"),
];

#[derive(Parser)]
#[command(about = "planbot's benchmarks; see BENCHMARKS.md")]
struct Args {
    /// Small sizes (the test suite's smoke run).
    #[arg(long)]
    smoke: bool,
    /// Sections to run (default: all): overhead, parallel, state, memory, streaming, telegram,
    /// console, real-cli.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The fake `claude` (default: `planbot-fake-claude` beside this binary).
    #[arg(long)]
    fake_claude: Option<PathBuf>,
    /// The `planbot` binary, for its resident memory (default: beside this binary).
    #[arg(long)]
    planbot: Option<PathBuf>,
    /// Internal: run one section in this process.
    #[arg(long, hide = true)]
    section: Option<String>,
}

/// Sizes of a run.
struct Sizes {
    turns: usize,
    chats: usize,
    turn_ms: u64,
    sustain_secs: u64,
    store_sizes: Vec<usize>,
    store_updates: usize,
    stream_turns: usize,
    stream_interval_ms: u64,
    /// Follow-ups typed a second apart in one chat, over the fake Bot API.
    follow_ups: usize,
    /// New chats starting a plan at once, over the fake Bot API.
    burst_chats: usize,
    /// Turns in the real console.
    console_turns: usize,
    /// Follow-ups with the real Claude Code CLI.
    real_turns: usize,
}

impl Sizes {
    fn of(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                turns: 20,
                chats: 8,
                turn_ms: 200,
                sustain_secs: 1,
                store_sizes: vec![10, 100],
                store_updates: 5,
                stream_turns: 2,
                stream_interval_ms: 100,
                follow_ups: 3,
                burst_chats: 3,
                console_turns: 5,
                real_turns: 1,
            }
        } else {
            Sizes {
                turns: 1_000,
                chats: 100,
                turn_ms: 1_000,
                sustain_secs: 10,
                store_sizes: vec![10, 1_000, 10_000],
                store_updates: 30,
                stream_turns: 10,
                stream_interval_ms: 1_500,
                follow_ups: 100,
                burst_chats: 10,
                console_turns: 200,
                real_turns: 20,
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let fake = args
        .fake_claude
        .clone()
        .unwrap_or_else(|| here.join("planbot-fake-claude"));
    let planbot = args.planbot.clone().unwrap_or_else(|| here.join("planbot"));
    let sizes = Sizes::of(args.smoke);
    if let Some(section) = &args.section {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let result = rt.block_on(async {
            match section.as_str() {
                "overhead" => overhead(&sizes, &fake).await,
                "parallel" => parallel(&sizes, &fake).await,
                "state" => state(&sizes).await,
                "memory" => memory(&planbot, &fake),
                "streaming" => streaming(&sizes, &fake, false).await,
                "streaming-late" => streaming(&sizes, &fake, true).await,
                "telegram" => chat_path::follow_ups(&sizes, &planbot, &fake).await,
                "telegram-many" => chat_path::many_chats(&sizes, &planbot, &fake).await,
                "console" => chat_path::console(&sizes, &planbot, &fake).await,
                "real-cli" => real_cli::follow_ups(&sizes, &planbot).await,
                "replicas" => replicas::replicas(&sizes, &planbot, &fake).await,
                other => Err(format!("unknown section {other}")),
            }
        });
        rt.shutdown_background();
        if let Err(e) = result {
            eprintln!("planbot-bench {section}: FAILED: {e}");
            std::process::exit(1);
        }
        return;
    }
    println!(
        "# planbot-bench{}\n",
        if args.smoke { " (smoke)" } else { "" }
    );
    println!("{}\n", machine());
    let stamps = tempfile::tempdir().expect("temp dir");
    let mut failed = false;
    for (section, name) in RUNS {
        if !args.only.is_empty() && !args.only.iter().any(|s| s == name) {
            continue;
        }
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command
            .args(["--section", section])
            .arg("--fake-claude")
            .arg(&fake)
            .arg("--planbot")
            .arg(&planbot);
        if args.smoke {
            command.arg("--smoke");
        }
        section_env(
            &mut command,
            section,
            &sizes,
            &stamps.path().join(format!("{section}.stamps")),
        );
        let status = command.status().expect("run a section");
        failed |= !status.success();
    }
    if failed {
        std::process::exit(1);
    }
}

/// The machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Machine: {cores} cores ({cpu}); state in {} (release build: {}).",
        std::env::temp_dir().display(),
        !cfg!(debug_assertions)
    )
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/claude-cli")
        .join(name)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(ns: f64) -> String {
    format!("{:.2} ms", ns / 1e6)
}

/// One message or edit the router sent: when (unix ns), how meant, with buttons or not, text.
type Sent = (u128, MessageKind, bool, String);

/// What the router sent, per chat.
struct Recorder {
    log: Mutex<HashMap<ChatKey, Vec<Sent>>>,
    /// Bumped on every message, so waiters wake without polling.
    changed: tokio::sync::watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            log: Mutex::new(HashMap::new()),
            changed: tokio::sync::watch::channel(0).0,
            next_id: AtomicU64::new(0),
        }
    }

    fn record(&self, chat: &ChatKey, message: &Outgoing) {
        let at = now_ns();
        if let Ok(mut log) = self.log.lock() {
            log.entry(chat.clone()).or_default().push((
                at,
                message.kind,
                !message.actions.is_empty(),
                message.text.clone(),
            ));
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Times of the replies that ended a turn (they carry the phase's buttons).
    fn turn_replies(&self, chat: &ChatKey) -> Vec<u128> {
        self.log
            .lock()
            .map(|log| {
                log.get(chat)
                    .into_iter()
                    .flatten()
                    .filter(|(_, kind, buttons, _)| *kind == MessageKind::Reply && *buttons)
                    .map(|(at, ..)| *at)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first progress update at or after `after` showing `text`.
    fn progress_showing(&self, chat: &ChatKey, after: u128, text: &str) -> Option<u128> {
        let log = self.log.lock().ok()?;
        log.get(chat)?
            .iter()
            .find(|(at, kind, _, shown)| {
                *at >= after && *kind == MessageKind::Progress && shown.contains(text)
            })
            .map(|(at, ..)| *at)
    }

    /// Waits until `chat` has `count` turn replies; the time of the last.
    async fn wait_replies(&self, chat: &ChatKey, count: usize) -> Result<u128, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut changes = self.changed.subscribe();
        loop {
            let replies = self.turn_replies(chat);
            if replies.len() >= count {
                return Ok(replies[count - 1]);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(format!("{chat}: no reply {count} within 120 s"));
            }
        }
    }
}

#[async_trait]
impl Outbound for Recorder {
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        self.record(chat, &message);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(MessageRef(id.to_string()))
    }

    async fn edit(
        &self,
        chat: &ChatKey,
        _id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        self.record(chat, &message);
        Ok(())
    }
}

/// planbot as `planbot run` wires it, over a recording front end, with state in `dir`.
struct Bench {
    core: Core,
    router: Router,
    out: Arc<Recorder>,
}

impl Bench {
    async fn new(dir: &Path, fake: &Path, settings: &[(&str, String)]) -> Result<Bench, String> {
        // The fake takes its recording from FAKE_CLAUDE_* variables of this process; the
        // sandbox would hide the temp dirs it writes its stamps to.
        let mut env: HashMap<String, String> = std::env::vars().collect();
        env.extend([
            ("PLANBOT_CHILD_ENV".into(), "FAKE_CLAUDE_*".into()),
            ("PLANBOT_SANDBOX".into(), "off".into()),
            ("PLANBOT_CLAUDE_BIN".into(), fake.display().to_string()),
            (
                "PLANBOT_STATE_DIR".into(),
                dir.join("state").display().to_string(),
            ),
            (
                "PLANBOT_WORKSPACE_DIR".into(),
                dir.join("workspace").display().to_string(),
            ),
        ]);
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = Config::from_sources(None, &env).map_err(|e| e.to_string())?;
        let core = Core::build(&config).await.map_err(|e| e.to_string())?;
        let out = Arc::new(Recorder::new());
        let router = core
            .router(&config, vec![("console", out.clone() as Arc<dyn Outbound>)])
            .await;
        Ok(Bench { core, router, out })
    }

    fn chat(i: usize) -> ChatKey {
        ChatKey::new("console", format!("chat-{i}"))
    }

    async fn say(&self, chat: &ChatKey, text: &str) {
        self.router
            .handle(Inbound::from_text(chat.clone(), "local", true, text))
            .await;
    }

    async fn close(self) {
        self.router.shutdown(Duration::from_secs(5)).await;
        self.core.close().await;
    }
}

/// The fake's stamps (see tests/fakes/fake_claude.rs): per pid, what it stamped when.
fn stamps(path: &Path) -> HashMap<u32, HashMap<String, u128>> {
    let mut by_pid: HashMap<u32, HashMap<String, u128>> = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        if let (Some(pid), Some(what), Some(at)) = (parts.next(), parts.next(), parts.next())
            && let (Ok(pid), Ok(at)) = (pid.parse(), at.parse())
        {
            by_pid.entry(pid).or_default().insert(what.to_string(), at);
        }
    }
    by_pid
}

fn stamp_file() -> Result<PathBuf, String> {
    std::env::var_os("FAKE_CLAUDE_STAMP")
        .map(PathBuf::from)
        .ok_or_else(|| "FAKE_CLAUDE_STAMP is not set".to_string())
}

/// Sets the fake's environment for a section's child process.
fn section_env(command: &mut Command, section: &str, sizes: &Sizes, stamp: &Path) {
    let interval = sizes.stream_interval_ms;
    // Fixture, pause after the first text (or before the result), pause before the first text.
    let (file, delay, lead) = match section {
        "parallel" | "telegram-many" | "replicas" => ("start-success.jsonl", sizes.turn_ms, 0),
        "streaming" => ("resume-partial.jsonl", interval * 2, 0),
        "streaming-late" => ("resume-partial.jsonl", interval * 2, interval * 2),
        _ => ("start-success.jsonl", 0, 0),
    };
    command
        .env("FAKE_CLAUDE_REPLAY", fixture(file))
        .env("FAKE_CLAUDE_REPLAY_DELAY_MS", delay.to_string())
        .env("FAKE_CLAUDE_REPLAY_LEAD_MS", lead.to_string())
        .env("FAKE_CLAUDE_STAMP", stamp);
}

/// The baseline of a spawn: the stand-in run as a trivial process (it prints nothing) and
/// reaped, in nanoseconds.
async fn bare_spawn(fake: &Path) -> Result<f64, String> {
    let start = Instant::now();
    let status = tokio::process::Command::new(fake)
        .env("FAKE_CLAUDE_REPLAY", "/dev/null")
        .env_remove("FAKE_CLAUDE_STAMP")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("the baseline process failed".into());
    }
    Ok(start.elapsed().as_nanos() as f64)
}

/// Section 1: inbound to spawn and result to reply, against spawning a trivial process.
async fn overhead(sizes: &Sizes, fake: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bench = Bench::new(dir.path(), fake, &[]).await?;
    let stamp = stamp_file()?;
    let chat = Bench::chat(0);
    bench.say(&chat, "/plan bench-plan a plan to measure").await;
    bench.out.wait_replies(&chat, 1).await?;
    let mut baseline = Vec::new();
    let mut to_spawn = Vec::new();
    let mut to_reply = Vec::new();
    let mut total = Vec::new();
    for i in 0..sizes.turns {
        // Interleaved with the turns, so both see the same machine.
        baseline.push(bare_spawn(fake).await?);

        let _ = std::fs::remove_file(&stamp);
        let sent = now_ns();
        bench.say(&chat, &format!("message {i}")).await;
        let replied = bench.out.wait_replies(&chat, i + 2).await?;
        let stamped = stamps(&stamp);
        let times = stamped.values().next().ok_or("the fake left no stamps")?;
        let (Some(start), Some(result)) = (times.get("start"), times.get("result")) else {
            return Err("the fake's stamps are incomplete".into());
        };
        let spawn = start.saturating_sub(sent) as f64;
        let reply = replied.saturating_sub(*result) as f64;
        to_spawn.push(spawn);
        to_reply.push(reply);
        total.push(spawn + reply);
    }
    bench.close().await;
    let (baseline, to_spawn, to_reply, total) = (
        sorted(baseline),
        sorted(to_spawn),
        sorted(to_reply),
        sorted(total),
    );
    let row = |name: &str, v: &[f64]| {
        println!(
            "| {name} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        )
    };
    println!("## 1. Overhead per turn ({} turns)\n", sizes.turns);
    println!("| | median | p99 |\n|---|---|---|");
    row("spawn a trivial process (baseline)", &baseline);
    row("inbound event → `claude` running", &to_spawn);
    row("`result` line → reply delivered", &to_reply);
    row("planbot's overhead (sum)", &total);
    println!(
        "| overhead / baseline | {:.2}x | {:.2}x |",
        percentile(&total, 0.5) / percentile(&baseline, 0.5),
        percentile(&total, 0.99) / percentile(&baseline, 0.99)
    );
    println!();
    Ok(())
}

/// Resident memory of this process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Sends `/plan` in `chats` chats at once; per chat, how long its reply took (ns); the wall time.
async fn plan_at_once(bench: &Bench, chats: usize) -> Result<(Vec<f64>, f64), String> {
    let start = now_ns();
    for i in 0..chats {
        bench
            .say(&Bench::chat(i), &format!("/plan plan-{i} idea number {i}"))
            .await;
    }
    let mut waits = Vec::new();
    for i in 0..chats {
        let at = bench.out.wait_replies(&Bench::chat(i), 1).await?;
        waits.push(at.saturating_sub(start) as f64);
    }
    let wall = waits.iter().copied().fold(0.0, f64::max);
    Ok((waits, wall))
}

/// Section 2: many chats at once: with a run per chat, and with the default limit (queueing).
async fn parallel(sizes: &Sizes, fake: &Path) -> Result<(), String> {
    let turn = sizes.turn_ms as f64 * 1e6;
    let me = std::process::id();
    let idle = rss_kib(me).unwrap_or(0);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let chats = sizes.chats;
    let bench = Bench::new(
        dir.path(),
        fake,
        &[("PLANBOT_MAX_CONCURRENT_RUNS", chats.to_string())],
    )
    .await?;
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let (Some(rss), Ok(mut p)) = (rss_kib(me), peak.lock()) {
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (_, wall) = plan_at_once(&bench, chats).await?;
    sampler.abort();
    bench.close().await;
    let peak = peak.lock().map(|p| *p).unwrap_or(0);
    println!("## 2. Parallel chats\n");
    println!(
        "{chats} chats send `/plan` at once; the fake `claude` takes {} ms.\n",
        sizes.turn_ms
    );
    println!("| limit | wall time | ideal | ratio |\n|---|---|---|---|");
    println!(
        "| `PLANBOT_MAX_CONCURRENT_RUNS={chats}` | {} | {} | {:.2}x |",
        ms(wall),
        ms(turn),
        wall / turn
    );

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bench = Bench::new(dir.path(), fake, &[]).await?;
    let limit = 4usize;
    let (waits, wall) = plan_at_once(&bench, chats).await?;
    bench.close().await;
    let rounds = chats.div_ceil(limit) as f64;
    let ideal = rounds * turn;
    println!(
        "| default (4) | {} | {} ({} rounds) | {:.2}x |",
        ms(wall),
        ms(ideal),
        rounds,
        wall / ideal
    );
    let waits = sorted(waits);
    // Fair queueing: the k-th chat served waits ceil(k / limit) turns, no more.
    let worst_excess = waits
        .iter()
        .enumerate()
        .map(|(k, w)| w / (((k / limit) + 1) as f64 * turn))
        .fold(0.0, f64::max);
    println!(
        "\nWith the default limit the waits run from {} to {} (median {}); the worst chat waited \
         {worst_excess:.2}x its fair share (its rank's round of {limit} runs).\n",
        ms(waits[0]),
        ms(waits[waits.len() - 1]),
        ms(percentile(&waits, 0.5)),
    );
    println!(
        "Resident memory of this benchmark process: {} before, {} at most during the {chats} \
         parallel turns.",
        mib(idle),
        mib(peak)
    );
    println!();
    Ok(())
}

/// A stored session like a real one mid-plan.
fn entry(i: usize) -> Result<SessionEntry, String> {
    serde_json::from_value(json!({
        "slug": format!("plan-{i}"), "description": "a shared todo list for families with kids",
        "phase": "plan-ceo-review", "phases": ["office-hours", "plan-ceo-review", "plan-eng-review", "plan-design-review"],
        "phases_completed": ["office-hours"], "session_id": "1288cb89-f75c-4533-b092-d687ddcda489",
        "planning_session_id": "7f1c1a5e-3d9a-4a57-9a49-0b8e6c7d1e2f", "adapter": "telegram",
        "channel_id": i.to_string(), "cwd": format!("/srv/planbot/workspace/plan-{i}"), "status": "planning",
        "started_at": "2026-11-21T10:00:00Z", "updated_at": "2026-11-21T10:00:00Z", "turns": 0,
        "total_cost_usd": 0.42, "last_text_excerpt": "x".repeat(200),
        "recap": [{"role": "user", "text": "y".repeat(300)}, {"role": "assistant", "text": "z".repeat(600)}],
    }))
    .map_err(|e| e.to_string())
}

/// A state directory holding `n` sessions.
fn seeded(n: usize) -> Result<(tempfile::TempDir, Vec<u8>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut state = State::default();
    for i in 0..n {
        state.sessions.insert(format!("telegram:{i}"), entry(i)?);
    }
    let bytes = state.to_bytes();
    write_durably(&dir.path().join("planning.json"), &bytes, false).map_err(|e| e.to_string())?;
    Ok((dir, bytes))
}

/// The bytes written to a new file and fsynced: the floor of any durable write.
fn raw_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Section 3: planning.json, an update against a raw durable write; loading; a sustained load.
async fn state(sizes: &Sizes) -> Result<(), String> {
    println!(
        "## 3. State at scale\n\nOne durable update of `planning.json` (acknowledged once its \
         session is appended to `planning.json.journal` and synced) against two baselines \
         measured in the same loop, median of {}: the whole file's bytes written raw to a new file \
         and fsynced (`write` + `fsync`, what the goal is measured against), and the same bytes \
         replaced durably by hand (temp file, fsync, rename, directory fsync: what every update \
         cost before the journal, and what each whole write of the file still costs).\n",
        sizes.store_updates
    );
    println!(
        "| sessions | file size | update | raw `write`+`fsync`, new file | ratio | durable replace by hand | ratio | whole writes |\n|---|---|---|---|---|---|---|---|"
    );
    let mut load = None;
    for &n in &sizes.store_sizes {
        let (dir, bytes) = seeded(n)?;
        let started = Instant::now();
        let (store, _) = Store::open(dir.path()).map_err(|e| e.to_string())?;
        load = Some((n, started.elapsed()));
        let (mut update, mut raw, mut replace) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..sizes.store_updates {
            let start = Instant::now();
            store
                .update("telegram:0", move |e| {
                    if let Some(e) = e {
                        e.turns = k as u32
                    }
                })
                .await
                .map_err(|e| e.to_string())?;
            update.push(start.elapsed().as_nanos() as f64);
            let start = Instant::now();
            raw_write(&dir.path().join(format!("raw-{k}.json")), &bytes)
                .map_err(|e| e.to_string())?;
            raw.push(start.elapsed().as_nanos() as f64);
            let start = Instant::now();
            write_durably(&dir.path().join("replaced.json"), &bytes, false)
                .map_err(|e| e.to_string())?;
            replace.push(start.elapsed().as_nanos() as f64);
        }
        store.close().await;
        let (u, r, d) = (
            percentile(&sorted(update), 0.5),
            percentile(&sorted(raw), 0.5),
            percentile(&sorted(replace), 0.5),
        );
        // The journal is folded into the file once it is as large as the file (256 KiB at
        // least): one whole write per that many updates of one session, besides idle and close.
        let record = bytes.len() / n.max(1);
        let every = bytes.len().max(256 * 1024) / record.max(1);
        println!(
            "| {n} | {:.1} MiB | {} | {} | **{:.2}x** | {} | {:.2}x | 1 per {every} updates |",
            bytes.len() as f64 / 1048576.0,
            ms(u),
            ms(r),
            u / r,
            ms(d),
            u / d
        );
    }
    if let Some((n, took)) = load {
        println!("\nLoading {n} sessions: {took:.1?}.");
    }

    // Sustained: 100 chats, 10 updates a second each, among 1,000 stored sessions.
    let chats = 100usize;
    let (dir, _) = seeded(1_000)?;
    let (store, _) = Store::open(dir.path()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let until = started + Duration::from_secs(sizes.sustain_secs);
    let mut tasks = Vec::new();
    for c in 0..chats {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let (mut acked, mut latencies) = (0u32, Vec::new());
            while Instant::now() < until {
                tick.tick().await;
                let start = Instant::now();
                let done = store
                    .update(&format!("telegram:{c}"), |e| {
                        if let Some(e) = e {
                            e.turns += 1
                        }
                    })
                    .await;
                if done.is_ok() {
                    acked += 1;
                    latencies.push(start.elapsed().as_nanos() as f64);
                }
            }
            (acked, latencies)
        }));
    }
    let mut acked = HashMap::new();
    let mut latencies = Vec::new();
    for (c, task) in tasks.into_iter().enumerate() {
        let (n, l) = task.await.map_err(|e| e.to_string())?;
        acked.insert(format!("telegram:{c}"), n);
        latencies.extend(l);
    }
    let took = started.elapsed();
    store.close().await;
    let (on_disk, _) = inspect(dir.path()).map_err(|e| e.to_string())?;
    let lost: u32 = acked
        .iter()
        .map(|(key, n)| {
            let stored = on_disk.sessions.get(key).map_or(0, |e| e.turns);
            n.saturating_sub(stored)
        })
        .sum();
    let total: u32 = acked.values().sum();
    let latencies = sorted(latencies);
    println!(
        "\nSustained: {chats} chats updating 10 times a second each among 1,000 stored sessions \
         for {took:.1?}: {total} updates acknowledged ({:.0}/s), latency median {} and p99 {}; \
         read back from disk after: {lost} lost.",
        total as f64 / took.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );
    if lost > 0 {
        return Err(format!("{lost} acknowledged updates are not on disk"));
    }
    println!();
    Ok(())
}

/// Resident memory of `planbot console` idle (its input open and silent), in KiB.
fn console_rss(planbot: &Path, fake: &Path, state: &Path) -> Result<u64, String> {
    let mut child = Command::new(planbot)
        .arg("console")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", state)
        .env("PLANBOT_STATE_DIR", state)
        .env("PLANBOT_WORKSPACE_DIR", state.join("workspace"))
        .env("PLANBOT_CLAUDE_BIN", fake)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", planbot.display()))?;
    std::thread::sleep(Duration::from_millis(1500));
    let rss = rss_kib(child.id());
    drop(child.stdin.take());
    let _ = child.wait();
    rss.ok_or_else(|| "planbot console exited early".to_string())
}

/// Section 4: the real binary's resident memory.
fn memory(planbot: &Path, fake: &Path) -> Result<(), String> {
    let (empty, _) = seeded(0)?;
    let (thousand, _) = seeded(1_000)?;
    let idle = console_rss(planbot, fake, empty.path())?;
    let loaded = console_rss(planbot, fake, thousand.path())?;
    println!("## 4. Memory\n");
    println!("| `planbot console`, idle | resident |\n|---|---|");
    println!("| no stored sessions | {} |", mib(idle));
    println!("| 1,000 stored sessions | {} |", mib(loaded));
    println!("\n(During parallel turns: see section 2.)");
    println!();
    Ok(())
}

/// Section 5: from the fake printing its first text to the front end's first progress update
/// showing it; when the text comes at once (the update must wait out the interval since the
/// progress message was posted), and, run `late`, when it comes two intervals into the turn (as
/// a model's usually comes seconds in). The two runs print one table.
async fn streaming(sizes: &Sizes, fake: &Path, late: bool) -> Result<(), String> {
    let interval = sizes.stream_interval_ms;
    let latencies = sorted(stream_latencies(sizes, fake).await?);
    if !late {
        println!("## 5. Streaming ({} turns each)\n", sizes.stream_turns);
        println!(
            "| first text printed | → progress update showing it, median | max | edit interval | max / interval |\n|---|---|---|---|---|"
        );
    }
    let max = latencies[latencies.len() - 1];
    println!(
        "| {} ms into the turn | {} | {} | {interval} ms | {:.2}x |",
        if late { interval * 2 } else { 0 },
        ms(percentile(&latencies, 0.5)),
        ms(max),
        max / (interval as f64 * 1e6)
    );
    if late {
        println!();
    }
    Ok(())
}

async fn stream_latencies(sizes: &Sizes, fake: &Path) -> Result<Vec<f64>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bench = Bench::new(
        dir.path(),
        fake,
        &[(
            "PLANBOT_PROGRESS_INTERVAL_MS",
            sizes.stream_interval_ms.to_string(),
        )],
    )
    .await?;
    let stamp = stamp_file()?;
    let chat = Bench::chat(0);
    bench.say(&chat, "/plan stream-plan a plan to watch").await;
    bench.out.wait_replies(&chat, 1).await?;
    let mut latencies = Vec::new();
    for i in 0..sizes.stream_turns {
        let _ = std::fs::remove_file(&stamp);
        bench.say(&chat, &format!("message {i}")).await;
        bench.out.wait_replies(&chat, i + 2).await?;
        let stamped = stamps(&stamp);
        let text_at = stamped
            .values()
            .find_map(|t| t.get("text").copied())
            .ok_or("the fake stamped no text")?;
        let shown = bench
            .out
            .progress_showing(&chat, text_at, "[fake model]")
            .ok_or("no progress update showed the text")?;
        latencies.push(shown.saturating_sub(text_at) as f64);
    }
    bench.close().await;
    Ok(latencies)
}
