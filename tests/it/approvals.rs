//! Web fetches by approval, end to end: the real `planbot run` with the real Claude Code CLI
//! (pinned and newest) behind the stand-in Messages API, the fake Bot API as the chat, and a
//! real HTTPS page on 127.0.0.1 that counts its fetches.

use std::path::Path;

use serde_json::json;

use crate::contract::RealClaude;
use crate::fake_telegram::{FakeTelegram, Stored, TOKEN};
use crate::util::{FakeClaude, Running, button, run_planbot};
use crate::web_page::WebPage;

const CHAT: i64 = 100;
const STARTER: i64 = 100;
const OTHER: i64 = 101;

/// `planbot run` on the real CLI, users 100 and 101 allowed.
async fn start(dir: &std::path::Path, claude: &RealClaude, telegram: &FakeTelegram) -> Running {
    let (launcher, url) = (claude.launcher(), telegram.url());
    let launcher = launcher.to_string_lossy().into_owned();
    let placeholder = FakeClaude::new(json!([]));
    let before = setups(telegram);
    let running = run_planbot(
        dir,
        &placeholder,
        &[
            ("PLANBOT_CLAUDE_BIN", launcher.as_str()),
            ("PLANBOT_ALLOWED_USERS", "telegram:100,telegram:101"),
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_API_URL", url.as_str()),
            ("PLANBOT_RETRY_DELAY_MS", "10"),
        ],
    );
    telegram
        .wait_for("start-up", 90, |t| setups(t) > before)
        .await;
    running
}

/// How many times planbot registered its command menu (once per start).
fn setups(telegram: &FakeTelegram) -> usize {
    telegram
        .calls()
        .iter()
        .filter(|(m, _)| m == "setmycommands")
        .count()
}

/// The newest message with buttons whose first button is `first`.
fn newest_with(telegram: &FakeTelegram, first: &str) -> Option<Stored> {
    telegram
        .messages(CHAT)
        .into_iter()
        .rev()
        .find(|m| m.buttons().first().is_some_and(|(label, _)| label == first))
}

