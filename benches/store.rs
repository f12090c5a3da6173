//! The cost of one durable planning.json update with 10, 1,000 and 10,000 stored sessions,
//! against writing and fsyncing the same bytes raw in the same directory; and the time to load
//! 10,000 sessions. `cargo bench --bench store` (`PLANBOT_BENCH_UPDATES` per size, default 30).

use std::io::Write;
use std::time::{Duration, Instant};

use planbot::store::{SessionEntry, State, Store, inspect, write_durably};
use serde_json::json;

fn entry(i: usize) -> SessionEntry {
    serde_json::from_value(json!({
        "slug": format!("plan-{i}"), "description": "a shared todo list for families with kids",
        "phase": "plan-ceo-review", "phases": ["office-hours", "plan-ceo-review", "plan-eng-review", "plan-design-review"],
        "phases_completed": ["office-hours"], "session_id": "1288cb89-f75c-4533-b092-d687ddcda489",
        "planning_session_id": "7f1c1a5e-3d9a-4a57-9a49-0b8e6c7d1e2f", "adapter": "telegram",
        "channel_id": i.to_string(), "cwd": format!("/srv/planbot/workspace/plan-{i}"), "status": "planning",
        "started_at": "2026-11-21T10:00:00Z", "updated_at": "2026-11-21T10:00:00Z", "turns": 7,
        "total_cost_usd": 0.42, "last_text_excerpt": "x".repeat(200),
        "recap": [{"role": "user", "text": "y".repeat(300)}, {"role": "assistant", "text": "z".repeat(600)}],
    }))
    .expect("entry")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let updates: usize = std::env::var("PLANBOT_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("durable update of planning.json, median of {updates}");
    println!("| sessions | file size | update | raw write+fsync | ratio |");
    println!("|---|---|---|---|---|");
    for n in [10usize, 1_000, 10_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::default();
        for i in 0..n {
            state.sessions.insert(format!("telegram:{i}"), entry(i));
        }
        let bytes = state.to_bytes();
        write_durably(&dir.path().join("planning.json"), &bytes, false).expect("seed");
        let (store, _) = Store::open(dir.path()).expect("open");
        let mut update = Vec::new();
        let mut raw = Vec::new();
        rt.block_on(async {
            for k in 0..updates {
                let start = Instant::now();
                store
                    .update("telegram:0", move |e| {
                        if let Some(e) = e {
                            e.turns = k as u32
                        }
                    })
                    .await
                    .expect("update");
                update.push(start.elapsed());

                let start = Instant::now();
                let mut f = std::fs::File::create(dir.path().join("raw.json")).expect("raw");
                f.write_all(&bytes).expect("write");
                f.sync_all().expect("fsync");
                raw.push(start.elapsed());
            }
            store.close().await;
        });
        let (u, r) = (median(update), median(raw));
        println!(
            "| {n} | {} KiB | {u:?} | {r:?} | {:.2}x |",
            bytes.len() / 1024,
            u.as_secs_f64() / r.as_secs_f64()
        );
        if n == 10_000 {
            let start = Instant::now();
            let (loaded, _) = inspect(dir.path()).expect("load");
            println!(
                "\nload {} sessions: {:?}",
                loaded.sessions.len(),
                start.elapsed()
            );
        }
    }
}
