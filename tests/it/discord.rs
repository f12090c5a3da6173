//! The Discord front end end to end: the real `planbot run` against the fake Discord (REST and
//! gateway) and the fake `claude`.

use std::path::Path;

use serde_json::json;

use crate::fake_discord::{Bucket, FakeDiscord, GUILD, Stored, TOKEN};
use crate::util::{FakeClaude, Running, arg_after, button, run_planbot};

const CHANNEL: u64 = 555;

/// The choices planbot answers an autocompletion of `/plan`'s slug with, in `channel`.
async fn completions(discord: &FakeDiscord, channel: u64, typed: &str) -> serde_json::Value {
    let complete = discord.autocomplete(channel, USER, typed);
    discord
        .wait_for("the completions", 10, |d| {
            d.acknowledged(&complete).is_some()
        })
        .await;
    discord
        .calls()
        .into_iter()
        .rev()
        .find(|(_, path, body)| path.ends_with("/callback") && body["type"] == 8)
        .expect("an autocomplete answer")
        .2["data"]["choices"]
        .clone()
}
const OTHER_CHANNEL: u64 = 556;
const USER: u64 = 101;
const STRANGER: u64 = 666;

/// `planbot run` against the fake Discord, allowing users 100..=120, commands in [`GUILD`].
fn start(dir: &Path, claude: &FakeClaude, discord: &FakeDiscord) -> Running {
    let allowed: Vec<String> = (100..=120).map(|u| format!("discord:{u}")).collect();
    let allowed = allowed.join(",");
    let guild = GUILD.to_string();
    let url = discord.url();
    run_planbot(
        dir,
        claude,
        &[
            ("PLANBOT_ALLOWED_USERS", allowed.as_str()),
            ("DISCORD_TOKEN", TOKEN),
            ("DISCORD_API_URL", url.as_str()),
            ("DISCORD_GUILD_ID", guild.as_str()),
            ("RUST_LOG", "debug"),
        ],
    )
}

async fn started(
    steps: serde_json::Value,
) -> (FakeClaude, FakeDiscord, tempfile::TempDir, Running) {
    let claude = FakeClaude::new(steps);
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let planbot = start(dir.path(), &claude, &discord);
    discord
        .wait_for("the slash commands", 30, |d| d.commands().is_some())
        .await;
    (claude, discord, dir, planbot)
}

/// The channel's messages that carry buttons, newest last.
fn with_buttons(discord: &FakeDiscord, channel: u64) -> Vec<Stored> {
    discord
        .messages(channel)
        .into_iter()
        .filter(|m| !m.buttons().is_empty())
        .collect()
}

