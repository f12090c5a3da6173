//! planning.json: crashes, concurrency, corrupt files, a full disk, and reload equality.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use planbot::planning::state::{EntryStatus, SessionEntry};
use planbot::store::{SessionStore, State, Store, StoreError, inspect};
use proptest::prelude::*;
use serde_json::json;

/// A minimal valid entry.
pub fn entry(key: &str, turns: u32) -> SessionEntry {
    serde_json::from_value(json!({
        "slug": "todo-app", "description": format!("plan for {key}"), "phase": "office-hours",
        "planning_session_id": "7f1c1a5e-3d9a-4a57-9a49-0b8e6c7d1e2f", "adapter": "console",
        "channel_id": key, "cwd": "/tmp/ws/todo-app", "status": "planning",
        "started_at": "2026-11-21T10:00:00Z", "updated_at": "2026-11-21T10:00:00Z", "turns": turns,
    }))
    .unwrap()
}

/// What a planbot starting now would load (`planning.json` and its journal), read without
/// changing anything; the file must be whole.
fn file_state(dir: &Path) -> State {
    let (state, report) = inspect(dir).expect("planning.json reads");
    assert!(report.is_healthy(), "{report:?}");
    state
}

/// Runs this test binary's `name` test in a child process with `env`.
fn child_test(name: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// The child of the crash test: updates the store as fast as it can, printing each acknowledgement.
#[tokio::test]
#[ignore = "run by crash_at_any_instant_loses_no_acknowledged_update"]
async fn crash_child() {
    let (Ok(dir), Ok(run)) = (std::env::var("CRASH_DIR"), std::env::var("CRASH_RUN")) else {
        return;
    };
    let (store, _) = Store::open(Path::new(&dir)).unwrap();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("r{run}-w{worker}-{i}");
                store.put(&key, entry(&key, i)).await.unwrap();
                println!("ack {key} {i}");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn crash_at_any_instant_loses_no_acknowledged_update() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let mut acked: BTreeMap<String, u32> = BTreeMap::new();
    let mut kills = 0;
    for run in 0..200 {
        let run_s = run.to_string();
        let mut child = child_test(
            "store::crash_child",
            &[("CRASH_DIR", &dir_s), ("CRASH_RUN", &run_s)],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack, started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ack ") {
                    let (key, i) = rest.split_once(' ').unwrap();
                    acks.push((key.to_string(), i.parse::<u32>().unwrap()));
                    let _ = first_ack.send(());
                }
            }
            acks
        });
        // Kill at a random moment once the writer is writing (counted from its first
        // acknowledgement, so a loaded machine's slow start-up changes nothing): mid-write.
        let _ = started.recv_timeout(std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(0..30)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        kills += 1;
        acked.extend(reader.join().unwrap());
        let state = file_state(dir.path());
        for (key, turns) in &acked {
            let stored = state
                .sessions
                .get(key)
                .unwrap_or_else(|| panic!("run {run}: lost {key}"));
            assert_eq!(stored.turns, *turns);
        }
    }
    assert_eq!(kills, 200);
    assert!(
        acked.len() > 200,
        "only {} updates were acknowledged",
        acked.len()
    );
    // The next instance clears what the killed writers left half-written.
    let (store, _) = Store::open(dir.path()).unwrap();
    drop(store);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".bak-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn concurrent_updates_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put(&format!("chat-{i}"), entry("x", i))
                .await
                .unwrap();
            store
                .update("shared", |slot| {
                    let e = slot.get_or_insert_with(|| entry("shared", 0));
                    e.turns += 1;
                })
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let state = file_state(dir.path());
    assert_eq!(state.sessions.len(), 201);
    assert_eq!(state.sessions["shared"].turns, 200);
    for i in 0..200u32 {
        assert_eq!(state.sessions[&format!("chat-{i}")].turns, i);
    }
    assert_eq!(store.get("shared").await.unwrap().unwrap().turns, 200);
}

#[tokio::test]
async fn a_second_instance_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("second open succeeded")
    };
    assert!(matches!(err, StoreError::Locked { .. }));
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    store.close().await;
    let (_again, _) = Store::open(dir.path()).unwrap();
}

