//! Section 11: several replicas on one PostgreSQL database (`PLANBOT_BENCH_POSTGRES`: a server URL
//! where the benchmark may create and drop databases; without it the section says so and ends).
//! Turns per second with 1, 2 and 3 real `planbot run` replicas in webhook mode behind the
//! project's fake Bot API (the benchmark posts each update to a replica at random), each with the
//! same limit of concurrent runs; and the time one plan update takes in PostgreSQL against the
//! file store, in-process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use planbot::chat::ChatKey;
use planbot::store::{SessionStore, Store};
use planbot::store_pg::PgStore;

use super::fake_telegram::{FakeTelegram, TOKEN};
use super::{Sizes, ms, percentile, sorted};

const SECRET: &str = "bench-secret";
/// Concurrent runs per replica.
const LIMIT: usize = 4;

/// Replicas killed when dropped.
struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn database(server: &str, name: &str) -> Result<String, String> {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("PLANBOT_BENCH_POSTGRES: {e}"))?;
    tokio::spawn(connection);
    // Each on its own: neither runs inside a transaction.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("{sql}: {e:?}"))?;
    }
    let mut url = url::Url::parse(server).map_err(|e| e.to_string())?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

async fn post(port: u16, update: &serde_json::Value) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/telegram/hook");
    super::fake_telegram::deliver(&url, SECRET, update).await
}

/// Starts `count` plans at once over `n` replicas; the seconds until every one was answered.
async fn round(
    n: usize,
    count: i64,
    db: &str,
    planbot: &Path,
    claude: &Path,
) -> Result<f64, String> {
    let fake = FakeTelegram::start().await;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let allowed: Vec<String> = (1..=count).map(|u| format!("telegram:{u}")).collect();
    let mut ports = Vec::new();
    let mut children = Vec::new();
    for i in 0..n {
        let port = free_port()?;
        let dir = root.path().join(format!("replica-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new(planbot)
            .arg("run")
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("TELEGRAM_API_URL", fake.url())
            .env("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:9/telegram/hook")
            .env("TELEGRAM_WEBHOOK_SECRET", SECRET)
            .env("PLANBOT_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("PLANBOT_DATABASE_URL", db)
            .env("PLANBOT_ALLOWED_USERS", allowed.join(","))
            .env("PLANBOT_CLAUDE_BIN", claude)
            .env("PLANBOT_CHILD_ENV", "FAKE_CLAUDE_*")
            .env("PLANBOT_SANDBOX", "off")
            .env("PLANBOT_MAX_CONCURRENT_RUNS", LIMIT.to_string())
            .env("PLANBOT_REPLICAS", n.to_string())
            .env("PLANBOT_STATE_DIR", dir.join("state"))
            .env("PLANBOT_WORKSPACE_DIR", root.path().join("workspace"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("planbot run: {e}"))?;
        children.push(child);
        ports.push(port);
    }
    let _replicas = Replicas(children);
    // Every replica ready (listening for events) before the clock starts.
    for &port in &ports {
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let mut tries = 0;
        while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
            tries += 1;
            if tries > 300 {
                return Err(format!("the replica on {port} never became ready"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let at = Instant::now();
    for user in 1..=count {
        let update = fake.update(user, user, &format!("/plan bench-{user} an idea"));
        post(ports[fastrand::usize(0..n)], &update).await?;
    }
    let deadline = at + Duration::from_secs(120);
    for user in 1..=count {
        while !fake
            .messages(user)
            .iter()
            .any(|m| m.text.contains("[fake model]"))
        {
            if Instant::now() > deadline {
                return Err(format!("chat {user} got no answer within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(at.elapsed().as_secs_f64())
}

/// Section 11.
pub async fn replicas(sizes: &Sizes, planbot: &Path, claude: &Path) -> Result<(), String> {
    println!("## 11. Several replicas on one PostgreSQL database\n");
    let Ok(server) = std::env::var("PLANBOT_BENCH_POSTGRES") else {
        println!(
            "Not measured: set `PLANBOT_BENCH_POSTGRES` to a PostgreSQL server URL where the benchmark may create databases.\n"
        );
        return Ok(());
    };
    let me = std::process::id();
    // One update of a plan: PostgreSQL against planning.json, in-process.
    let url = database(&server, &format!("bench_store_{me}")).await?;
    let pg = PgStore::new(&planbot::config::Secret::new(url), 4).map_err(|e| e.to_string())?;
    pg.migrate().await.map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (file, _) = Store::open(dir.path()).map_err(|e| e.to_string())?;
    let chat = ChatKey::new("telegram", "1");
    let mut entry = super::entry(1)?;
    let (mut on_pg, mut on_file) = (Vec::new(), Vec::new());
    for k in 0..sizes.store_updates * 4 {
        entry.turns = k as u32;
        let start = Instant::now();
        pg.put(&chat, entry.clone())
            .await
            .map_err(|e| e.to_string())?;
        on_pg.push(start.elapsed().as_nanos() as f64);
        let start = Instant::now();
        SessionStore::put(&file, &chat, entry.clone())
            .await
            .map_err(|e| e.to_string())?;
        on_file.push(start.elapsed().as_nanos() as f64);
    }
    file.close().await;
    let (p, f) = (
        percentile(&sorted(on_pg), 0.5),
        percentile(&sorted(on_file), 0.5),
    );
    println!(
        "One durable update of a plan, median of {} (the same entry, in one loop): PostgreSQL on this machine {} (a committed upsert through the fencing trigger), `planning.json` {} (a synced journal append); PostgreSQL / file: **{:.2}x**.\n",
        sizes.store_updates * 4,
        ms(p),
        ms(f),
        p / f
    );

    // Turns per second with 1, 2 and 3 replicas.
    let count = (LIMIT * 3 * 2) as i64;
    let turn = sizes.turn_ms as f64 / 1e3;
    println!(
        "{count} chats start a plan at once, each update posted to a replica at random; every replica runs at most {LIMIT} turns at once (`PLANBOT_MAX_CONCURRENT_RUNS`), the stand-in takes {} ms.\n",
        sizes.turn_ms
    );
    println!(
        "| replicas | all answered | turns/s | ideal turns/s | / one replica |\n|---|---|---|---|---|"
    );
    let mut one = None;
    for n in 1..=3 {
        let db = database(&server, &format!("bench_replicas_{me}_{n}")).await?;
        let wall = round(n, count, &db, planbot, claude).await?;
        let rate = count as f64 / wall;
        let ideal = (n * LIMIT) as f64 / turn;
        let base = *one.get_or_insert(rate);
        println!(
            "| {n} | {wall:.2} s | {rate:.2} | {ideal:.1} | **{:.2}x** |",
            rate / base
        );
    }
    println!();
    Ok(())
}
