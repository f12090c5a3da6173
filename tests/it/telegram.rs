//! The Telegram front end end to end: the real `planbot run` against the fake Bot API and the
//! fake `claude`.

use std::path::Path;

use serde_json::json;

use crate::fake_telegram::{FakeTelegram, Stored, TOKEN, Upload};
use crate::util::{FakeClaude, Running, arg_after, button, run_planbot};

fn start(dir: &Path, claude: &FakeClaude, telegram: &FakeTelegram) -> Running {
    start_with(dir, claude, &telegram.url(), &[])
}

/// `planbot run` against a Bot API at `api_url`, allowing users 100..=120.
fn start_with(dir: &Path, claude: &FakeClaude, api_url: &str, env: &[(&str, &str)]) -> Running {
    let allowed: Vec<String> = (100..=120).map(|u| format!("telegram:{u}")).collect();
    let allowed = allowed.join(",");
    let mut all = vec![
        ("PLANBOT_ALLOWED_USERS", allowed.as_str()),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_API_URL", api_url),
    ];
    all.extend_from_slice(env);
    run_planbot(dir, claude, &all)
}

/// A fake `claude` following `steps`, a fake Telegram, and planbot started against them (its
/// command menu registered).
async fn started(
    steps: serde_json::Value,
) -> (FakeClaude, FakeTelegram, tempfile::TempDir, Running) {
    started_with(steps, &[]).await
}

/// [`started`] with more settings in planbot's environment.
async fn started_with(
    steps: serde_json::Value,
    env: &[(&str, &str)],
) -> (FakeClaude, FakeTelegram, tempfile::TempDir, Running) {
    let claude = FakeClaude::new(steps);
    let telegram = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let planbot = start_with(dir.path(), &claude, &telegram.url(), env);
    telegram
        .wait_for("start-up", 20, |t| t.commands().is_some())
        .await;
    (claude, telegram, dir, planbot)
}

/// The bot's messages in a chat that carry buttons, newest last.
fn with_buttons(telegram: &FakeTelegram, chat: i64) -> Vec<Stored> {
    telegram
        .messages(chat)
        .into_iter()
        .filter(|m| !m.buttons().is_empty())
        .collect()
}

/// What the chat shows: each message's text as Telegram displays it.
fn texts(telegram: &FakeTelegram, chat: i64) -> Vec<String> {
    telegram
        .messages(chat)
        .into_iter()
        .map(|m| crate::fake_telegram::visible_text(&m.text, m.html).unwrap_or(m.text))
        .collect()
}