#[test]
fn a_health_check_never_makes_a_starting_planbot_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probing = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut probes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = planbot::store::StateLock::probe(&path);
                probes += 1;
            }
            probes
        })
    };
    // Starts and stops meet the probes at every instant; none is refused.
    for _ in 0..50 {
        let lock = planbot::store::StateLock::acquire(&path).expect("refused by a probe");
        let holder = std::fs::read_to_string(path.join("planbot.lock")).unwrap();
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        // While held, a probe says so and leaves the holder's record alone.
        assert!(planbot::store::StateLock::probe(&path).is_err());
        assert_eq!(
            std::fs::read_to_string(path.join("planbot.lock")).unwrap(),
            holder
        );
        drop(lock);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(probing.join().unwrap() > 50);
}

#[tokio::test]
async fn running_entries_become_interrupted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut running = entry("a", 1);
    running.status = EntryStatus::Running;
    store.put("console:a", running).await.unwrap();
    store.put("console:b", entry("b", 1)).await.unwrap();
    store.close().await;
    let (store, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.interrupted, ["console:a"]);
    assert_eq!(
        store.get("console:a").await.unwrap().unwrap().status,
        EntryStatus::Interrupted
    );
    assert_eq!(
        file_state(dir.path()).sessions["console:a"].status,
        EntryStatus::Interrupted
    );
    assert_eq!(
        store.get("console:b").await.unwrap().unwrap().status,
        EntryStatus::Planning
    );
}

/// A journal applies to the file of its own generation only; a record a crash cut short is
/// passed over.
#[tokio::test]
async fn the_journal_applies_to_its_own_generation_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store.put("console:a", entry("a", 1)).await.unwrap();
    store.close().await;
    let file = file_state(dir.path());
    let record = |turns: u32| {
        let value = serde_json::to_value(entry("a", turns)).unwrap();
        format!("{}\n", json!({"console:a": value}))
    };
    let header = |g: u64| format!("{}\n", json!({"generation": g}));
    let journal = dir.path().join("planning.json.journal");
    let torn = &record(9)[..40];
    std::fs::write(
        &journal,
        format!(
            "{}{}{}{torn}",
            header(file.generation),
            record(4),
            record(5)
        ),
    )
    .unwrap();
    assert_eq!(file_state(dir.path()).sessions["console:a"].turns, 5);
    // A whole write cut short after its rename: the file is of the next generation and
    // already holds what the journal says, and newer; the journal is not applied again.
    let mut newer = file.clone();
    newer.generation += 1;
    newer.sessions.get_mut("console:a").unwrap().turns = 7;
    std::fs::write(dir.path().join("planning.json"), newer.to_bytes()).unwrap();
    assert_eq!(file_state(dir.path()).sessions["console:a"].turns, 7);
    // Opening folds a journal of its generation into the file and starts a fresh one.
    std::fs::write(
        &journal,
        format!("{}{}", header(newer.generation), record(8)),
    )
    .unwrap();
    let (store, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.journaled, 1);
    store.close().await;
    let file =
        State::from_bytes(&std::fs::read(dir.path().join("planning.json")).unwrap()).unwrap();
    assert_eq!(file.sessions["console:a"].turns, 8);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        header(file.generation)
    );
}

/// A good file, written by the store twice, so that a `.bak` exists beside it.
async fn with_backup(dir: &Path) {
    let (store, _) = Store::open(dir).unwrap();
    store.put("console:good", entry("good", 7)).await.unwrap();
    store.close().await;
    let (store, _) = Store::open(dir).unwrap();
    store.put("console:good2", entry("good2", 8)).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn corrupt_files_are_moved_aside_byte_for_byte_and_the_backup_loaded() {
    let truncated = br#"{"version": 1, "sessions": {"console:x": {"slug": "#.to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("nul bytes", vec![0u8; 64]),
        ("an array", b"[]".to_vec()),
    ];
    for (name, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        with_backup(dir.path()).await;
        std::fs::write(dir.path().join("planning.json"), &bytes).unwrap();
        let (state, report) = inspect(dir.path()).unwrap();
        assert!(!report.is_healthy(), "{name}: inspect reports the problem");
        assert_eq!(
            std::fs::read(dir.path().join("planning.json")).unwrap(),
            bytes,
            "{name}: inspect changes nothing"
        );
        assert_eq!(
            state.sessions.len(),
            1,
            "{name}: the .bak holds the state before the last write"
        );

        let (store, report) = Store::open(dir.path()).unwrap();
        let aside = report
            .moved_aside
            .clone()
            .unwrap_or_else(|| panic!("{name}: not moved aside"));
        assert!(
            aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("planning.json.corrupt-")
        );
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            bytes,
            "{name}: original bytes preserved"
        );
        assert!(report.from_backup);
        assert!(store.get("console:good").await.unwrap().is_some(), "{name}");
        // Serving goes on, and the next write makes a healthy file.
        store.put("console:new", entry("new", 1)).await.unwrap();
        store.close().await;
        assert_eq!(file_state(dir.path()).sessions.len(), 2, "{name}");
    }
}

