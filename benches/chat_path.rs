//! Sections 7 and 8: the path users feel. The real `planbot run` over the project's fake Telegram
//! Bot API (`tests/it/fake_telegram.rs`, strict about Telegram's flood limits), with the stand-in
//! `claude` replaying a recorded turn; every figure is read from the times the fake saw each call
//! arrive, from the moment the user's message was handed to it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::fake_telegram::{FakeTelegram, TOKEN};
use super::{Sizes, ms, percentile, sorted};

/// Users (and their private chats) the run allows.
const USERS: std::ops::RangeInclusive<i64> = 1..=300;
/// The stand-in's answer starts with this.
const ANSWER: &str = "[fake model]";

/// `planbot run` against a fake Bot API, killed when dropped.
struct Live {
    fake: FakeTelegram,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Live {
    async fn start(planbot: &Path, claude: &Path, env: &[(&str, String)]) -> Result<Live, String> {
        let fake = FakeTelegram::start().await;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let allowed: Vec<String> = USERS.map(|u| format!("telegram:{u}")).collect();
        let log =
            std::fs::File::create(dir.path().join("planbot.log")).map_err(|e| e.to_string())?;
        let child = Command::new(planbot)
            .arg("run")
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("TELEGRAM_API_URL", fake.url())
            .env("PLANBOT_ALLOWED_USERS", allowed.join(","))
            .env("PLANBOT_CLAUDE_BIN", claude)
            .env("PLANBOT_CHILD_ENV", "FAKE_CLAUDE_*")
            .env("PLANBOT_SANDBOX", "off")
            .env("PLANBOT_STATE_DIR", dir.path().join("state"))
            .env("PLANBOT_WORKSPACE_DIR", dir.path().join("workspace"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("planbot run: {e}"))?;
        let live = Live {
            fake,
            child,
            _dir: dir,
        };
        live.fake
            .wait_for("planbot's start-up", 30, |t| t.commands().is_some())
            .await;
        Ok(live)
    }

    /// When the answer to what `chat` said at `after` arrived, if it has.
    fn answered(&self, chat: i64, after: Instant) -> Option<Instant> {
        self.fake
            .timed_calls()
            .into_iter()
            .find(|(at, method, params)| *at >= after && is_answer(chat, method, params))
            .map(|(at, _, _)| at)
    }

    async fn wait_answer(&self, chat: i64, after: Instant) -> Result<Instant, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.answered(chat, after) {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!("chat {chat} got no answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn rate_limited(&self) -> usize {
        self.fake
            .faults()
            .iter()
            .filter(|f| f.contains("(429)"))
            .count()
    }
}

fn is_answer(chat: i64, method: &str, params: &Value) -> bool {
    method == "sendmessage"
        && params["chat_id"].as_i64() == Some(chat)
        && params["text"].as_str().is_some_and(|t| t.contains(ANSWER))
}

/// Section 7: follow-ups in one chat typed a second apart, then a burst of new chats.
pub async fn follow_ups(sizes: &Sizes, planbot: &Path, claude: &Path) -> Result<(), String> {
    let mut baseline = Vec::new();
    for _ in 0..20 {
        baseline.push(super::bare_spawn(claude).await?);
    }
    let baseline = sorted(baseline);
    let live = Live::start(planbot, claude, &[]).await?;
    let round_trip = round_trip(&live.fake, 20).await?;
    let chat = 1;
    let start = Instant::now();
    live.fake
        .message(chat, 1, "/plan bench-plan a plan to measure", None);
    live.wait_answer(chat, start).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut typed = Vec::new();
    let first = Instant::now();
    for i in 0..sizes.follow_ups {
        tokio::time::sleep_until((first + Duration::from_secs(i as u64)).into()).await;
        let at = Instant::now();
        live.fake
            .message(chat, 1, &format!("follow-up number {i}"), None);
        typed.push(at);
        live.wait_answer(chat, at).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = live.fake.timed_calls();
    let (mut answer, mut sign, mut counts, mut positions) = (vec![], vec![], vec![], vec![]);
    for (i, at) in typed.iter().enumerate() {
        let until = typed
            .get(i + 1)
            .copied()
            .unwrap_or(*at + Duration::from_secs(1));
        let mine: Vec<_> = calls
            .iter()
            .filter(|(t, _, p)| t >= at && *t < until && p["chat_id"].as_i64() == Some(chat))
            .collect();
        let position = mine
            .iter()
            .position(|(_, m, p)| is_answer(chat, m, p))
            .ok_or("a follow-up got no answer")?;
        answer.push(mine[position].0.duration_since(*at).as_nanos() as f64);
        sign.push(mine[0].0.duration_since(*at).as_nanos() as f64);
        counts.push(mine.len() as f64);
        positions.push(position as f64 + 1.0);
    }
    let limited = live.rate_limited();

    // A burst: new chats each start a plan at the same moment.
    let burst = sizes.burst_chats as i64;
    let at = Instant::now();
    for user in 11..11 + burst {
        live.fake
            .message(user, user, &format!("/plan burst-{user} an idea"), None);
    }
    let mut last = at;
    for user in 11..11 + burst {
        last = last.max(live.wait_answer(user, at).await?);
    }
    let burst_limited = live.rate_limited() - limited;

    let (answer, sign) = (sorted(answer), sorted(sign));
    let calls_max = counts.iter().copied().fold(0.0, f64::max);
    let position_max = positions.iter().copied().fold(0.0, f64::max);
    println!("## 7. The chat's path over the Telegram Bot API\n");
    println!(
        "The real `planbot run` against the fake Bot API; the stand-in `claude` answers at once. \
         {} follow-ups in one chat, typed 1 s apart. Baselines in the same run: a bare spawn of \
         the stand-in {} (median), one `sendMessage` round trip to the fake {}.\n",
        sizes.follow_ups,
        ms(percentile(&baseline, 0.5)),
        ms(percentile(&round_trip, 0.5)),
    );
    println!("| figure | median | p90 | goal |\n|---|---|---|---|");
    println!(
        "| user's message → the answer's text in the chat | {} | {} | under 12 ms, p90 under 20 ms |",
        ms(percentile(&answer, 0.5)),
        ms(percentile(&answer, 0.9))
    );
    println!(
        "| user's message → first sign of life (any call to the chat) | {} | {} | under 5 ms |",
        ms(percentile(&sign, 0.5)),
        ms(percentile(&sign, 0.9))
    );
    println!(
        "| answer / (bare spawn + one round trip) | {:.2}x | {:.2}x | |",
        percentile(&answer, 0.5) / (percentile(&baseline, 0.5) + percentile(&round_trip, 0.5)),
        percentile(&answer, 0.9) / (percentile(&baseline, 0.5) + percentile(&round_trip, 0.5)),
    );
    println!(
        "\nTelegram calls per follow-up: at most {calls_max} (the answer's text at most call \
         number {position_max}); goal: at most 3, the answer no later than the second. 429s from \
         the fake over the follow-ups: **{limited}**; over a burst of {burst} new chats \
         starting plans at once (all answered in {}): **{burst_limited}**. Goal: none.\n",
        ms(last.duration_since(at).as_nanos() as f64),
    );
    Ok(())
}

/// Section 8: many chats' follow-ups at once, each turn taking `sizes.turn_ms`.
pub async fn many_chats(sizes: &Sizes, planbot: &Path, claude: &Path) -> Result<(), String> {
    let chats = sizes.chats as i64;
    let env = [("PLANBOT_MAX_CONCURRENT_RUNS", chats.to_string())];
    let live = Live::start(planbot, claude, &env).await?;
    let users = 101..101 + chats;
    let at = Instant::now();
    for user in users.clone() {
        live.fake
            .message(user, user, &format!("/plan many-{user} an idea"), None);
    }
    for user in users.clone() {
        live.wait_answer(user, at).await?;
    }
    // The bot-wide bucket refills before the measured round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = live.rate_limited();
    let at = Instant::now();
    for user in users.clone() {
        live.fake.message(user, user, "and a follow-up", None);
    }
    let mut last = at;
    for user in users {
        last = last.max(live.wait_answer(user, at).await?);
    }
    let wall = last.duration_since(at).as_secs_f64();
    let turn = sizes.turn_ms as f64 / 1e3;
    // Telegram lets a bot send about 30 messages a second in all: past a first second's worth,
    // the answers cannot come faster than that however fast planbot is.
    let paced = turn + (chats as f64 - 30.0).max(0.0) / 30.0;
    println!("## 8. Many chats at once over the Telegram Bot API\n");
    println!(
        "{chats} chats with a plan each send a follow-up at the same moment; \
         `PLANBOT_MAX_CONCURRENT_RUNS={chats}`, the stand-in takes {} ms.\n",
        sizes.turn_ms
    );
    println!("| | wall time | ratio |\n|---|---|---|");
    println!("| all answered | {wall:.3} s | |");
    println!("| ideal: one turn | {turn:.3} s | {:.2}x |", wall / turn);
    println!(
        "| ideal: one turn, then the answers at Telegram's 30 messages/s | {paced:.3} s | **{:.2}x** |",
        wall / paced
    );
    println!(
        "\n429s from the fake: **{}**. Goal: within 1.3x the ideal.\n",
        live.rate_limited() - before
    );
    Ok(())
}

/// One `sendMessage` to the fake and its answer, `n` times (each to a chat of its own, which the
/// runs never use, so no flood limit is what is measured).
async fn round_trip(fake: &FakeTelegram, n: usize) -> Result<Vec<f64>, String> {
    let client = reqwest::Client::new();
    let url = format!("{}/bot{TOKEN}/sendMessage", fake.url());
    let mut times = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let body = serde_json::json!({"chat_id": 999_000 + i as i64, "text": "round trip",
            "link_preview_options": {"is_disabled": true}});
        let response = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.bytes().await.map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_nanos() as f64);
    }
    Ok(sorted(times))
}

/// Section 9: a turn in the real `planbot console` (piped, as a script would drive it), from the
/// line written to its answer read back, against a bare spawn of the stand-in reading the same
/// recorded turn back in full.
pub async fn console(sizes: &Sizes, planbot: &Path, claude: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut console = Console::start(
        planbot,
        claude,
        dir.path(),
        &[("PLANBOT_CHILD_ENV", "FAKE_CLAUDE_*")],
    )?;
    console
        .say("/plan bench-console a plan to measure", ANSWER)
        .await?;
    let (mut turns, mut bare) = (Vec::new(), Vec::new());
    for i in 0..sizes.console_turns {
        turns.push(
            console
                .say(&format!("message {i}"), ANSWER)
                .await?
                .as_nanos() as f64,
        );
        bare.push(bare_turn(claude).await?.as_nanos() as f64);
    }
    console.close().await;
    let (turns, bare) = (sorted(turns), sorted(bare));
    println!("## 9. A turn in the console\n");
    println!(
        "The real `planbot console`, piped; the stand-in answers at once. {} turns, each from \
         the line written to the answer read back, interleaved with the baseline: spawning the \
         stand-in bare and reading its whole recorded turn.\n",
        sizes.console_turns
    );
    println!("| | median | p90 |\n|---|---|---|");
    row("bare spawn of the stand-in (baseline)", &bare);
    row("a turn in `planbot console`", &turns);
    ratio_row("turn / baseline", &turns, &bare);
    println!("\nGoal: under 3x.\n");
    Ok(())
}

/// A table row: the median and p90 of `v` (sorted nanoseconds).
pub fn row(name: &str, v: &[f64]) {
    println!(
        "| {name} | {} | {} |",
        ms(percentile(v, 0.5)),
        ms(percentile(v, 0.9))
    );
}

/// A table row: `v` against `baseline`, at the median (in bold) and at p90.
pub fn ratio_row(name: &str, v: &[f64], baseline: &[f64]) {
    println!(
        "| {name} | **{:.3}x** | {:.3}x |",
        percentile(v, 0.5) / percentile(baseline, 0.5),
        percentile(v, 0.9) / percentile(baseline, 0.9)
    );
}

/// A piped `planbot console` the benchmark types into, as a script would.
pub struct Console {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Console {
    /// `planbot console` on `claude`, its state in `dir`, sandbox off, with `env`.
    pub fn start(
        planbot: &Path,
        claude: &Path,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Console, String> {
        let mut child = tokio::process::Command::new(planbot)
            .arg("console")
            .env("PLANBOT_CLAUDE_BIN", claude)
            .env("PLANBOT_SANDBOX", "off")
            .env("PLANBOT_STATE_DIR", dir.join("state"))
            .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("planbot console: {e}"))?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let output = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        Ok(Console {
            child,
            input,
            output,
        })
    }

    /// Types `line`; returns once a line holding `answer` is printed.
    pub async fn say(&mut self, line: &str, answer: &str) -> Result<Duration, String> {
        let start = Instant::now();
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(120), self.output.next_line())
                .await
                .map_err(|_| "no answer within 120 s")?;
            match next.map_err(|e| e.to_string())? {
                Some(text) if text.contains(answer) => return Ok(start.elapsed()),
                Some(_) => {}
                None => return Err("the console ended".into()),
            }
        }
    }

    /// Ends the input and waits for the console to leave.
    pub async fn close(mut self) {
        drop(self.input);
        let _ = self.child.wait().await;
    }
}

/// The stand-in spawned bare with the section's recorded turn, its output read to the end.
async fn bare_turn(claude: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let output = tokio::process::Command::new(claude)
        .env_remove("FAKE_CLAUDE_STAMP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !output.status.success() || output.stdout.is_empty() {
        return Err("the baseline turn failed".into());
    }
    Ok(start.elapsed())
}
