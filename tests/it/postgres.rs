//! A real PostgreSQL for the tests (Debian's `postgresql` package): each test starts its own
//! cluster in a temp dir, on 127.0.0.1 and a free port, as a non-root user when the tests run as
//! root, and stops it when dropped. Without PostgreSQL installed a test says so and skips, unless
//! `PLANBOT_REQUIRE_POSTGRES` is set (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed server's `bin` directory.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// A running cluster, or `None` (after saying so) when PostgreSQL is not installed.
    pub fn start(test: &str) -> Option<Postgres> {
        let Some(bin) = server_bin() else {
            if std::env::var_os("PLANBOT_REQUIRE_POSTGRES").is_some() {
                panic!(
                    "{test}: PostgreSQL is required (PLANBOT_REQUIRE_POSTGRES) but no /usr/lib/postgresql/*/bin/initdb is installed; apt-get install postgresql"
                );
            }
            eprintln!("SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        }
        let data = dir.path().join("data");
        let mut initdb = crate::console::as_test_user(&bin.join("initdb"));
        initdb
            .args(["--auth=trust", "--username=planbot", "--no-sync", "-D"])
            .arg(&data);
        run(initdb, "initdb");
        let port = crate::util::free_port();
        let mut start = crate::console::as_test_user(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -h 127.0.0.1 -k {} -c fsync=off",
                dir.path().display()
            ))
            .args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
        Some(Postgres { dir, bin, port })
    }

    /// A URL to database `db` (created by [`Postgres::database`]) as the cluster's superuser.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://planbot@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A new, empty database; its URL.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.url(name)
    }
}

/// A client of the database at `url`, for a test to look at what planbot wrote.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