#[tokio::test]
async fn a_future_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = br#"{"version": 2, "sessions": {}, "shiny": true}"#;
    std::fs::write(dir.path().join("planning.json"), bytes).unwrap();
    let Err(err) = Store::open(dir.path()) else {
        panic!("opened a future version")
    };
    assert!(
        err.to_string()
            .contains("version 2, newer than this planbot understands"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("planning.json")).unwrap(),
        bytes
    );
}

#[tokio::test]
async fn one_bad_entry_keeps_the_others_and_itself() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_value(entry("good", 3)).unwrap();
    let bad = json!({"slug": 42, "mystery": [1, 2]});
    let file = json!({"version": 1, "sessions": {"console:good": good, "console:bad": bad}, "future_top": "kept"});
    std::fs::write(dir.path().join("planning.json"), file.to_string()).unwrap();
    let (store, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.unreadable, ["console:bad"]);
    assert_eq!(store.get("console:good").await.unwrap().unwrap().turns, 3);
    store.put("console:other", entry("other", 1)).await.unwrap();
    store.close().await;
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("planning.json")).unwrap()).unwrap();
    assert_eq!(written["sessions"]["console:bad"], bad);
    assert_eq!(written["future_top"], "kept");
    assert_eq!(written["sessions"].as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn unknown_entry_fields_survive_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let mut value = serde_json::to_value(entry("a", 1)).unwrap();
    value["from_the_future"] = json!({"x": 1});
    std::fs::write(
        dir.path().join("planning.json"),
        json!({"version": 1, "sessions": {"console:a": value}}).to_string(),
    )
    .unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .update("console:a", |e| e.as_mut().unwrap().turns = 5)
        .await
        .unwrap();
    store.close().await;
    let state = file_state(dir.path());
    assert_eq!(
        state.sessions["console:a"].extra["from_the_future"],
        json!({"x": 1})
    );
    assert_eq!(state.sessions["console:a"].turns, 5);
}

/// The child of the full-disk test, run inside a private mount namespace on a tiny tmpfs.
/// The child of the sync-order test: two updates, each acknowledged on stderr, then a clean
/// close (which writes `planning.json` whole).
#[tokio::test]
#[ignore = "run by updates_are_synced_before_they_are_acknowledged_and_whole_writes_in_order"]
async fn sync_order_child() {
    let Ok(dir) = std::env::var("SYNC_DIR") else {
        return;
    };
    let (store, _) = Store::open(Path::new(&dir)).unwrap();
    for turns in 1..=2 {
        store.put("console:a", entry("a", turns)).await.unwrap();
        // One write(2) call, for the trace to show.
        std::io::Write::write_all(&mut std::io::stderr(), format!("ACK-{turns}\n").as_bytes())
            .unwrap();
    }
    store.close().await;
}