/// Waits (90 s at most) until `done` holds; on timeout fails with the chat's last calls and the
/// end of planbot's log (`dir/planbot.log`), which say where a turn stopped.
async fn wait(
    telegram: &FakeTelegram,
    dir: &Path,
    what: &str,
    done: impl Fn(&FakeTelegram) -> bool,
) {
    crate::wait::wait_until(
        what,
        90,
        || done(telegram),
        || {
            let log = std::fs::read_to_string(dir.join("planbot.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let calls: Vec<String> = telegram
                .calls()
                .iter()
                .rev()
                .take(6)
                .map(|(m, p)| {
                    format!(
                        "{m} {}",
                        p.to_string().chars().take(300).collect::<String>()
                    )
                })
                .collect();
            format!(
                "calls, newest first: {calls:#?}\nplanbot.log, newest first:\n{}",
                tail.join("\n")
            )
        },
    )
    .await;
}

/// The id of the chat's newest message (0: none). Counting messages would not do: a turn's
/// progress message is deleted after its answer, so the count can stay the same.
fn newest_id(telegram: &FakeTelegram) -> i64 {
    telegram.messages(CHAT).last().map_or(0, |m| m.id)
}

/// Says `text`, waits for the question it raises, returns it.
async fn ask(telegram: &FakeTelegram, dir: &Path, text: &str) -> Stored {
    let before = newest_id(telegram);
    telegram.message(CHAT, STARTER, text, None);
    wait(telegram, dir, "the question", |t| {
        newest_id(t) > before
            && newest_with(t, "Allow once")
                .is_some_and(|m| m.text.contains("Claude wants to fetch"))
            && t.messages(CHAT)
                .last()
                .is_some_and(|m| !m.buttons().is_empty())
    })
    .await;
    newest_with(telegram, "Allow once").unwrap()
}

/// Waits for the reply that ends a turn, a message newer than `before` (an id), and returns its
/// text.
async fn reply_after(telegram: &FakeTelegram, dir: &Path, before: i64) -> String {
    wait(telegram, dir, "the reply", |t| {
        t.messages(CHAT).last().is_some_and(|m| {
            m.id > before && m.buttons().iter().any(|(l, _)| l.starts_with("Continue"))
        })
    })
    .await;
    let messages = telegram.messages(CHAT);
    let last = messages.last().unwrap();
    crate::fake_telegram::visible_text(&last.text, last.html).unwrap_or(last.text.clone())
}

fn fetch(page: &WebPage, url: &str) -> String {
    let _ = page;
    format!(
        "Read the page. ATTACK WebFetch {}",
        json!({"url": url, "prompt": "What does the Pro plan cost?"})
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_fetches_wait_for_the_users_answer_with_the_real_cli() {
    for claude in RealClaude::all("web_fetches_wait_for_the_users_answer_with_the_real_cli").await {
        let page = WebPage::start().await;
        claude.allow_web(&page);
        let telegram = FakeTelegram::start().await;
        let dir = tempfile::tempdir().unwrap();
        let planbot = start(dir.path(), &claude, &telegram).await;
        let version = claude.version;

        telegram.message(CHAT, STARTER, "/plan web a pricing page", None);
        reply_after(&telegram, dir.path(), 0).await;

        // The model calls WebFetch: the turn ends deferred and the chat is asked; nothing fetched.
        let pricing = page.url("/pricing");
        let question = ask(&telegram, dir.path(), &fetch(&page, &pricing)).await;
        assert!(
            question
                .text
                .contains(&format!("Claude wants to fetch {pricing}")),
            "{version}: {}",
            question.text
        );
        let labels: Vec<String> = question.buttons().into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            labels,
            ["Allow once", "Allow 127.0.0.1 for this plan", "Deny"],
            "{version}"
        );
        assert!(page.hits().is_empty(), "{version}: {:?}", page.hits());

        // Another user's press is refused privately and changes nothing.
        let press = telegram.press(OTHER, &question, &button(question.buttons(), "Allow once"));
        telegram
            .wait_for("the refusal", 60, |t| t.callback_answered(&press))
            .await;
        assert!(
            telegram
                .callback_text(&press)
                .is_some_and(|t| t.contains("Only the person who started this plan")),
            "{version}"
        );

        // A restart between the question and the press: the press still works.
        drop(planbot);
        let planbot = start(dir.path(), &claude, &telegram).await;
        assert!(page.hits().is_empty(), "{version}");
        let before = newest_id(&telegram);
        telegram.press(
            STARTER,
            &question,
            &button(question.buttons(), "Allow once"),
        );
        let said = reply_after(&telegram, dir.path(), before).await;
        assert!(said.contains("Allowed once"), "{version}: {said}");
        assert!(said.contains("The Pro plan costs $12"), "{version}: {said}");
        assert_eq!(page.hits(), ["/pricing"], "{version}");

        // Once was once: the same URL asks again.
        let again = ask(&telegram, dir.path(), &fetch(&page, &pricing)).await;
        assert_eq!(page.hits().len(), 1, "{version}");
        let before = newest_id(&telegram);
        telegram.press(STARTER, &again, &button(again.buttons(), "Allow 127.0.0.1"));
        let said = reply_after(&telegram, dir.path(), before).await;
        assert!(said.contains("The Pro plan costs $12"), "{version}: {said}");
        assert_eq!(page.hits().len(), 2, "{version}");

        // The domain is allowed for the plan: another page of it is fetched without asking.
        let before = newest_id(&telegram);
        telegram.message(CHAT, STARTER, &fetch(&page, &page.url("/team")), None);
        let said = reply_after(&telegram, dir.path(), before).await;
        assert!(said.contains("The Pro plan costs $12"), "{version}: {said}");
        assert_eq!(page.hits(), ["/pricing", "/pricing", "/team"], "{version}");

        // Deny: the model hears it was declined, and the turn goes on to its answer.
        let elsewhere = format!("https://localhost:{}/secret", page.port);
        let question = ask(&telegram, dir.path(), &fetch(&page, &elsewhere)).await;
        let before = newest_id(&telegram);
        telegram.press(STARTER, &question, &button(question.buttons(), "Deny"));
        let said = reply_after(&telegram, dir.path(), before).await;
        assert!(said.contains("declined"), "{version}: {said}");
        assert_eq!(page.hits().len(), 3, "{version}");

        // /status shows the plan's allowance; each answer is in the audit log.
        let before = newest_id(&telegram);
        telegram.message(CHAT, STARTER, "/status", None);
        telegram
            .wait_for("the status", 60, |t| newest_id(t) > before)
            .await;
        let status = telegram.messages(CHAT).last().unwrap().text.clone();
        assert!(
            status.contains("WebFetch(domain:127.0.0.1)"),
            "{version}: {status}"
        );
        drop(planbot);
        let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
        let answers: Vec<&str> = audit
            .lines()
            .filter(|l| l.contains("\"approval\""))
            .collect();
        assert_eq!(answers.len(), 3, "{version}: {audit}");
        assert!(
            answers[0].contains("allow-once WebFetch https://127.0.0.1"),
            "{}",
            answers[0]
        );
        assert!(answers[1].contains("allow-for-plan"), "{}", answers[1]);
        assert!(
            answers[2].contains("deny WebFetch https://localhost"),
            "{}",
            answers[2]
        );
        assert!(
            telegram.faults().is_empty(),
            "{version}: {:?}",
            telegram.faults()
        );
    }
}