impl Postgres {
    fn stop(&self) {
        let mut stop = crate::console::as_test_user(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One cluster for the suites that run each test on every store (a cluster per test would cost
/// an `initdb` each); a static is never dropped, so it is stopped when the test binary exits.
static SHARED: std::sync::OnceLock<Option<Postgres>> = std::sync::OnceLock::new();

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_shared() {
    if let Some(Some(pg)) = SHARED.get() {
        pg.stop();
        let _ = std::fs::remove_dir_all(pg.dir.path());
    }
}

/// A new, empty database of the shared cluster for `test`, or `None` (after saying so) when
/// PostgreSQL is not installed.
pub async fn shared_database(test: &str) -> Option<String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pg = SHARED
        .get_or_init(|| {
            let pg = Postgres::start("the suites run on every store");
            // SAFETY: registers a plain function with no arguments, as atexit expects.
            unsafe { atexit(stop_shared) };
            pg
        })
        .as_ref();
    let Some(pg) = pg else {
        eprintln!("SKIPPED {test} on PostgreSQL: it is not installed");
        return None;
    };
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Some(pg.database(&format!("shared_{n}")).await)
}

/// `planbot <args>` in `dir` on the fake `claude`, with `env`; (success, stdout + stderr).
fn planbot_in(dir: &Path, claude: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = crate::console::planbot()
        .args(args)
        .current_dir(dir)
        .env("PLANBOT_CLAUDE_BIN", claude)
        .env("PLANBOT_STATE_DIR", dir.join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.join("workspace"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A console session piped in, on a blocking thread; its stdout.
async fn console(dir: &Path, claude: &Path, input: &str, env: &[(&str, &str)]) -> String {
    let (dir, claude, input) = (dir.to_path_buf(), claude.to_path_buf(), input.to_string());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = crate::console::console(&dir, &claude, &input, &env);
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_live_in_postgres_across_restarts_and_one_planbot_holds_a_database() {
    let Some(pg) = Postgres::start("plans_live_in_postgres") else {
        return;
    };
    let fake = crate::util::FakeClaude::new(serde_json::json!([]));
    let dir = tempfile::tempdir().unwrap();
    // A password in the URL (trust auth ignores it) must never be shown.
    let url = pg
        .database("plans")
        .await
        .replace("planbot@", "planbot:s3cret-pass@");
    let env = [("PLANBOT_DATABASE_URL", url.as_str())];
    let out = console(
        dir.path(),
        &fake.bin(),
        "/plan pg-app an idea\nfamilies\n",
        &env,
    )
    .await;
    assert!(out.contains("Planning `pg-app`"), "{out}");
    assert!(
        !dir.path().join("state/planning.json").exists(),
        "the plan went to the database, not to planning.json"
    );
    // A restart continues the same Claude session, from the database.
    console(dir.path(), &fake.bin(), "more\n", &env).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    let session = crate::util::arg_after(&calls[1], "--resume")
        .unwrap()
        .to_string();
    assert_eq!(
        crate::util::arg_after(&calls[2], "--resume"),
        Some(session.as_str())
    );

    let (ok, sessions) = planbot_in(dir.path(), &fake.bin(), &["sessions"], &env);
    assert!(
        ok && sessions.contains("console:local") && sessions.contains("pg-app"),
        "{sessions}"
    );
    let (_, check) = planbot_in(dir.path(), &fake.bin(), &["check"], &env);
    let expected = format!(
        "ok   store: PostgreSQL at 127.0.0.1:{}/plans, reachable, migrated (schema 4), 1 plans",
        pg.port
    );
    assert!(check.contains(&expected), "{check}");
    assert!(!check.contains("planning.json"), "{check}");

    // A second planbot on the same database is refused while the first runs.
    let mut first = crate::console::planbot()
        .arg("console")
        .current_dir(dir.path())
        .env("PLANBOT_CLAUDE_BIN", fake.bin())
        .env("PLANBOT_STATE_DIR", dir.path().join("state"))
        .env("PLANBOT_WORKSPACE_DIR", dir.path().join("workspace"))
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once the first holds the database (its advisory lock is visible), a second is refused.
    let client = client(&pg.url("plans")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let held: i64 = client
            // The instance lock (key 0x00706c616e626f75), not the one migrations take briefly.
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND classid = 7367777 AND objid = 1851944821",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if held > 0 {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first planbot exited"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the first planbot never held the database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let other = tempfile::tempdir().unwrap();
    let (other_path, bin) = (other.path().to_path_buf(), fake.bin());
    let env_owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let refused = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env_owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        planbot_in(&other_path, &bin, &["console"], &env)
    })
    .await
    .unwrap();
    drop(first.stdin.take());
    let _ = first.wait();
    assert!(!refused.0, "{}", refused.1);
    assert!(
        refused
            .1
            .contains("another planbot already uses this database"),
        "{}",
        refused.1
    );
    for text in [&out, &sessions, &check, &refused.1] {
        assert!(
            !text.contains("s3cret-pass"),
            "the password was shown: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_state_copies_planning_json_into_an_empty_database_only() {
    let Some(pg) = Postgres::start("migrate_state_copies_planning_json") else {
        return;
    };
    let fake = crate::util::FakeClaude::new(serde_json::json!([]));
    let dir = tempfile::tempdir().unwrap();
    console(dir.path(), &fake.bin(), "/plan moved an idea\n", &[]).await;
    let url = pg.database("target").await;
    let env = [("PLANBOT_DATABASE_URL", url.as_str())];
    let (ok, said) = planbot_in(
        dir.path(),
        &fake.bin(),
        &["migrate-state", "--to", "postgres"],
        &env,
    );
    assert!(ok && said.contains("Copied 1 plans"), "{said}");
    // The audit log came along, line for line.
    let logged = std::fs::read_to_string(dir.path().join("state/audit.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(logged >= 1);
    let copied: i64 = client(&url)
        .await
        .query_one("SELECT count(*) FROM planbot_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied as usize, logged, "{said}");
    assert!(said.contains(&format!("{logged} audit lines")), "{said}");
    let (ok, again) = planbot_in(
        dir.path(),
        &fake.bin(),
        &["migrate-state", "--to", "postgres"],
        &env,
    );
    assert!(!ok && again.contains("already holds plans"), "{again}");
    // planbot on the database continues the copied plan's session.
    console(dir.path(), &fake.bin(), "after the move\n", &env).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(crate::util::arg_after(&calls[1], "--resume").is_some());
    let (ok, sessions) = planbot_in(dir.path(), &fake.bin(), &["sessions"], &env);
    assert!(ok && sessions.contains("moved"), "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_fails_the_check_instead_of_hanging_it() {
    // Accepts connections and says nothing, as a black-holed or stuck server would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let fake = crate::util::FakeClaude::new(serde_json::json!([]));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://planbot:pw-never-shown@127.0.0.1:{port}/plans");
    let (dir_path, bin) = (dir.path().to_path_buf(), fake.bin());
    let check = tokio::task::spawn_blocking(move || {
        planbot_in(
            &dir_path,
            &bin,
            &["check"],
            &[("PLANBOT_DATABASE_URL", url.as_str())],
        )
    });
    // A deadline of the test's own: a check that hangs fails here instead of hanging CI.
    let (ok, out) = tokio::time::timeout(std::time::Duration::from_secs(120), check)
        .await
        .expect("planbot check hung on a database that never answers")
        .unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("FAIL store: PostgreSQL at 127.0.0.1:{port}/plans")),
        "{out}"
    );
    assert!(!out.contains("pw-never-shown"), "{out}");
}

/// Fencing: two planbots (two stores, each its own lease holder) on one database. The first
/// holds a chat; once its lease runs out (as when it is paused past it) the second takes the
/// chat at the next epoch, and from then on the database refuses every write of the first,
/// which learns that it lost the chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_lease_that_passed_on_is_refused_by_the_database() {
    use planbot::chat::ChatKey;
    use planbot::store::{SessionStore, StoreError};
    use planbot::store_pg::PgStore;
    let Some(pg) = Postgres::start("a_write_under_a_lease_that_passed_on_is_refused") else {
        return;
    };
    let url = planbot::config::Secret::new(pg.database("fencing").await);
    let lease = std::time::Duration::from_millis(300);
    let store = || PgStore::new(&url, 2).unwrap().with_lease(lease);
    let (first, second) = (store(), store());
    first.migrate().await.unwrap();
    let chat = ChatKey::new("telegram", "7");
    let plan = |turns| crate::store::entry("telegram:7", turns);

    assert_eq!(first.take(&chat).await.unwrap().map(|t| t.epoch), Some(1));
    first.put(&chat, plan(1)).await.unwrap();
    assert_eq!(
        second.take(&chat).await.unwrap().map(|t| t.epoch),
        None,
        "held by the first"
    );
    // A renewal keeps it.
    assert!(first.renew_all().await.unwrap().is_empty());
    assert_eq!(second.take(&chat).await.unwrap().map(|t| t.epoch), None);

    // The first stops renewing (paused); its lease runs out and the second takes the chat.
    tokio::time::sleep(lease * 2).await;
    assert_eq!(second.take(&chat).await.unwrap().map(|t| t.epoch), Some(2));
    second.put(&chat, plan(2)).await.unwrap();

    // The first wakes up and writes its stale plan (epoch 1): refused, by the database.
    let refused = first.put(&chat, plan(99)).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost(ref c)) if c == "telegram:7"),
        "{refused:?}"
    );
    let removed = first.remove(&chat).await;
    assert!(
        matches!(removed, Err(StoreError::LeaseLost(_))),
        "{removed:?}"
    );
    // Even a write that names the current epoch by hand cannot skip the fence's check of it:
    // what the database holds is the second's plan, under epoch 2.
    let client = client(url.expose()).await;
    let row = client
        .query_one(
            "SELECT (entry->>'turns')::int, epoch FROM planbot_sessions WHERE chat = 'telegram:7'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (2, 2));
    let stale = client
        .execute(
            "UPDATE planbot_sessions SET epoch = 1 WHERE chat = 'telegram:7'",
            &[],
        )
        .await;
    assert!(stale.is_err(), "the trigger refuses a stale epoch");
    // It does not get the chat back while the second holds it; a renewal tells a holder what
    // it lost.
    assert_eq!(first.take(&chat).await.unwrap().map(|t| t.epoch), None);
    let other = ChatKey::new("telegram", "8");
    assert_eq!(first.take(&other).await.unwrap().map(|t| t.epoch), Some(1));
    tokio::time::sleep(lease * 2).await;
    assert_eq!(second.take(&other).await.unwrap().map(|t| t.epoch), Some(2));
    assert_eq!(first.renew_all().await.unwrap(), ["telegram:8"]);

    // An idle chat's lease is given back: the next holder comes in at a higher epoch.
    second.give_back(&chat).await.unwrap();
    assert_eq!(first.take(&chat).await.unwrap().map(|t| t.epoch), Some(3));
    first.put(&chat, plan(3)).await.unwrap();
    assert_eq!(second.get(&chat).await.unwrap().unwrap().turns, 3);
}

/// Inbound events are kept in the database before they are acknowledged: a planbot killed with
/// `kill -9` mid-turn (Telegram already told the message was received) handles the message
/// after its restart, and answers it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_acknowledged_before_a_crash_is_answered_after_the_restart() {
    use crate::fake_telegram::{FakeTelegram, TOKEN};
    let Some(pg) = Postgres::start("a_message_acknowledged_before_a_crash_is_answered") else {
        return;
    };
    let url = pg.database("inbox").await;
    let claude = crate::util::FakeClaude::new(serde_json::json!([
        {"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input"},
        {"kind": "slow", "delay_ms": 60000},
    ]));
    let telegram = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let api = telegram.url();
    let env = [
        ("PLANBOT_ALLOWED_USERS", "telegram:100"),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_API_URL", api.as_str()),
        ("PLANBOT_DATABASE_URL", url.as_str()),
    ];
    let planbot = crate::util::run_planbot(dir.path(), &claude, &env);
    telegram.message(100, 100, "/plan kept an idea", None);
    telegram
        .wait_for("the first answer", 30, |t| {
            t.messages(100)
                .iter()
                .any(|m| m.text.contains("Who is it for?"))
        })
        .await;
    telegram.message(100, 100, "families with kids", None);
    crate::util::wait_until(
        "the slow turn",
        30,
        || claude.calls().len() == 2,
        || format!("{:?}", claude.calls()),
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(planbot.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(planbot);

    let _planbot = crate::util::run_planbot(dir.path(), &claude, &env);
    let said = "You said: '";
    telegram
        .wait_for("the kept message's answer", 30, |t| {
            t.messages(100)
                .iter()
                .any(|m| m.text.contains(said) && m.text.contains("families with kids"))
        })
        .await;
    let calls = claude.calls();
    assert_eq!(calls.len(), 3, "handled again once: {calls:?}");
    assert!(
        calls[2]["stdin"]
            .as_str()
            .is_some_and(|s| s.contains("families with kids")),
        "{:?}",
        calls[2]
    );
    // Answered once, and the inbox holds nothing left to handle.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let answers = telegram
        .messages(100)
        .iter()
        .filter(|m| m.text.contains(said))
        .count();
    assert_eq!(answers, 1);
    let client = client(&url).await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE done_at IS NULL), count(*) FROM planbot_inbound",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 2));
    // A redelivery of a kept event (the same message id) is recognised and dropped.
    let store =
        planbot::store_pg::PgStore::new(&planbot::config::Secret::new(url.clone()), 1).unwrap();
    let again = planbot::chat::Inbound {
        event: Some("telegram-message:100:2".into()),
        ..planbot::chat::Inbound::from_text(
            planbot::chat::ChatKey::new("telegram", "100"),
            "100",
            true,
            "families with kids",
        )
    };
    use planbot::store::Inbox;
    let first = store.keep(&again).await.unwrap();
    assert_eq!(
        store.keep(&again).await.unwrap(),
        None,
        "kept once: {first:?}"
    );
    assert_eq!(telegram.faults(), Vec::<String>::new());
}