/// SIGKILL keeps the page cache, so only the system calls can show durability (`strace -f -y`
/// names each fd's path): every update is synced to the journal before it is acknowledged;
/// every rename onto `planning.json` follows an fsync of the file renamed and is followed by an
/// fsync of the directory; and the journal is emptied only after that.
#[test]
fn updates_are_synced_before_they_are_acknowledged_and_whole_writes_in_order() {
    if Command::new("strace").arg("-V").output().is_err() {
        if std::env::var_os("PLANBOT_REQUIRE_STRACE").is_some() {
            panic!("strace is required (PLANBOT_REQUIRE_STRACE): apt-get install strace");
        }
        eprintln!(
            "SKIPPED updates_are_synced_before_they_are_acknowledged: strace is not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,ftruncate,write",
            "-o",
        ])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::sync_order_child",
            "--ignored",
            "--nocapture",
        ])
        .env("SYNC_DIR", &state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let dir_path = state.canonicalize().unwrap().display().to_string();
    let journal = format!("<{dir_path}/planning.json.journal>");
    let lines: Vec<&str> = calls.lines().collect();
    let find = |what: &dyn Fn(&str) -> bool| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| what(l))
            .map(|(i, _)| i)
            .collect()
    };
    let journal_synced = find(&|l| l.contains("fdatasync(") && l.contains(&journal));
    let mut since = 0;
    for turns in 1..=2 {
        let ack = find(&|l| l.contains("write(2") && l.contains(&format!("ACK-{turns}")));
        let &[ack] = ack.as_slice() else {
            panic!("one acknowledgement {turns}:\n{calls}")
        };
        assert!(
            journal_synced.iter().any(|&i| i > since && i < ack),
            "update {turns} was acknowledged before the journal was synced:\n{calls}"
        );
        since = ack;
    }
    let target = format!("{dir_path}/planning.json\"");
    let renames =
        find(&|l| l.contains("rename") && l.trim_end().ends_with("= 0") && l.contains(&target));
    assert!(
        !renames.is_empty(),
        "the close writes the file whole:\n{calls}"
    );
    for &at in &renames {
        let temp = lines[at]
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("no source path in {}", lines[at]));
        let synced_before = lines[..at].iter().any(|l| {
            (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&format!("<{temp}>"))
        });
        assert!(
            synced_before,
            "{temp} renamed before it was synced:\n{calls}"
        );
        let dir_synced = lines[at + 1..]
            .iter()
            .position(|l| l.contains("fsync(") && l.contains(&format!("<{dir_path}>")))
            .map(|i| i + at + 1)
            .unwrap_or_else(|| panic!("the directory was not synced after the rename:\n{calls}"));
        let emptied = find(&|l| l.contains("ftruncate(") && l.contains(&journal));
        assert!(
            emptied.iter().any(|&i| i > dir_synced),
            "the journal was not restarted after the whole write:\n{calls}"
        );
        assert!(
            !emptied.iter().any(|&i| i > since && i < dir_synced),
            "the journal was emptied before the whole write was durable:\n{calls}"
        );
    }
}

#[tokio::test]
#[ignore = "run by a_full_disk_keeps_the_old_file"]
async fn full_disk_child() {
    let Ok(dir) = std::env::var("FULL_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let (store, _) = Store::open(dir).unwrap();
    store.put("console:a", entry("a", 1)).await.unwrap();
    store.close().await;
    let (store, _) = Store::open(dir).unwrap();
    let before = std::fs::read(dir.join("planning.json")).unwrap();
    let mut huge = entry("b", 2);
    huge.description = "x".repeat(200 * 1024);
    let err = store
        .put("console:b", huge)
        .await
        .expect_err("the disk is full");
    assert!(err.to_string().contains("could not save"), "{err}");
    assert_eq!(
        err.to_string().matches("could not save").count(),
        1,
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("planning.json")).unwrap(),
        before,
        "old file intact"
    );
    assert!(
        store.get("console:b").await.unwrap().is_none(),
        "the failed change was undone"
    );
    store
        .update("console:a", |e| e.as_mut().unwrap().turns = 2)
        .await
        .unwrap();
    assert_eq!(file_state(dir).sessions["console:a"].turns, 2);
    assert!(!file_state(dir).sessions.contains_key("console:b"));
    println!("FULL-DISK-CHECKS-PASSED");
}

#[test]
fn a_full_disk_keeps_the_old_file() {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED a_full_disk_keeps_the_old_file: no private mount namespace here (needs root)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=128k tmpfs '{m}' && exec '{exe}' --exact store::full_disk_child --ignored --nocapture",
        m = mount.display(),
        exe = exe.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("FULL_DIR", &mount)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FULL-DISK-CHECKS-PASSED"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u32),
    Remove(u8),
    Bump(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u32..1000).prop_map(|(k, t)| Op::Put(k, t)),
        (0u8..6).prop_map(Op::Remove),
        (0u8..6).prop_map(Op::Bump),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn any_sequence_of_updates_reloads_to_the_same_state(ops in proptest::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (model, live) = rt.block_on(async {
            let (store, _) = Store::open(dir.path()).unwrap();
            let mut model: BTreeMap<String, SessionEntry> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, t) => {
                        let key = format!("telegram:{k}");
                        store.put(&key, entry(&key, t)).await.unwrap();
                        model.insert(key.clone(), entry(&key, t));
                    }
                    Op::Remove(k) => {
                        let key = format!("telegram:{k}");
                        store.remove(&key).await.unwrap();
                        model.remove(&key);
                    }
                    Op::Bump(k) => {
                        let key = format!("telegram:{k}");
                        store.update(&key, |e| if let Some(e) = e { e.turns += 1 }).await.unwrap();
                        if let Some(e) = model.get_mut(&key) { e.turns += 1 }
                    }
                }
            }
            let live = store.read(|s| s.sessions.clone()).await.unwrap();
            store.close().await;
            (model, live)
        });
        prop_assert_eq!(&live, &model);
        let (reloaded, report) = inspect(dir.path()).unwrap();
        prop_assert!(report.is_healthy());
        prop_assert_eq!(reloaded.sessions, model);
    }
}

