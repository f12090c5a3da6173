//! Several planbots on one PostgreSQL database behind Telegram's webhook: any of them receives
//! any update (the test is the load balancer, posting each to one at random), each chat is
//! served by the one holding its lease, and a replica killed mid-turn loses nothing. On
//! Discord, the replicas divide the gateway's shards and serve each other's events the same way.

use std::path::Path;

use serde_json::json;

use crate::fake_discord::{FakeDiscord, GUILD};
use crate::fake_telegram::{FakeTelegram, Stored, TOKEN};
use crate::postgres::Postgres;
use crate::util::{FakeClaude, Running, run_planbot};

const SECRET: &str = "replica-secret_1";
const CHATS: i64 = 50;
const FIRST: i64 = 100;

/// One replica: its own state dir and HTTP port, the shared workspace and database.
fn replica(root: &Path, n: usize, claude: &FakeClaude, api: &str, db: &str, port: u16) -> Running {
    replica_with(root, n, claude, api, db, port, &[])
}

/// [`replica`] with more settings.
fn replica_with(
    root: &Path,
    n: usize,
    claude: &FakeClaude,
    api: &str,
    db: &str,
    port: u16,
    extra: &[(&str, &str)],
) -> Running {
    let dir = root.join(format!("replica-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let workspace = root.join("workspace");
    let workspace = workspace.to_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let allowed: Vec<String> = (FIRST..FIRST + CHATS)
        .map(|u| format!("telegram:{u}"))
        .collect();
    let allowed = allowed.join(",");
    let mut env = vec![
        ("PLANBOT_ALLOWED_USERS", allowed.as_str()),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_API_URL", api),
        // The load balancer's address (the test posts to each replica itself).
        ("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:9/telegram/hook"),
        ("TELEGRAM_WEBHOOK_SECRET", SECRET),
        ("PLANBOT_HTTP_ADDR", addr.as_str()),
        ("PLANBOT_DATABASE_URL", db),
        ("PLANBOT_LEASE_SECS", "3"),
        // Telegram's 30 messages a second in all, divided among them.
        ("PLANBOT_REPLICAS", "3"),
        ("PLANBOT_WORKSPACE_DIR", workspace),
    ];
    env.extend_from_slice(extra);
    run_planbot(&dir, claude, &env)
}

async fn post(port: u16, update: &serde_json::Value) {
    let url = format!("http://127.0.0.1:{port}/telegram/hook");
    if let Err(e) = crate::fake_telegram::deliver(&url, SECRET, update).await {
        panic!("{e}");
    }
}

/// How many kept events are not marked handled.
async fn waiting(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM planbot_inbound WHERE done_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A stand-in `claude` whose every turn (of `turns`) takes `ms`.
fn slow_claude(turns: usize, ms: u64) -> FakeClaude {
    let steps: Vec<serde_json::Value> = (0..turns)
        .map(|_| json!({"kind": "slow", "delay_ms": ms}))
        .collect();
    FakeClaude::new(json!(steps))
}

/// The parent of a running `claude` call: the replica that runs it.
fn parent_of(call: &serde_json::Value) -> i32 {
    let pid = call["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's name in parentheses: state, then the parent's pid.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn count(telegram: &FakeTelegram, chat: i64, what: &str) -> usize {
    telegram
        .messages(chat)
        .iter()
        .filter(|m: &&Stored| m.text.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_every_chat_once_and_survive_a_kill_mid_turn() {
    let Some(pg) = Postgres::start("three_replicas_serve_every_chat_once") else {
        return;
    };
    let db = pg.database("replicas").await;
    // Every turn takes a second.
    let claude = slow_claude(400, 1000);
    let telegram = FakeTelegram::start().await;
    let root = tempfile::tempdir().unwrap();
    let api = telegram.url();
    let ports: Vec<u16> = (0..3).map(|_| crate::util::free_port()).collect();
    let mut replicas: Vec<Option<Running>> = ports
        .iter()
        .enumerate()
        .map(|(n, port)| Some(replica(root.path(), n, &claude, &api, &db, *port)))
        .collect();
    let chats: Vec<i64> = (FIRST..FIRST + CHATS).collect();
    // Each plan starts on replica `chat % 3` (the first replica to see it takes the chat).
    for &chat in &chats {
        let update = telegram.update(chat, chat, &format!("/plan plan-{chat} idea {chat}"));
        post(ports[chat as usize % 3], &update).await;
    }
    telegram
        .wait_for("every plan's first answer", 60, |t| {
            chats
                .iter()
                .all(|&c| count(t, c, "idea") >= 1 && count(t, c, "You said") >= 1)
        })
        .await;
    // Follow-ups, each to a replica at random: the chat's holder answers.
    let started = claude.calls().len();
    for &chat in &chats {
        let update = telegram.update(chat, chat, &format!("detail for chat {chat}"));
        post(ports[fastrand::usize(0..3)], &update).await;
    }
    // Mid-turn: the replica running the last turn to start dies.
    crate::util::wait_until(
        "the follow-up turns to start",
        30,
        || claude.calls().len() >= started + CHATS as usize,
        || format!("{} calls", claude.calls().len()),
    )
    .await;
    let running = parent_of(claude.calls().last().unwrap());
    let victim = replicas
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.0.id() as i32 == running))
        .expect("a replica runs the turn");
    let killed = replicas[victim].take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(killed);
    let alive: Vec<u16> = (0..3).filter(|&n| n != victim).map(|n| ports[n]).collect();
    telegram
        .wait_for("every follow-up answered", 60, |t| {
            chats
                .iter()
                .all(|&c| count(t, c, &format!("detail for chat {c}")) >= 1)
        })
        .await;
    // Every plan finishes, through a live replica.
    for &chat in &chats {
        let update = telegram.update(chat, chat, "/finalize");
        post(alive[fastrand::usize(0..2)], &update).await;
    }
    telegram
        .wait_for("every plan finalized", 60, |t| {
            chats.iter().all(|&c| count(t, c, "finalized") >= 1)
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for &chat in &chats {
        assert_eq!(
            count(&telegram, chat, &format!("detail for chat {chat}")),
            1,
            "chat {chat}: the follow-up answered once: {:#?}",
            telegram.messages(chat)
        );
        assert_eq!(count(&telegram, chat, "finalized"), 1, "chat {chat}");
        let plan = root
            .path()
            .join(format!("workspace/plan-{chat}/final-plan.md"));
        assert!(plan.is_file(), "{}", plan.display());
    }
    // The killed replica's chats were taken over and told so.
    let told = chats
        .iter()
        .filter(|&&c| count(&telegram, c, "another one took over") == 1)
        .count();
    assert!(told >= 1, "no chat was taken over");
    // A live replica reports itself ready to the load balancer, with the chats it holds.
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", alive[0]))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(
        text.starts_with("ready: ") && text.contains("chats held"),
        "{text}"
    );
    // Nothing is left waiting.
    let client = crate::postgres::client(&db).await;
    assert_eq!(waiting(&client).await, 0);
    // Every replica's audit lines are in the database: each chat's /finalize, wherever it ran.
    let audited: i64 = client
        .query_one(
            "SELECT count(DISTINCT user_key) FROM planbot_audit WHERE line->>'action' = 'finalize'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, CHATS);
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

/// Fencing: a replica stopped with SIGSTOP mid-turn, past its lease, then continued: the other
/// replica has taken the chat over and answered; the stopped one's write of its stale plan is
/// refused by the database, it says nothing to the chat, and it gives the chat up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_its_lease_cannot_write_its_stale_plan() {
    use nix::sys::signal::{Signal, kill};
    let Some(pg) = Postgres::start("a_replica_paused_past_its_lease") else {
        return;
    };
    let db = pg.database("paused").await;
    let claude = FakeClaude::new(json!([
        {"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input"},
        {"kind": "slow", "delay_ms": 6000},
    ]));
    let telegram = FakeTelegram::start().await;
    let root = tempfile::tempdir().unwrap();
    let api = telegram.url();
    let ports = [crate::util::free_port(), crate::util::free_port()];
    let mut both = vec![
        replica(root.path(), 0, &claude, &api, &db, ports[0]),
        replica(root.path(), 1, &claude, &api, &db, ports[1]),
    ];
    let chat = FIRST;
    post(
        ports[0],
        &telegram.update(chat, chat, "/plan fenced an idea"),
    )
    .await;
    telegram
        .wait_for("the first answer", 30, |t| {
            count(t, chat, "Who is it for?") == 1
        })
        .await;
    post(ports[0], &telegram.update(chat, chat, "a stale question")).await;
    crate::util::wait_until(
        "the slow turn",
        30,
        || claude.calls().len() == 2,
        || format!("{:?}", claude.calls()),
    )
    .await;
    // The replica running the turn (whichever took the chat) is paused.
    let running = parent_of(&claude.calls()[1]);
    let n = both
        .iter()
        .position(|r| r.0.id() as i32 == running)
        .unwrap();
    let (paused, _other) = (both.remove(n), both.remove(0));
    let pid = nix::unistd::Pid::from_raw(running);
    kill(pid, Signal::SIGSTOP).unwrap();

    // The other replica takes the chat once the lease runs out, and answers the message.
    let logs = |n: usize| {
        std::fs::read_to_string(root.path().join(format!("replica-{n}/planbot.log")))
            .unwrap_or_default()
    };
    crate::util::wait_until(
        "the other replica's answer",
        30,
        || {
            count(&telegram, chat, "another one took over") == 1
                && count(&telegram, chat, "a stale question") == 1
        },
        || format!("{:#?}\n{}", telegram.messages(chat), logs(1 - n)),
    )
    .await;
    let client = crate::postgres::client(&db).await;
    let read = || async {
        let row = client
            .query_one(
                "SELECT entry, epoch FROM planbot_sessions WHERE chat = $1",
                &[&format!("telegram:{chat}")],
            )
            .await
            .unwrap();
        (row.get::<_, serde_json::Value>(0), row.get::<_, i64>(1))
    };
    let taken = read().await;
    assert_eq!(taken.1, 2, "written under the new lease");

    // The paused replica goes on: its turn ends (the fake finished meanwhile), and its write of
    // the plan is refused.
    kill(pid, Signal::SIGCONT).unwrap();
    let log = root.path().join(format!("replica-{n}/planbot.log"));
    crate::util::wait_until(
        "the paused replica's refused write",
        30,
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("passed to another planbot")),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        read().await,
        taken,
        "the database holds the new holder's plan"
    );
    assert_eq!(
        count(&telegram, chat, "a stale question"),
        1,
        "answered once"
    );
    assert_eq!(
        count(&telegram, chat, "planbot could not save"),
        0,
        "{:#?}",
        telegram.messages(chat)
    );

    // It gave the chat up: a message it receives is answered by the holder.
    let before = claude.calls().len();
    post(ports[n], &telegram.update(chat, chat, "after the pause")).await;
    telegram
        .wait_for("the answer after the pause", 30, |t| {
            count(t, chat, "after the pause") == 1
        })
        .await;
    assert_eq!(claude.calls().len(), before + 1);
    assert_eq!(read().await.1, 2, "still the second replica's");
    assert_eq!(telegram.faults(), Vec::<String>::new());
    drop(paused);

    // `planbot check` on a replica that does not see the shared workspaces says so.
    let out = crate::console::planbot()
        .arg("check")
        .env("PLANBOT_CLAUDE_BIN", claude.bin())
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", &api)
        .env("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:9/telegram/hook")
        .env("TELEGRAM_WEBHOOK_SECRET", SECRET)
        .env("PLANBOT_DATABASE_URL", &db)
        .env("PLANBOT_STATE_DIR", root.path().join("elsewhere/state"))
        .env(
            "PLANBOT_WORKSPACE_DIR",
            root.path().join("elsewhere/workspace"),
        )
        .env_remove("CLAUDE_CONFIG_DIR")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("replicas: chats leased for 15 s"),
        "{report}"
    );
    assert!(
        report.contains("warning: 1 of 1 plans in the database have no workspace here"),
        "{report}"
    );
    assert!(
        report.contains("warning: CLAUDE_CONFIG_DIR is not set"),
        "{report}"
    );
}

/// A user's daily budget counts what every replica spent: once the replica that ran their turns
/// is gone, the other refuses them a new plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_counts_every_replica() {
    let Some(pg) = Postgres::start("the_daily_budget_counts_every_replica") else {
        return;
    };
    let db = pg.database("budget").await;
    let claude = FakeClaude::new(json!([]));
    let telegram = FakeTelegram::start().await;
    let root = tempfile::tempdir().unwrap();
    let api = telegram.url();
    let ports = [crate::util::free_port(), crate::util::free_port()];
    let budget = [("PLANBOT_USER_DAILY_BUDGET_USD", "0.0015")];
    let mut both = vec![
        replica_with(root.path(), 0, &claude, &api, &db, ports[0], &budget),
        replica_with(root.path(), 1, &claude, &api, &db, ports[1], &budget),
    ];
    let user = FIRST;
    post(
        ports[0],
        &telegram.update(user, user, "/plan spend an idea"),
    )
    .await;
    post(ports[0], &telegram.update(user, user, "more detail")).await;
    telegram
        .wait_for("two answers", 30, |t| count(t, user, "You said") == 2)
        .await;
    // Each turn cost $0.001: the user is over the cap. The replica that ran them goes away.
    let logs: Vec<String> = (0..2)
        .map(|n| {
            std::fs::read_to_string(root.path().join(format!("replica-{n}/planbot.log")))
                .unwrap_or_default()
        })
        .collect();
    let n = logs
        .iter()
        .position(|l| l.contains("took a chat's lease"))
        .unwrap();
    // Its audit lines reach the database within a moment.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let gone = both.remove(n);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gone.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(gone);
    // The other replica has never served this user: it knows the spending from the database
    // (read before it decides).
    let other_chat = FIRST + 1;
    post(
        ports[1 - n],
        &telegram.update(other_chat, user, "/plan another an idea"),
    )
    .await;
    telegram
        .wait_for("the refusal", 30, |t| {
            count(t, other_chat, "You have spent $0.00 today") == 1
                || count(t, other_chat, "your daily budget") == 1
        })
        .await;
    assert_eq!(
        count(&telegram, other_chat, "You said"),
        0,
        "no turn started"
    );
    drop(both);
}

/// One replica on Discord's gateway: `shards` of two, `runs` turns at once, the shared database
/// and workspace; its `claude` calls carry `REPLICA=<name>`. Returns it and its HTTP port.
fn discord_replica(
    root: &Path,
    name: &str,
    claude: &FakeClaude,
    discord: &FakeDiscord,
    db: &str,
    shards: &str,
    runs: &str,
) -> (Running, u16) {
    let dir = root.join(format!("replica-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let workspace = root.join("workspace");
    let (url, port) = (discord.url(), crate::util::free_port());
    let addr = format!("127.0.0.1:{port}");
    let running = run_planbot(
        &dir,
        claude,
        &[
            ("PLANBOT_ALLOWED_USERS", "discord:101"),
            ("DISCORD_TOKEN", crate::fake_discord::TOKEN),
            ("DISCORD_API_URL", url.as_str()),
            ("DISCORD_SHARDS", shards),
            ("PLANBOT_DATABASE_URL", db),
            ("PLANBOT_LEASE_SECS", "3"),
            ("PLANBOT_REPLICAS", "2"),
            ("PLANBOT_HTTP_ADDR", addr.as_str()),
            ("PLANBOT_WORKSPACE_DIR", workspace.to_str().unwrap()),
            ("PLANBOT_MAX_CONCURRENT_RUNS", runs),
            ("REPLICA", name),
            ("PLANBOT_CHILD_ENV", "REPLICA"),
        ],
    );
    (running, port)
}

/// Which replica ran the turns of `slug`, in order.
fn ran(claude: &FakeClaude, slug: &str) -> Vec<String> {
    claude
        .calls()
        .iter()
        .filter(|c| c["cwd"].as_str().is_some_and(|d| d.ends_with(slug)))
        .map(|c| c["env"]["REPLICA"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Discord's gateway divided between two replicas (`DISCORD_SHARDS` 0/2 and 1/2): each receives
/// only its shards' guilds, and a chat whose events one receives is served by the other when it
/// holds the chat, through the database's inbox; interactions are acknowledged where they
/// arrive and answered by the chat's holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_divide_discords_shards_and_serve_each_others_events() {
    let Some(pg) = Postgres::start("two_replicas_divide_discords_shards") else {
        return;
    };
    let db = pg.database("shards").await;
    let claude = slow_claude(20, 1500);
    let discord = FakeDiscord::start().await;
    let root = tempfile::tempdir().unwrap();
    // Each runs one turn at a time, so of two chats at work at once each runs one.
    let (_a, a_port) = discord_replica(root.path(), "a", &claude, &discord, &db, "0/2", "1");
    let (_b, b_port) = discord_replica(root.path(), "b", &claude, &discord, &db, "1-1/2", "1");
    discord
        .wait_for("both shards connected", 30, |d| {
            let mut shards = d.identified_shards();
            shards.sort();
            shards == [(0, 2), (1, 2)]
        })
        .await;
    // GUILD is on shard 0 (`a`'s); this one on shard 1 (`b`'s).
    let other_guild: u64 = 1 << 22;
    assert_eq!(crate::fake_discord::shard_of(Some(GUILD), 2), 0);
    assert_eq!(crate::fake_discord::shard_of(Some(other_guild), 2), 1);
    let plan = |channel: u64, guild: u64, slug: &str| {
        discord.slash(
            channel,
            101,
            Some(guild),
            "plan",
            &[("slug", slug), ("description", &format!("idea {slug}"))],
        )
    };
    let answered = |d: &FakeDiscord, channel: u64, what: &str| {
        d.messages(channel)
            .iter()
            .filter(|m| m.content.contains(what))
            .count()
    };
    // Two plans in channels of shard 0: only `a` receives them, yet while one runs the other
    // is taken by `b` from the inbox.
    plan(501, GUILD, "alpha");
    crate::util::wait_until(
        "alpha's turn to start",
        30,
        || !ran(&claude, "alpha").is_empty(),
        || format!("{:?}", claude.calls().len()),
    )
    .await;
    let beta = plan(502, GUILD, "beta");
    discord
        .wait_for("both plans' first answers", 30, |d| {
            answered(d, 501, "You said") == 1 && answered(d, 502, "You said") == 1
        })
        .await;
    let mut runners = [ran(&claude, "alpha"), ran(&claude, "beta")].concat();
    runners.sort();
    assert_eq!(runners, ["a", "b"], "one chat of shard 0 was served by b");
    // A plan on shard 1.
    plan(601, other_guild, "gamma");
    discord
        .wait_for("gamma's first answer", 30, |d| {
            answered(d, 601, "You said") == 1
        })
        .await;
    // The receiving replica acknowledged the command at once; the holder answered the chat.
    assert_eq!(discord.acknowledged(&beta), Some(5));
    // A press on beta's buttons arrives at `a` (its shard) and is served by beta's holder.
    let with_buttons = discord
        .messages(502)
        .into_iter()
        .rfind(|m| !m.buttons().is_empty())
        .expect("beta's buttons");
    let (_, continue_id) = with_buttons.buttons()[0].clone();
    let press = discord.press(101, &with_buttons, &continue_id);
    // A follow-up in gamma's channel, on `b`'s shard.
    discord.say_in(other_guild, 601, 101, "more about gamma", false);
    discord
        .wait_for("the press and the follow-up served", 30, |d| {
            answered(d, 502, "You said") == 2 && answered(d, 601, "more about gamma") == 1
        })
        .await;
    assert_eq!(discord.acknowledged(&press), Some(6));
    // Each event handled once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(answered(&discord, 502, "You said"), 2);
    assert_eq!(answered(&discord, 601, "more about gamma"), 1);
    assert_eq!(ran(&claude, "alpha").len(), 1);
    assert_eq!(ran(&claude, "beta").len(), 2);
    assert_eq!(ran(&claude, "gamma").len(), 2);
    // Every event is marked handled once its job is over (the job's last calls, withdrawing
    // buttons, may wait out Discord's rate limits).
    let client = crate::postgres::client(&db).await;
    let mut left = -1;
    for _ in 0..300 {
        left = waiting(&client).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "events left waiting");
    // Each gateway session's events came numbered without a gap, as serenity checks them.
    for name in ["a", "b"] {
        let log = root.path().join(format!("replica-{name}/planbot.log"));
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("Sequence off"), "replica {name}:\n{log}");
    }
    // Without Telegram's webhook, each still answers the load balancer's probes.
    for port in [a_port, b_port] {
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        assert!(ready.text().await.unwrap().starts_with("ready: "));
    }
    assert_eq!(discord.faults(), Vec::<String>::new());
}

/// The holders of the Discord shards' leases in force, by shard (none before the replicas
/// have made the table).
async fn shard_holders(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT chat, holder FROM planbot_leases
             WHERE chat LIKE 'discord-shard:%' AND expires_at > now() ORDER BY chat",
            &[],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits (30 s at most) until the two shards' leases are held by two replicas (`apart`) or by
/// one, and the gateway has seen at least `identified` IDENTIFYs.
async fn shards_settle(
    client: &tokio_postgres::Client,
    discord: &FakeDiscord,
    apart: bool,
    identified: usize,
) {
    let mut holders = Vec::new();
    for _ in 0..300 {
        holders = shard_holders(client).await;
        let settled = holders.len() == 2 && (holders[0].1 != holders[1].1) == apart;
        if settled && discord.identified_shards().len() >= identified {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the shards did not settle {}: {holders:?}; IDENTIFYs {:?}",
        if apart { "one each" } else { "on one replica" },
        discord.identified_shards()
    );
}

/// `DISCORD_SHARDS=shared/2`: two replicas lease a shard each; when one is killed, the other
/// takes its shard over once the lease has run out, and that shard's guild is answered again;
/// a replica that joins then gets its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_discord_shard_is_taken_over_by_another() {
    let Some(pg) = Postgres::start("a_dead_replicas_discord_shard") else {
        return;
    };
    let db = pg.database("shared_shards").await;
    let claude = slow_claude(10, 200);
    let discord = FakeDiscord::start().await;
    let root = tempfile::tempdir().unwrap();
    let (a, _) = discord_replica(root.path(), "a", &claude, &discord, &db, "shared/2", "4");
    let (_b, _) = discord_replica(root.path(), "b", &claude, &discord, &db, "shared/2", "4");
    // One shard each (a replica that started first may take both and give one back).
    let client = crate::postgres::client(&db).await;
    shards_settle(&client, &discord, true, 2).await;
    let identified = discord.identified_shards().len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(a);
    // The survivor connects the dead one's shard: both leases are its own.
    shards_settle(&client, &discord, false, identified + 1).await;
    let identified = discord.identified_shards().len();
    // Both shards' guilds are served, by the survivor.
    let other_guild: u64 = 1 << 22;
    for (channel, guild, slug) in [(501, GUILD, "alpha"), (601, other_guild, "gamma")] {
        discord.slash(
            channel,
            101,
            Some(guild),
            "plan",
            &[("slug", slug), ("description", "an idea")],
        );
    }
    discord
        .wait_for("both guilds answered", 30, |d| {
            [501, 601]
                .iter()
                .all(|&c| d.messages(c).iter().any(|m| m.content.contains("You said")))
        })
        .await;
    assert_eq!(ran(&claude, "alpha"), ["b"]);
    assert_eq!(ran(&claude, "gamma"), ["b"]);
    // A replica that joins gets its share: the survivor gives a shard back and it takes it.
    let (_c, _) = discord_replica(root.path(), "c", &claude, &discord, &db, "shared/2", "4");
    shards_settle(&client, &discord, true, identified + 1).await;
    assert_eq!(discord.faults(), Vec::<String>::new());
}