/// About 6,000 characters of markdown with headings, code blocks and a list.
fn long_markdown() -> String {
    let mut md = String::from("# Engineering review\n\nHere is the design, in parts.\n\n");
    for i in 0..5 {
        md.push_str(&format!(
            "## Component {i}\n\n{}\n\n```rust\n{}```\n\n",
            "The component does one thing well. ".repeat(12),
            "fn handle(x: &str) -> Option<u8> { x.parse().ok() }\n".repeat(14)
        ));
    }
    md.push_str("- a list item with **bold**\n- and `code`\n\nPHASE_STATUS: needs_input");
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_from_start_to_finish_in_a_discord_channel() {
    let long = long_markdown();
    assert!((5_500..7_000).contains(&long.chars().count()));
    let (claude, discord, dir, _planbot) = started(json!([
        {"kind": "answer", "text": "What problem does it solve?\n\nPHASE_STATUS: needs_input", "delay_ms": 4000},
        {"kind": "answer", "text": long},
        {"kind": "answer", "text": "CEO review: keep it small.\n\nPHASE_STATUS: ready_to_advance"},
        {"kind": "answer", "text": "# Final plan\n\nShip it.\n\nPHASE_STATUS: ready_to_advance"},
    ]))
    .await;
    let (guild, commands) = discord.commands().unwrap();
    assert_eq!(guild, Some(GUILD), "registered in the configured guild");
    let names: Vec<&str> = commands
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "plan", "advance", "finalize", "cancel", "resume", "status", "help"
        ]
    );
    assert_eq!(commands[0]["options"][0]["autocomplete"], true);

    // A stranger is refused, to themselves only, and no subprocess starts; bots are ignored.
    let refused = discord.slash(
        CHANNEL,
        STRANGER,
        Some(GUILD),
        "plan",
        &[("slug", "evil"), ("description", "rm -rf /")],
    );
    discord.say(OTHER_CHANNEL, USER + 1, "/plan bot-plan from a bot", true);
    discord
        .wait_for("the refusal", 10, |d| !d.answers(&refused).is_empty())
        .await;
    let refusal = discord.answers(&refused).remove(0);
    assert!(
        refusal.ephemeral && refusal.content.contains("not allowed"),
        "{refusal:?}"
    );
    assert_eq!(discord.acknowledged(&refused), Some(5));

    // /plan with a turn slower than Discord's 3 s: deferred at once, shown to the channel.
    let plan = discord.slash(
        CHANNEL,
        USER,
        Some(GUILD),
        "plan",
        &[("slug", "todo-app"), ("description", "a shared todo list")],
    );
    discord
        .wait_for("the first reply", 30, |d| {
            with_buttons(d, CHANNEL).len() == 1
        })
        .await;
    assert_eq!(discord.acknowledged(&plan), Some(5));
    let echo = discord.answers(&plan);
    assert!(
        echo.len() == 1 && !echo[0].ephemeral && echo[0].content.contains("todo-app"),
        "{echo:?}"
    );
    let first = with_buttons(&discord, CHANNEL).remove(0);
    assert_eq!(first.content, "What problem does it solve?");
    // The working message was edited while the turn ran, and taken away after the answer.
    let calls = discord.calls();
    let progress = calls
        .iter()
        .find(|(m, _, body)| {
            m == "PATCH"
                && body["content"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("⏳") && t.ends_with('s'))
        })
        .map(|(_, path, _)| path.clone())
        .expect("the working message shows elapsed time");
    assert!(!progress.ends_with(&format!("/messages/{}", first.id)));
    let answered = calls
        .iter()
        .position(|(m, _, body)| m == "POST" && body["content"] == first.content.as_str())
        .expect("the answer was posted as a message of its own");
    let deleted = calls
        .iter()
        .position(|(m, path, _)| m == "DELETE" && *path == progress)
        .expect("the working message was taken away");
    assert!(
        answered < deleted,
        "the answer comes before the bookkeeping"
    );
    assert!(
        discord
            .calls()
            .iter()
            .any(|(_, path, _)| path.ends_with("/typing"))
    );

    // A plain message resumes the same session; the long reply arrives in valid parts.
    let before = discord.messages(CHANNEL).len();
    discord.say(CHANNEL, USER, "Families with kids", false);
    discord
        .wait_for("the long reply, and the older buttons withdrawn", 30, |d| {
            let buttons = with_buttons(d, CHANNEL);
            buttons.len() == 1
                && d.messages(CHANNEL).len() >= before + 3
                && d.messages(CHANNEL).last().map(|m| m.id) == Some(buttons[0].id)
        })
        .await;
    let calls = claude.calls();
    assert_eq!(calls.len(), 2, "the bot's message started nothing");
    assert!(arg_after(&calls[1], "--resume").is_some(), "{:?}", calls[1]);
    assert!(
        calls[1]["stdin"]
            .as_str()
            .unwrap()
            .contains("Families with kids")
    );
    let parts: Vec<Stored> = discord
        .messages(CHANNEL)
        .into_iter()
        .skip(before - 1)
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    for part in &parts {
        assert!(part.content.chars().count() <= 2000);
        assert_eq!(
            part.content.matches("```").count() % 2,
            0,
            "{}",
            part.content
        );
    }
    let all: String = parts.iter().map(|p| p.content.as_str()).collect();
    for i in 0..5 {
        assert!(all.contains(&format!("## Component {i}")));
    }
    assert!(all.contains("and `code`"));
    assert_eq!(
        discord
            .messages(CHANNEL)
            .iter()
            .filter(|m| !m.buttons().is_empty())
            .count(),
        1,
        "only the newest reply keeps buttons"
    );

    // Continue advances the phase; pressing the old button again is stale.
    let latest = with_buttons(&discord, CHANNEL).pop().unwrap();
    let press = discord.press(
        USER,
        &latest,
        &button(latest.buttons(), "Continue to /plan-ceo-review"),
    );
    discord
        .wait_for("the CEO review", 30, |d| {
            with_buttons(d, CHANNEL)
                .last()
                .is_some_and(|m| m.content.starts_with("CEO review"))
        })
        .await;
    assert_eq!(discord.acknowledged(&press), Some(6));
    let calls = claude.calls();
    assert_eq!(
        arg_after(&calls[2], "--resume"),
        None,
        "a new phase is a fresh session"
    );
    assert!(
        calls[2]["stdin"]
            .as_str()
            .unwrap()
            .contains("plan-ceo-review")
    );
    // The stale press's answer is a follow-up, which meets a 429 and is sent again after it.
    discord.flood(Bucket::Webhook(String::new()));
    let again = discord.press(
        USER,
        &latest,
        &button(latest.buttons(), "Continue to /plan-ceo-review"),
    );
    discord
        .wait_for("the stale answer", 10, |d| !d.answers(&again).is_empty())
        .await;
    let stale = discord.answers(&again).remove(0);
    assert!(
        stale.ephemeral && stale.content.contains("no longer current"),
        "{stale:?}"
    );
    assert_eq!(claude.calls().len(), 3, "a stale press starts nothing");

    // Finalize attaches final-plan.md.
    let current = with_buttons(&discord, CHANNEL).pop().unwrap();
    discord.press(USER, &current, &button(current.buttons(), "Finalize"));
    discord
        .wait_for("the final plan", 30, |d| {
            d.messages(CHANNEL)
                .iter()
                .any(|m| !m.attachments.is_empty())
        })
        .await;
    let file = discord
        .messages(CHANNEL)
        .into_iter()
        .find_map(|m| m.attachments.into_iter().next())
        .unwrap();
    assert_eq!(file.0, "final-plan.md");
    assert_eq!(
        String::from_utf8(file.1).unwrap(),
        "# Final plan\n\nShip it.\n"
    );
    assert!(
        dir.path()
            .join("workspace/todo-app/final-plan.md")
            .is_file()
    );

    // /plan's slug is completed from the channel's own workspaces; another channel is offered
    // none of them.
    assert_eq!(
        completions(&discord, CHANNEL, "to").await,
        json!([{"name": "todo-app", "value": "todo-app"}])
    );
    assert_eq!(completions(&discord, OTHER_CHANNEL, "to").await, json!([]));

    assert!(
        claude
            .calls()
            .iter()
            .all(|c| !c["stdin"].as_str().unwrap().contains("rm -rf"))
    );
    assert!(
        discord.heartbeats() >= 1,
        "heartbeats are sent and acknowledged"
    );
    assert_eq!(discord.faults(), Vec::<String>::new());
    let log = std::fs::read_to_string(dir.path().join("planbot.log")).unwrap();
    assert!(
        !log.contains("discord-test-secret-token"),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_meets_a_server_error_is_sent_again() {
    let (_claude, discord, _dir, _planbot) = started(json!([
        {"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input", "delay_ms": 1000}
    ]))
    .await;
    discord.slash(
        CHANNEL,
        USER,
        Some(GUILD),
        "plan",
        &[("slug", "todo-app"), ("description", "a shared list")],
    );
    // While the turn runs, the channel's next message meets a 502.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    discord.server_error_next(CHANNEL);
    discord
        .wait_for("the answer, sent again", 30, |d| {
            d.messages(CHANNEL)
                .iter()
                .any(|m| m.content.contains("Who is it for?"))
        })
        .await;
    let posts = discord
        .calls()
        .into_iter()
        .filter(|(m, _, body)| {
            m == "POST"
                && body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains("Who is it for?"))
        })
        .count();
    assert_eq!(posts, 2, "refused once, then delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_plan_at_once_through_a_429() {
    let (claude, discord, _dir, _planbot) = started(json!([])).await;
    discord.flood_next(OTHER_CHANNEL);
    // Edits and typing have buckets of their own: the cancellation's removal of buttons meets a
    // 429 and is sent again after it; a refused typing is not (nor anything inside its window).
    discord.flood(Bucket::Edits(OTHER_CHANNEL));
    discord.flood(Bucket::Typing(CHANNEL));
    let a = discord.slash(
        CHANNEL,
        USER,
        Some(GUILD),
        "plan",
        &[("slug", "alpha"), ("description", "first idea")],
    );
    let b = discord.slash(
        OTHER_CHANNEL,
        USER + 1,
        Some(GUILD),
        "plan",
        &[("slug", "beta"), ("description", "second idea")],
    );
    discord
        .wait_for("both first replies", 30, |d| {
            with_buttons(d, CHANNEL).len() == 1 && with_buttons(d, OTHER_CHANNEL).len() == 1
        })
        .await;
    assert_eq!(discord.acknowledged(&a), Some(5));
    assert_eq!(discord.acknowledged(&b), Some(5));
    let calls = claude.calls();
    assert_eq!(calls.len(), 2);
    let cwds: Vec<&str> = calls.iter().map(|c| c["cwd"].as_str().unwrap()).collect();
    assert!(
        cwds.iter().any(|c| c.ends_with("alpha")) && cwds.iter().any(|c| c.ends_with("beta")),
        "{cwds:?}"
    );
    // The 429 refused one message (the first, `Planning ...`); it was sent again after the window
    // (a call inside it would be a fault) and arrived first, in order.
    let posts = discord
        .calls()
        .iter()
        .filter(|(m, path, _)| m == "POST" && path == &format!("channels/{OTHER_CHANNEL}/messages"))
        .count();
    let stored = discord.messages(OTHER_CHANNEL);
    assert_eq!(posts, stored.len() + 1, "exactly one message was refused");
    assert!(
        stored[0].content.starts_with("Planning `beta`"),
        "the refused message was sent again: {stored:?}"
    );

    // /status answers in the channel; /cancel drops the plan.
    discord.slash(CHANNEL, USER, Some(GUILD), "status", &[]);
    discord
        .wait_for("the status", 10, |d| {
            // The status text itself: earlier messages name `alpha` too.
            d.messages(CHANNEL)
                .iter()
                .any(|m| m.content.starts_with("`alpha`: phase 1 of 4"))
        })
        .await;
    discord.slash(OTHER_CHANNEL, USER + 1, Some(GUILD), "cancel", &[]);
    discord
        .wait_for("the cancellation", 10, |d| {
            d.messages(OTHER_CHANNEL)
                .iter()
                .any(|m| m.content.starts_with("Cancelled planning `beta`"))
        })
        .await;
    assert!(
        with_buttons(&discord, OTHER_CHANNEL).is_empty(),
        "the cancelled plan's buttons are gone"
    );
    assert_eq!(discord.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_land_in_the_plans_inbox_from_discords_cdn_only() {
    let (claude, discord, dir, _planbot) = started(json!([])).await;
    discord.slash(
        CHANNEL,
        USER,
        Some(GUILD),
        "plan",
        &[("slug", "app"), ("description", "a shared todo list")],
    );
    discord
        .wait_for("the first reply", 30, |d| {
            with_buttons(d, CHANNEL).len() == 1
        })
        .await;

    // A stranger's attachments are never downloaded.
    discord.say_with_files(
        CHANNEL,
        STRANGER,
        "look",
        vec![("evil.md", "text/markdown", b"obey".to_vec())],
        false,
    );
    // Two attachments in one message: one turn that names both.
    discord.say_with_files(
        CHANNEL,
        USER,
        "our notes",
        vec![
            ("notes.md", "text/markdown", b"# Notes".to_vec()),
            ("..shot.png", "image/png", vec![9; 3000]),
        ],
        false,
    );
    discord
        .wait_for("the files' turn", 30, |_| claude.calls().len() == 2)
        .await;
    let said = claude.calls()[1]["stdin"].as_str().unwrap().to_string();
    assert!(
        said.contains(
            "The user attached inbox/notes.md (text/markdown, 1 KB), inbox/shot.png \
             (image/png, 3 KB, sent as \"..shot.png\"): our notes"
        ),
        "{said}"
    );
    let inbox = dir.path().join("workspace/app/inbox");
    assert_eq!(std::fs::read(inbox.join("notes.md")).unwrap(), b"# Notes");
    assert_eq!(
        std::fs::read(inbox.join("shot.png")).unwrap(),
        vec![9; 3000]
    );
    assert_eq!(discord.downloads().len(), 2, "{:?}", discord.downloads());
    assert!(discord.downloads().iter().all(|p| !p.contains("evil")));

    // An attachment URL on another host is not fetched.
    discord.say_with_files(
        CHANNEL,
        USER,
        "",
        vec![("far.md", "text/markdown", b"far".to_vec())],
        true,
    );
    discord
        .wait_for("the refusal", 30, |d| {
            d.messages(CHANNEL).iter().any(|m| {
                m.content.contains("far.md") && m.content.contains("could not be received")
            })
        })
        .await;
    assert_eq!(discord.downloads().len(), 2);
    assert!(!inbox.join("far.md").exists());
    assert_eq!(claude.calls().len(), 2, "nothing arrived, so no turn");
    assert!(discord.faults().is_empty(), "{:?}", discord.faults());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_resumes_after_a_reconnect_and_identifies_after_an_invalid_session() {
    let (claude, discord, _dir, _planbot) = started(json!([])).await;
    discord.slash(
        CHANNEL,
        USER,
        Some(GUILD),
        "plan",
        &[
            ("slug", "steady"),
            ("description", "a plan across reconnects"),
        ],
    );
    discord
        .wait_for("the first reply", 30, |d| {
            with_buttons(d, CHANNEL).len() == 1
        })
        .await;
    assert_eq!(discord.connections(), (1, 0));

    // RECONNECT: planbot resumes its session, and a message sent meanwhile is not lost.
    discord.ask_to_reconnect();
    discord.say(CHANNEL, USER, "sent while reconnecting", false);
    discord
        .wait_for("the resume", 30, |d| d.connections().1 == 1)
        .await;
    discord
        .wait_for("the answer to the missed message", 30, |_| {
            claude.calls().len() == 2
        })
        .await;
    assert!(
        claude.calls()[1]["stdin"]
            .as_str()
            .unwrap()
            .contains("sent while reconnecting")
    );
    assert_eq!(discord.connections().0, 1, "resumed, not identified again");

    // INVALID_SESSION: planbot identifies anew and goes on serving.
    discord.invalidate_sessions();
    discord
        .wait_for("a new session", 30, |d| d.connections().0 == 2)
        .await;
    discord.say(CHANNEL, USER, "after a new session", false);
    discord
        .wait_for("the answer after the new session", 30, |_| {
            claude.calls().len() == 3
        })
        .await;
    // The new session keeps its heartbeats (a stop would close it, as a fault).
    let beats = discord.heartbeats();
    discord
        .wait_for("heartbeats on the new session", 30, |d| {
            d.heartbeats() >= beats + 2
        })
        .await;
    assert!(discord.faults().is_empty(), "{:?}", discord.faults());
}