/// What every `SessionStore` must do, whatever keeps the plans.
async fn conformance(store: &dyn SessionStore) {
    use planbot::chat::ChatKey;
    let a = ChatKey::new("telegram", "1");
    let b = ChatKey::new("discord", "2");
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(store.remove(&a).await.unwrap(), None);
    let mut first = entry("telegram:1", 1);
    (first.adapter, first.channel_id) = ("telegram".into(), "1".into());
    let mut second = entry("discord:2", 2);
    (second.adapter, second.channel_id) = ("discord".into(), "2".into());
    store.put(&a, first.clone()).await.unwrap();
    store.put(&b, second.clone()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), Some(first.clone()));
    first.turns = 7;
    store.put(&a, first.clone()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap().turns, 7);
    let mut all = store.all().await.unwrap();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        all,
        vec![(b.clone(), second.clone()), (a.clone(), first.clone())]
    );
    assert_eq!(store.remove(&a).await.unwrap(), Some(first));
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(store.all().await.unwrap().len(), 1);
    // A forum topic's key holds a colon; fields of a newer planbot are kept as they are.
    let topic = ChatKey::new("telegram", "-100:7");
    let mut third = entry("telegram:-100:7", 3);
    (third.adapter, third.channel_id) = ("telegram".into(), "-100:7".into());
    third
        .extra
        .insert("future_field".into(), serde_json::json!({"kept": ["ü", 1]}));
    store.put(&topic, third.clone()).await.unwrap();
    assert_eq!(store.get(&topic).await.unwrap(), Some(third.clone()));
    assert!(store.all().await.unwrap().contains(&(topic.clone(), third)));
    store.remove(&topic).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_plans_by_chat_and_migrates_once() {
    let Some(pg) = crate::postgres::Postgres::start("the_postgres_store_keeps_plans_by_chat")
    else {
        return;
    };
    let url = planbot::config::Secret::new(pg.database("conformance").await);
    let store = planbot::store_pg::PgStore::new(&url, 4).unwrap();
    assert_eq!(store.status(&url).await.unwrap().version, 0);
    let version = store.migrate().await.unwrap();
    assert!(version >= 1);
    // Twice, and by two at once: each migration applies once.
    let other = planbot::store_pg::PgStore::new(&url, 2).unwrap();
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    assert_eq!((a.unwrap(), b.unwrap()), (version, version));
    conformance(&store).await;
    // Writes are committed: a new pool sees what the suite left.
    let left = SessionStore::all(&other).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.to_string(), "discord:2");
    let status = store.status(&url).await.unwrap();
    assert_eq!(
        (status.version, status.latest, status.sessions),
        (version, version, 1)
    );
    assert_eq!(status.target, format!("127.0.0.1:{}/conformance", pg.port));
    // At start-up a turn cut off by a stop is marked interrupted, the others left alone.
    let chat = planbot::chat::ChatKey::new("telegram", "9");
    let mut running = entry("telegram:9", 1);
    running.status = planbot::planning::state::EntryStatus::Running;
    store.put(&chat, running).await.unwrap();
    assert_eq!(store.recover().await.unwrap(), ["telegram:9"]);
    let after = store.get(&chat).await.unwrap().unwrap();
    assert_eq!(
        after.status,
        planbot::planning::state::EntryStatus::Interrupted
    );
    assert!(store.recover().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_store_keeps_plans_by_chat() {
    conformance(&planbot::store::MemoryStore::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    conformance(&store).await;
    store.close().await;
    // The file store's writes were durable: a reopened store has what the suite left.
    let (store, _) = Store::open(dir.path()).unwrap();
    let left = SessionStore::all(&store).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.to_string(), "discord:2");
    store.close().await;
}