fn long_markdown() -> String {
    let mut md = String::from("# Engineering review\n\nHere is the design, in parts.\n\n");
    for i in 0..6 {
        md.push_str(&format!(
            "## Component {i} <core> & friends\n\n{}\n\n",
            "The component does one thing well. ".repeat(12)
        ));
        md.push_str(&format!(
            "```rust\n{}```\n\n",
            "fn handle(x: &str) -> Option<u8> { x.parse().ok() } // <T>\n".repeat(14)
        ));
    }
    md.push_str("- a list item with **bold**\n- and `code`\n\nPHASE_STATUS: needs_input");
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_from_start_to_finish_in_one_chat() {
    let (claude, telegram, dir, _planbot) = started(json!([
        {"kind": "answer", "text": "What problem does it solve?\n\nPHASE_STATUS: needs_input", "delay_ms": 3500},
        {"kind": "echo"},
        {"kind": "echo", "status": "ready_to_advance"},
        {"kind": "answer", "text": long_markdown()},
        {"kind": "answer", "text": "# Final plan\n\nShip it.\n\nPHASE_STATUS: ready_to_advance"},
    ]))
    .await;
    let commands: Vec<String> = telegram
        .commands()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        commands,
        [
            "plan", "advance", "finalize", "cancel", "resume", "status", "help"
        ]
    );

    // A stranger gets one refusal and no subprocess.
    telegram.message(200, 200, "/plan evil rm -rf /", None);
    telegram.message(200, 200, "hello?", None);
    telegram
        .wait_for("the refusal", 10, |t| !t.messages(200).is_empty())
        .await;

    telegram.message(100, 100, "/plan todo-app a shared todo list", None);
    telegram
        .wait_for("the first reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;
    let first = with_buttons(&telegram, 100).remove(0);
    assert_eq!(first.text, "What problem does it solve?");
    // A progress message came once the turn had run a while, was edited as it ran, and was
    // taken away after the answer had been sent (the answer first).
    let calls = telegram.calls();
    let position = |f: &dyn Fn(&(String, serde_json::Value)) -> bool| calls.iter().position(f);
    let progress = calls
        .iter()
        .find(|(m, p)| {
            m == "editmessagetext" && p["text"].as_str().is_some_and(|t| t.starts_with("⏳"))
        })
        .map(|(_, p)| p["message_id"].clone())
        .expect("the working message shows elapsed time");
    assert_ne!(progress, json!(first.id));
    let answered = position(&|(m, p)| m == "sendmessage" && p["text"] == json!(first.text))
        .expect("the answer was sent as a message of its own");
    let deleted = position(&|(m, p)| m == "deletemessage" && p["message_id"] == progress)
        .expect("the progress message was taken away");
    assert!(
        answered < deleted,
        "the answer comes before the bookkeeping"
    );
    let typing = position(&|(m, _)| m == "sendchataction").expect("typing was shown");
    assert!(typing < answered);

    telegram.message(100, 100, "Families with kids", None);
    telegram
        .wait_for("the second reply", 20, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("Families with kids"))
        })
        .await;
    telegram.message(100, 100, "Chores & <reminders>", None);
    telegram
        .wait_for("the third reply", 20, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("Chores & <reminders>"))
        })
        .await;
    let calls = claude.calls();
    let session = calls[0]["stdin"]
        .as_str()
        .map(|_| arg_after(&calls[1], "--resume").unwrap().to_string())
        .unwrap();
    assert_eq!(
        arg_after(&calls[2], "--resume"),
        Some(session.as_str()),
        "both replies resume one session"
    );

    // Continue: the stale keyboards are gone (after the answer), the long reply arrives in
    // valid parts.
    telegram
        .wait_for("only the latest reply keeps buttons", 10, |t| {
            with_buttons(t, 100).len() == 1
        })
        .await;
    let latest = with_buttons(&telegram, 100).pop().unwrap();
    let before = telegram.messages(100).len();
    let cb = telegram.press(
        100,
        &latest,
        &button(latest.buttons(), "Continue to /plan-ceo-review"),
    );
    telegram
        .wait_for("the long reply", 30, |t| {
            t.messages(100)
                .last()
                .is_some_and(|m| !m.buttons().is_empty())
                && texts(t, 100).last().is_some_and(|x| x.contains("and code"))
        })
        .await;
    assert!(telegram.callback_answered(&cb));
    let parts: Vec<String> = texts(&telegram, 100).into_iter().skip(before).collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    assert!(parts[0].starts_with("Engineering review"), "{}", parts[0]);
    for i in 0..6 {
        assert!(
            parts
                .iter()
                .any(|p| p.contains(&format!("Component {i} <core> & friends")))
        );
    }
    assert!(
        parts
            .iter()
            .any(|p| p.contains("fn handle(x: &str) -> Option<u8>"))
    );
    // A stale press changes nothing and is answered with a note.
    let stale = telegram.press(100, &latest, &button(latest.buttons(), "Finalize"));
    telegram
        .wait_for("the stale press answer", 10, |t| {
            t.callback_answered(&stale)
        })
        .await;
    assert_eq!(
        telegram.callback_text(&stale).as_deref(),
        Some("This is no longer current.")
    );

    let current = with_buttons(&telegram, 100).pop().unwrap();
    telegram.press(100, &current, &button(current.buttons(), "Finalize"));
    telegram
        .wait_for("the final plan", 30, |t| {
            t.messages(100).iter().any(|m| m.document.is_some())
        })
        .await;
    // Counted after a later turn of the same chat: a wrongly honoured stale press would have
    // started a turn before it.
    assert_eq!(claude.calls().len(), 5, "the stale press started nothing");
    let doc = telegram
        .messages(100)
        .into_iter()
        .find_map(|m| m.document)
        .unwrap();
    assert_eq!(doc.0, "final-plan.md");
    assert_eq!(
        String::from_utf8(doc.1).unwrap(),
        "# Final plan\n\nShip it.\n"
    );
    assert!(
        dir.path()
            .join("workspace/todo-app/final-plan.md")
            .is_file()
    );
    telegram.message(100, 100, "/status", None);
    telegram
        .wait_for("status", 10, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("Nothing is being planned here"))
        })
        .await;

    let refusals = telegram.messages(200);
    assert_eq!(refusals.len(), 1, "one refusal");
    assert!(refusals[0].text.contains("not allowed"));
    assert!(
        claude
            .calls()
            .iter()
            .all(|c| !c["stdin"].as_str().unwrap().contains("evil"))
    );
    assert_eq!(telegram.faults(), Vec::<String>::new());
    let log = std::fs::read_to_string(dir.path().join("planbot.log")).unwrap();
    assert!(
        !log.contains("TEST-secret-token"),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_chats_plan_at_once() {
    let (claude, telegram, _dir, _planbot) = started(json!([])).await;
    for user in 101..=110 {
        telegram.message(user, user, &format!("/plan plan-{user} idea {user}"), None);
    }
    telegram
        .wait_for("ten first replies", 60, |t| {
            (101..=110).all(|u| with_buttons(t, u).len() == 1)
        })
        .await;
    for user in 101..=110 {
        telegram.message(user, user, &format!("answer from {user}"), None);
    }
    telegram
        .wait_for("ten second replies", 60, |t| {
            (101..=110).all(|u| {
                texts(t, u)
                    .iter()
                    .any(|x| x.contains(&format!("answer from {u}")))
            })
        })
        .await;
    let calls = claude.calls();
    assert_eq!(calls.len(), 20);
    for user in 101..=110 {
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| {
                c["cwd"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("plan-{user}"))
            })
            .collect();
        assert_eq!(mine.len(), 2);
        assert!(arg_after(mine[1], "--resume").is_some());
    }
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_and_restart_resumes_the_session_and_answers_nothing_twice() {
    let claude = FakeClaude::new(json!([]));
    let telegram = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut planbot = start(dir.path(), &claude, &telegram);
    telegram.message(100, 100, "/plan survive an idea", None);
    telegram
        .wait_for("the first reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;
    // kill -9: no chance to clean up.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(planbot.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    planbot.0.wait().unwrap();
    drop(planbot);
    let replies_before = telegram.messages(100).len();

    let _planbot = start(dir.path(), &claude, &telegram);
    telegram.message(100, 100, "still there?", None);
    telegram
        .wait_for("the reply after restart", 20, |t| {
            texts(t, 100).iter().any(|x| x.contains("still there?"))
        })
        .await;
    let calls = claude.calls();
    assert_eq!(calls.len(), 2, "the /plan was not handled again");
    let first_session = calls[0]["stdin"].as_str().map(|_| {
        std::fs::read_dir(claude.dir.path().join("state/sessions"))
            .unwrap()
            .count()
    });
    assert_eq!(first_session, Some(1), "no new Claude session");
    assert_eq!(
        arg_after(&calls[1], "--resume"),
        Some("00000000-0000-4000-8000-000000000001")
    );
    assert!(telegram.messages(100).len() > replies_before);
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_topics_are_chats_of_their_own_and_bot_suffixes_are_checked() {
    let (_claude, telegram, dir, _planbot) = started(json!([])).await;
    telegram.message(-100, 105, "/status@some_other_bot", Some(7));
    telegram.message(-100, 105, "just chatting in the group", Some(7));
    telegram.message(
        -100,
        105,
        "/plan@planbot_test_bot topic-plan an idea",
        Some(7),
    );
    telegram
        .wait_for("the reply in the topic", 20, |t| {
            with_buttons(t, -100).len() == 1
        })
        .await;
    let messages = telegram.messages(-100);
    assert!(
        messages.iter().all(|m| m.thread == Some(7)),
        "replies stay in the topic"
    );
    // A press in the topic acts on the topic's plan (the press carries the topic).
    let offer = with_buttons(&telegram, -100).remove(0);
    let before = telegram.messages(-100).len();
    let cb = telegram.press(105, &offer, &button(offer.buttons(), "Continue"));
    telegram
        .wait_for("the next phase in the topic", 20, |t| {
            t.callback_answered(&cb)
                && t.messages(-100).len() > before
                && with_buttons(t, -100)
                    .last()
                    .is_some_and(|m| m.id != offer.id)
        })
        .await;
    assert!(
        telegram.callback_text(&cb).is_none_or(|t| t.is_empty()),
        "not answered as stale: {:?}",
        telegram.callback_text(&cb)
    );
    assert!(telegram.messages(-100).iter().all(|m| m.thread == Some(7)));
    assert!(
        texts(&telegram, -100)
            .iter()
            .all(|t| !t.contains("Nothing is being planned")),
        "other bots' commands and chatter are ignored"
    );
    let (state, _) = planbot::store::inspect(&dir.path().join("state")).unwrap();
    assert!(
        state.sessions.contains_key("telegram:-100:7"),
        "{:?}",
        state.sessions.keys()
    );
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

fn sigterm(planbot: &Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(planbot.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_short_turn_finish_and_exits_cleanly() {
    let (claude, telegram, dir, planbot) = started_with(
        json!([{"kind": "slow", "delay_ms": 1500}]),
        &[("PLANBOT_SHUTDOWN_GRACE_SECS", "20")],
    )
    .await;
    telegram.message(100, 100, "/plan quick an idea", None);
    telegram
        .wait_for("the turn to start", 20, |_| !claude.calls().is_empty())
        .await;
    sigterm(&planbot);
    let status = planbot.exit().await;
    assert!(status.success(), "{status}");
    assert_eq!(
        with_buttons(&telegram, 100).len(),
        1,
        "the running turn finished and was delivered"
    );
    let state = std::fs::read_to_string(dir.path().join("state/planning.json")).unwrap();
    assert!(state.contains("\"status\":\"planning\""), "{state}");
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_a_long_turn_after_the_grace_period() {
    let (claude, telegram, dir, planbot) = started_with(
        json!([{"kind": "hang", "grandchild": true}]),
        &[("PLANBOT_SHUTDOWN_GRACE_SECS", "1")],
    )
    .await;
    telegram.message(100, 100, "/plan long an idea", None);
    telegram
        .wait_for("the turn to start", 20, |_| {
            !claude.grandchildren().is_empty()
        })
        .await;
    sigterm(&planbot);
    let status = planbot.exit().await;
    assert!(status.success(), "{status}");
    assert!(
        texts(&telegram, 100)
            .iter()
            .any(|t| t.contains("planbot is stopping, so this turn was stopped"))
    );
    let state = std::fs::read_to_string(dir.path().join("state/planning.json")).unwrap();
    assert!(state.contains("\"status\":\"interrupted\""), "{state}");
    let pid = claude.calls()[0]["pid"].as_i64().unwrap() as i32;
    crate::util::eventually("claude survived the shutdown", || {
        crate::util::group_members(pid).is_empty()
    });

    // Back up: the chat is told, and its next message continues the phase.
    let _planbot = start(dir.path(), &claude, &telegram);
    telegram
        .wait_for("the announcement", 20, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("planbot restarted while a turn of long"))
        })
        .await;
    telegram.message(100, 100, "go on", None);
    telegram
        .wait_for("the resumed reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_even_when_every_call_fails() {
    let claude = FakeClaude::new(json!([]));
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of loopback: every call fails with an error that names the URL.
    let planbot = start_with(
        dir.path(),
        &claude,
        "http://127.0.0.1:9/",
        &[("RUST_LOG", "trace"), ("PLANBOT_LOG_FORMAT", "json")],
    );
    let status = planbot.exit().await;
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("planbot.log")).unwrap();
    assert!(log.contains("Telegram getMe failed"), "{log}");
    assert!(!log.contains("TEST-secret-token"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_meets_a_server_error_or_a_dropped_connection_is_sent_again() {
    let (_claude, telegram, _dir, _planbot) =
        started(json!([{"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input", "delay_ms": 1000}]))
            .await;
    telegram.message(100, 100, "/plan todo-app a shared list", None);
    telegram
        .wait_for("the plan's first message", 10, |t| {
            !t.messages(100).is_empty()
        })
        .await;
    // The answer's sendMessage meets a 502 (teloxide waits 10 s after a server error).
    telegram.server_error_next(100);
    telegram
        .wait_for("the answer, sent again", 40, |t| {
            texts(t, 100).iter().any(|x| x.contains("Who is it for?"))
        })
        .await;
    let answers = telegram
        .calls()
        .into_iter()
        .filter(|(m, p)| {
            m == "sendmessage"
                && p["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("Who is it for?"))
        })
        .count();
    assert_eq!(answers, 2, "refused once, then delivered");

    // The next answer's connection drops before Telegram answers: sent again, shown once.
    telegram.drop_next(100);
    telegram.message(100, 100, "a shared list for my family", None);
    let said = "You said: 'a shared list for my family'";
    telegram
        .wait_for("the second answer, sent again", 40, |t| {
            texts(t, 100).iter().any(|x| x.contains(said))
        })
        .await;
    let shown = texts(&telegram, 100)
        .iter()
        .filter(|x| x.contains(said))
        .count();
    assert_eq!(shown, 1, "shown once");
    let answers = telegram
        .calls()
        .into_iter()
        .filter(|(m, p)| m == "sendmessage" && p["text"].as_str().is_some_and(|t| t.contains(said)))
        .count();
    assert_eq!(answers, 2, "dropped once, then delivered");
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_a_very_long_reply_arrives_as_a_file() {
    let huge = format!(
        "# Big\n\n{}\n\nPHASE_STATUS: needs_input",
        "A long paragraph of planning prose. ".repeat(700)
    );
    let (_claude, telegram, _dir, _planbot) =
        started(json!([{"kind": "answer", "text": huge, "delay_ms": 500}])).await;
    telegram.flood_next(100);
    telegram.message(100, 100, "/plan big an idea", None);
    telegram
        .wait_for("the long reply", 30, |t| {
            t.messages(100).iter().any(|m| m.document.is_some())
        })
        .await;
    telegram
        .wait_for("the buttons", 10, |t| with_buttons(t, 100).len() == 1)
        .await;
    let doc = telegram
        .messages(100)
        .into_iter()
        .find_map(|m| m.document)
        .unwrap();
    assert_eq!(doc.0, "reply.md");
    assert!(
        String::from_utf8(doc.1)
            .unwrap()
            .contains("A long paragraph of planning prose.")
    );
    let summary = with_buttons(&telegram, 100).remove(0);
    let shown = crate::fake_telegram::visible_text(&summary.text, summary.html).unwrap();
    assert!(
        shown.contains("The full reply") && shown.contains("attached as reply.md"),
        "{shown}"
    );
    // The 429 was obeyed: nothing was sent to the chat inside its window.
    assert_eq!(telegram.faults(), Vec::<String>::new());
    // The refused call (the chat's first) was sent again, once.
    let to_chat: Vec<(String, serde_json::Value)> = telegram
        .calls()
        .into_iter()
        .filter(|(_, params)| params["chat_id"] == 100)
        .collect();
    let refused = &to_chat[0];
    assert_eq!(&to_chat[1], refused, "the next call repeats it");
    assert_eq!(
        to_chat.iter().filter(|call| *call == refused).count(),
        2,
        "sent again exactly once: {to_chat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_telegram_refuses_is_resent_as_plain_text() {
    let (_claude, telegram, _dir, _planbot) = started(json!([])).await;
    telegram.refuse_html_next(100);
    telegram.message(100, 100, "/help", None);
    telegram
        .wait_for("the help text", 20, |t| !t.messages(100).is_empty())
        .await;
    let help = telegram.messages(100).remove(0);
    assert!(
        !help.html,
        "sent again without parse mode: {:#?}",
        telegram.calls()
    );
    assert!(
        help.text.contains("/plan <slug> <idea>"),
        "the markdown source, as plain text: {}",
        help.text
    );
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

#[tokio::test]
async fn a_chat_held_in_a_429_window_holds_up_no_other_chat() {
    let (_claude, telegram, _dir, _planbot) =
        started(json!([{"kind": "answer", "text": "Who is it for?\n\nPHASE_STATUS: needs_input"}]))
            .await;
    // A stranger in chat 300 draws a refusal, which Telegram holds for 2 s.
    telegram.flood_next(300);
    telegram.message(300, 666, "/plan evil idea", None);
    telegram
        .wait_for("the 429", 10, |t| {
            t.calls()
                .iter()
                .any(|(m, p)| m == "sendmessage" && p["chat_id"] == 300)
        })
        .await;
    // Meanwhile another chat is served at once: its /help, and a whole turn.
    telegram.message(101, 101, "/help", None);
    telegram.message(102, 102, "/plan quick an idea", None);
    telegram
        .wait_for("the other chats' answers", 10, |t| {
            t.messages(101)
                .iter()
                .any(|m| m.text.contains("/plan &lt;slug&gt;") || m.text.contains("/plan <slug>"))
                && t.messages(102)
                    .iter()
                    .any(|m| m.text.contains("Who is it for?"))
        })
        .await;
    assert!(
        telegram.messages(300).is_empty(),
        "the other chats were answered while chat 300 was still held"
    );
    // The refusal still arrives once the window is over, sent again once.
    telegram
        .wait_for("the refusal", 10, |t| {
            t.messages(300)
                .iter()
                .any(|m| m.text.contains("not allowed"))
        })
        .await;
    assert_eq!(telegram.messages(300).len(), 1);
    assert_eq!(telegram.faults(), Vec::<String>::new());
}

/// A document of `len` bytes.
fn document(name: &str, mime: &str, len: usize) -> Upload {
    Upload::Document {
        name: name.into(),
        mime: mime.into(),
        bytes: (0..len).map(|i| (i % 251) as u8).collect(),
        stated_size: None,
    }
}

/// The message each `claude` call was given.
fn prompts(claude: &FakeClaude) -> Vec<String> {
    claude
        .calls()
        .iter()
        .map(|c| c["stdin"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_photos_and_albums_land_in_the_plans_inbox() {
    let (claude, telegram, dir, _planbot) =
        started_with(json!([]), &[("PLANBOT_MAX_ATTACHMENT_MB", "1")]).await;
    let inbox = dir.path().join("workspace/app/inbox");

    // A stranger's file is refused and never fetched; outside a plan a file gets a hint.
    telegram.send_files(
        200,
        200,
        vec![document("spec.pdf", "application/pdf", 10)],
        "",
    );
    telegram.send_files(100, 100, vec![Upload::Photo(vec![7; 2000])], "");
    telegram
        .wait_for("the refusal and the hint", 10, |t| {
            !t.messages(200).is_empty() && !t.messages(100).is_empty()
        })
        .await;
    assert!(texts(&telegram, 100)[0].starts_with("Send files once a plan is under way"));
    assert!(
        telegram.downloads().is_empty(),
        "{:?}",
        telegram.downloads()
    );
    assert!(!telegram.calls().iter().any(|(m, _)| m == "getfile"));

    telegram.message(100, 100, "/plan app a shared todo list", None);
    telegram
        .wait_for("the first reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;

    // A photo: its largest size lands in the inbox, and Claude is told, with the caption.
    let ids = telegram.send_files(
        100,
        100,
        vec![Upload::Photo(vec![7; 2000])],
        "our whiteboard",
    );
    telegram
        .wait_for("the photo's turn", 20, |_| claude.calls().len() == 2)
        .await;
    let said = &prompts(&claude)[1];
    assert!(
        said.contains("The user attached inbox/photo.jpg (image/jpeg, 2 KB): our whiteboard"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(inbox.join("photo.jpg")).unwrap(),
        vec![7; 2000]
    );
    assert_eq!(telegram.downloads(), ids);

    // Three hostile names in one album: one turn, safe names, the sent names kept in the text.
    telegram.send_files(
        100,
        100,
        vec![
            document("../../x", "text/plain", 5),
            document(".bashrc", "text/plain", 5),
            document("a\u{7}b\u{1b}[2J.txt", "text/plain", 5),
        ],
        "three files",
    );
    telegram
        .wait_for("the album's turn", 20, |_| claude.calls().len() == 3)
        .await;
    let said = &prompts(&claude)[2];
    for expected in [
        r#"inbox/x (text/plain, 1 KB, sent as "../../x")"#,
        r#"inbox/bashrc (text/plain, 1 KB, sent as ".bashrc")"#,
        r#"inbox/ab[2J.txt (text/plain, 1 KB, sent as "a\u{7}b\u{1b}[2J.txt")"#,
        ": three files",
    ] {
        assert!(said.contains(expected), "{expected} in {said}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ab[2J.txt", "bashrc", "photo.jpg", "x"]);
    assert!(!dir.path().join("x").exists() && !dir.path().join("workspace/x").exists());

    // Over the limit: refused with the limit named, never fetched, no turn.
    let fetched = telegram.downloads().len();
    telegram.send_files(
        100,
        100,
        vec![document("big.pdf", "application/pdf", 1_500_000)],
        "",
    );
    telegram
        .wait_for("the refusal", 20, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("big.pdf") && x.contains("up to 1 MB"))
        })
        .await;
    assert_eq!(telegram.downloads().len(), fetched);
    // A size the message does not state is checked as the bytes arrive.
    telegram.send_files(
        100,
        100,
        vec![Upload::Document {
            name: "quiet.pdf".into(),
            mime: "application/pdf".into(),
            bytes: vec![1; 1_500_000],
            stated_size: Some(None),
        }],
        "",
    );
    telegram
        .wait_for("the second refusal", 20, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("quiet.pdf") && x.contains("up to 1 MB"))
        })
        .await;
    assert!(!inbox.join("quiet.pdf").exists());

    // An album split over two polls still makes one turn.
    let (_, first) = telegram.file_message(100, 100, document("one.md", "text/markdown", 3));
    let (_, second) = telegram.file_message(100, 100, document("two.md", "text/markdown", 3));
    let album = |mut m: serde_json::Value| {
        m["media_group_id"] = json!("split");
        m
    };
    telegram.push_message(album(first));
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    telegram.push_message(album(second));
    telegram
        .wait_for("the split album's turn", 20, |_| claude.calls().len() == 4)
        .await;
    let said = &prompts(&claude)[3];
    assert!(
        said.contains("inbox/one.md") && said.contains("inbox/two.md"),
        "{said}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(claude.calls().len(), 4, "one turn for the whole album");
    assert!(telegram.faults().is_empty(), "{:?}", telegram.faults());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_question_is_denied_after_the_timeout() {
    let fetch = json!({"url": "https://example.com/pricing", "prompt": "Prices?"});
    let (claude, telegram, dir, _planbot) = started_with(
        json!([{"kind": "echo"}, {"kind": "defer", "tool": "WebFetch", "input": fetch}]),
        &[("PLANBOT_APPROVAL_TIMEOUT_SECS", "10")],
    )
    .await;
    telegram.message(100, 100, "/plan web an idea", None);
    telegram
        .wait_for("the first reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;
    telegram.message(100, 100, "look at their pricing", None);
    telegram
        .wait_for("the question", 20, |t| {
            texts(t, 100)
                .last()
                .is_some_and(|x| x.contains("Claude wants to fetch https://example.com/pricing"))
        })
        .await;
    let question = with_buttons(&telegram, 100).pop().unwrap();
    // While it waits, other steps are held with a pointer to the question.
    telegram.message(100, 100, "and their features", None);
    telegram
        .wait_for("the hold", 20, |t| {
            texts(t, 100)
                .last()
                .is_some_and(|x| x.starts_with("Claude is waiting for an answer first"))
        })
        .await;
    assert_eq!(claude.calls().len(), 2);
    telegram
        .wait_for("the denial", 40, |t| {
            texts(t, 100)
                .iter()
                .any(|x| x.contains("No answer within 10 s, so WebFetch was denied"))
        })
        .await;
    // The session was resumed with the call denied, by its tool and input.
    let calls = claude.calls();
    assert_eq!(calls.len(), 3);
    let argv: Vec<String> = calls[2]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(argv.contains(&"--resume".to_string()));
    let settings = &argv[argv.iter().position(|a| a == "--settings").unwrap() + 1];
    assert!(settings.contains("--deny-call"), "{settings}");
    assert!(!settings.contains("--allow-call"), "{settings}");
    // The question's buttons are stale now.
    let cb = telegram.press(100, &question, &button(question.buttons(), "Allow once"));
    telegram
        .wait_for("the answer", 10, |t| t.callback_answered(&cb))
        .await;
    assert!(
        telegram
            .callback_text(&cb)
            .is_some_and(|t| t.contains("no longer current"))
    );
    assert_eq!(claude.calls().len(), 3);
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
    assert!(
        audit.contains("deny-unanswered WebFetch https://example.com/pricing"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_poller_of_the_same_token_makes_one_stop_with_the_cause() {
    let claude = FakeClaude::new(json!([]));
    let telegram = FakeTelegram::start().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = start(a.path(), &claude, &telegram);
    telegram
        .wait_for("start-up", 20, |t| t.commands().is_some())
        .await;
    let mut second = start(b.path(), &claude, &telegram);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (stopped, log, survivor) = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break (status, a.path().join("planbot.log"), second);
        }
        if let Some(status) = second.0.try_wait().unwrap() {
            break (status, b.path().join("planbot.log"), first);
        }
        assert!(std::time::Instant::now() < deadline, "both kept polling");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!stopped.success());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(
            "another program is polling this bot's updates (Telegram answered 409 Conflict"
        ),
        "{log}"
    );
    // The other goes on serving.
    telegram.message(100, 100, "/help", None);
    telegram
        .wait_for("the help", 30, |t| !t.messages(100).is_empty())
        .await;
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_takes_updates_with_the_secret_only_and_each_once() {
    let port = crate::util::free_port();
    let hook = format!("http://127.0.0.1:{port}/telegram/hook");
    let addr = format!("127.0.0.1:{port}");
    let (claude, telegram, dir, _planbot) = started_with(
        json!([]),
        &[
            ("TELEGRAM_WEBHOOK_URL", hook.as_str()),
            ("TELEGRAM_WEBHOOK_SECRET", "s3cret_Token-1"),
            ("PLANBOT_HTTP_ADDR", addr.as_str()),
        ],
    )
    .await;
    telegram
        .wait_for("the webhook", 20, |t| t.webhook().is_some())
        .await;
    assert_eq!(
        telegram.webhook(),
        Some((hook.clone(), "s3cret_Token-1".to_string()))
    );
    let client = reqwest::Client::new();
    let post = |update: &serde_json::Value, secret: Option<&str>| {
        let mut request = client.post(&hook).json(update);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request.send()
    };
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "one planbot on its own is ready");

    // Without the secret, or with another: refused, and nothing happens.
    let forged = telegram.update(100, 100, "/plan forged an idea");
    assert_eq!(post(&forged, None).await.unwrap().status(), 401);
    assert_eq!(post(&forged, Some("guess")).await.unwrap().status(), 401);
    let plan = telegram.update(100, 100, "/plan hooked an idea");
    assert_eq!(
        post(&plan, Some("s3cret_Token-1")).await.unwrap().status(),
        200
    );
    telegram
        .wait_for("the first reply", 20, |t| with_buttons(t, 100).len() == 1)
        .await;
    // Telegram redelivers what it did not see acknowledged: handled once.
    assert_eq!(
        post(&plan, Some("s3cret_Token-1")).await.unwrap().status(),
        200
    );
    let reply = telegram.update(100, 100, "families with kids");
    post(&reply, Some("s3cret_Token-1")).await.unwrap();
    telegram
        .wait_for("the second turn", 20, |_| claude.calls().len() == 2)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        claude.calls().len(),
        2,
        "the redelivered /plan started nothing"
    );
    assert!(!texts(&telegram, 100).iter().any(|t| t.contains("forged")));

    // An album's files come as separate requests, at once: one turn.
    let (_, one) = telegram.file_message(100, 100, document("a.md", "text/markdown", 3));
    let (_, two) = telegram.file_message(100, 100, document("b.md", "text/markdown", 3));
    let as_update = |mut m: serde_json::Value, id: i64| {
        m["media_group_id"] = json!("hooked-album");
        json!({"update_id": 90_000 + id, "message": m})
    };
    let (first, second) = (as_update(one, 1), as_update(two, 2));
    let (r1, r2) = tokio::join!(
        post(&first, Some("s3cret_Token-1")),
        post(&second, Some("s3cret_Token-1"))
    );
    assert_eq!(
        (r1.unwrap().status().as_u16(), r2.unwrap().status().as_u16()),
        (200, 200)
    );
    telegram
        .wait_for("the album's turn", 20, |_| claude.calls().len() == 3)
        .await;
    let said = claude.calls()[2]["stdin"].as_str().unwrap().to_string();
    assert!(
        said.contains("inbox/a.md") && said.contains("inbox/b.md"),
        "{said}"
    );
    let log = std::fs::read_to_string(dir.path().join("planbot.log")).unwrap();
    assert!(
        log.contains("TELEGRAM_WEBHOOK_URL is http://"),
        "the warning"
    );
    assert!(!log.contains("s3cret_Token-1"), "the secret was logged");
    assert!(telegram.faults().is_empty(), "{:?}", telegram.faults());
}
