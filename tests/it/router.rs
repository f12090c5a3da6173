//! The router with a recording front end and the fake `claude`: every command and button in every
//! state, the queue, cancel, strangers, bad slugs, finalize; each on every store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use planbot::planning::state::SessionEntry;
use planbot::router::{
    Action, ChatKey, Inbound, InboundKind, Membership, MessageKind, MessageRef, Outbound, Outgoing,
    Router, RouterSettings, SendError,
};
use planbot::store::{Inbox, SessionStore, Shared, Store};
use planbot::store_pg::PgStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::util::FakeClaude;

/// What the router said, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    Sent(Outgoing),
    Edited(String, Outgoing),
    Withdrawn(String),
    Deleted(String),
}

#[derive(Default)]
pub struct Recorder {
    said: Mutex<Vec<Said>>,
    next_id: Mutex<u64>,
    /// The test hook for a job that panics: sending a text containing this panics.
    pub panic_on: Mutex<Option<String>>,
}

impl Recorder {
    pub fn said(&self) -> Vec<Said> {
        self.said.lock().unwrap().clone()
    }

    /// Replies (sent or edited in), in order, without progress.
    pub fn replies(&self) -> Vec<Outgoing> {
        self.said()
            .into_iter()
            .filter_map(|s| match s {
                // Progress and the empty acknowledgement of a button press are not replies.
                Said::Sent(m) | Said::Edited(_, m)
                    if m.kind != MessageKind::Progress && !m.text.is_empty() =>
                {
                    Some(m)
                }
                _ => None,
            })
            .collect()
    }

    pub fn last_reply(&self) -> Outgoing {
        self.replies().pop().expect("a reply")
    }
}

#[async_trait]
impl Outbound for Recorder {
    async fn send(&self, _chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        let trap = self.panic_on.lock().unwrap().clone();
        if trap.is_some_and(|t| message.text.contains(&t)) {
            panic!("the test's front end panics on {:?}", message.text);
        }
        let mut id = self.next_id.lock().unwrap();
        *id += 1;
        self.said.lock().unwrap().push(Said::Sent(message));
        Ok(MessageRef(id.to_string()))
    }

    async fn edit(
        &self,
        _chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        self.said
            .lock()
            .unwrap()
            .push(Said::Edited(id.0.clone(), message));
        Ok(())
    }

    async fn withdraw_actions(&self, _chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.said
            .lock()
            .unwrap()
            .push(Said::Withdrawn(id.0.clone()));
        Ok(())
    }

    async fn delete(&self, _chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.said.lock().unwrap().push(Said::Deleted(id.0.clone()));
        Ok(())
    }
}

pub struct Harness {
    pub fake: FakeClaude,
    pub router: Router,
    pub out: Arc<Recorder>,
    pub store: Arc<dyn SessionStore>,
    pub _state: tempfile::TempDir,
    /// With replicas: stops the router's serving of leased chats when the test ends.
    serving: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.serving.cancel();
    }
}

tokio::task_local! {
    /// The database a test runs on (its store, URL and whether as replicas), set by
    /// [`on_postgres`]; outside it, `planning.json`.
    static DATABASE: (Arc<PgStore>, String, bool);
}

/// With replicas: the database's store and URL.
fn replicas() -> Option<(Arc<PgStore>, String)> {
    DATABASE
        .try_with(|(store, url, replicas)| replicas.then(|| (store.clone(), url.clone())))
        .ok()
        .flatten()
}

/// Runs `scenario` with its harness on a new database of the shared cluster: as one planbot
/// holding it, or with `replicas` as one of several planbots leasing each chat.
async fn on_postgres(test: &str, replicas: bool, scenario: impl Future<Output = ()>) {
    let Some(url) = crate::postgres::shared_database(test).await else {
        return;
    };
    let store = PgStore::new(&planbot::config::Secret::new(url.clone()), 4)
        .unwrap()
        .with_lease(Duration::from_secs(15));
    store.migrate().await.unwrap();
    // One planbot holds the database while it runs; replicas do not.
    let _held = if replicas {
        None
    } else {
        Some(store.claim().await.unwrap())
    };
    DATABASE
        .scope((Arc::new(store), url, replicas), scenario)
        .await;
}

/// Every test named runs three times: on `planning.json`, on PostgreSQL as one planbot, and on
/// PostgreSQL as one of several replicas (events through the inbox, chats leased).
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() {
                super::$test().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::on_postgres(stringify!($test), false, super::$test()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replicas() {
                super::on_postgres(stringify!($test), true, super::$test()).await
            }
        }
    )*};
}

impl Harness {
    pub fn new(steps: Value) -> Harness {
        Harness::with(steps, |_| {})
    }

    pub fn with(steps: Value, tweak: impl FnOnce(&mut RouterSettings)) -> Harness {
        let fake = FakeClaude::new(steps);
        let state = tempfile::tempdir().unwrap();
        let (store, inbox, shared): (Arc<dyn SessionStore>, _, _) =
            match DATABASE.try_with(|d| d.clone()) {
                Ok((pg, _, replicas)) => (
                    pg.clone(),
                    Some(pg.clone() as Arc<dyn Inbox>),
                    replicas.then_some(pg as Arc<dyn Shared>),
                ),
                Err(_) => (Arc::new(Store::open(state.path()).unwrap().0), None, None),
            };
        let out = Arc::new(Recorder::default());
        let mut outbounds: HashMap<String, Arc<dyn Outbound>> = HashMap::new();
        outbounds.insert("console".into(), out.clone());
        outbounds.insert("telegram".into(), out.clone());
        let mut settings = RouterSettings {
            restored_from_backup: None,
            allowed_users: vec!["telegram:42".into()],
            allowed_guilds: Vec::new(),
            allowed_roles: Vec::new(),
            progress_interval: Duration::from_millis(50),
            max_attachment_bytes: 1024,
            approvers: Vec::new(),
            approval_timeout: Duration::from_secs(600),
            spent_today: Default::default(),
            plan_budget_usd: None,
            user_daily_budget_usd: None,
            audit: Some(planbot::audit::Audit::new(state.path())),
            inbox,
            shared,
        };
        tweak(&mut settings);
        let router = Router::new(
            store.clone(),
            crate::planning::planner(&fake),
            settings,
            outbounds,
        );
        // With replicas: leases renewed, wake-ups taken (without, it returns at once).
        let serving = CancellationToken::new();
        tokio::spawn(router.clone().serve_shared(serving.clone()));
        Harness {
            fake,
            router,
            out,
            store,
            _state: state,
            serving,
        }
    }

    /// The plan of the console chat `channel`.
    pub async fn plan(&self, channel: &str) -> Option<SessionEntry> {
        self.store
            .get(&ChatKey::new("console", channel))
            .await
            .unwrap()
    }

    pub fn chat() -> ChatKey {
        ChatKey::new("console", "local")
    }

    /// Sends a line without waiting for what it starts.
    pub async fn send(&self, text: &str) {
        self.router
            .handle(Inbound::from_text(Self::chat(), "local", true, text))
            .await;
    }

    /// Sends a line and waits for the chat to be idle.
    pub async fn say(&self, text: &str) {
        self.router
            .handle(Inbound::from_text(Self::chat(), "local", true, text))
            .await;
        self.idle().await;
    }

    pub async fn press(&self, action: Action, revision: u64) {
        self.router
            .handle(Inbound {
                chat: Self::chat(),
                user: "local".into(),
                private: true,
                kind: InboundKind::Button { action, revision },
                interaction: Some("cb-1".into()),
                membership: None,
                event: None,
            })
            .await;
        self.idle().await;
    }

    pub async fn idle(&self) {
        let chat = Self::chat();
        tokio::time::timeout(Duration::from_secs(10), self.router.until_idle(Some(&chat)))
            .await
            .expect("the chat became idle within 10 s");
    }

    pub async fn revision(&self) -> u64 {
        self.plan("local").await.expect("a plan").revision
    }
}

on_every_store!(
    shutdown_closes_and_awaits_every_chat_worker,
    the_final_plan_is_written_once_the_agent_has_exited,
    a_whole_plan_through_commands_and_buttons,
    commands_in_every_state,
    bad_slugs_are_refused_with_the_rule,
    a_panicking_job_is_answered_and_the_chat_goes_on,
    a_cancel_at_any_instant_around_a_turns_start_stops_it,
    status_and_help_answer_at_once_while_a_turn_runs,
    a_command_that_changes_nothing_keeps_the_buttons_current,
    a_slug_belongs_to_the_chat_that_created_it,
    strangers_get_one_refusal_and_no_subprocess,
    guilds_and_roles_narrow_access,
    group_chatter_is_ignored_and_long_messages_refused,
    messages_queue_behind_a_turn_up_to_five,
    cancel_stops_a_running_turn_at_once_and_drops_the_queue,
    a_failed_turn_offers_only_cancel_and_keeps_the_plan,
    interrupted_plans_are_announced_and_resume_on_the_next_message,
    three_failed_turns_pause_the_plan_until_resume,
    a_plan_budget_stops_new_turns,
    a_daily_budget_follows_the_user_across_chats,
    every_action_is_audited,
);

async fn shutdown_closes_and_awaits_every_chat_worker() {
    let h = Harness::new(json!([]));
    h.send("/plan todo-app an idea").await;
    h.idle().await;
    assert!(
        h.router.tasks_left() >= 1,
        "the chat's worker waits for its next job"
    );
    h.router.shutdown(Duration::from_secs(5)).await;
    assert_eq!(h.router.tasks_left(), 0);
}

async fn the_final_plan_is_written_once_the_agent_has_exited() {
    let h = Harness::new(json!([
        {"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input"},
        // The finalize turn answers, then its process lingers and writes the file itself.
        {"kind": "result_then_linger", "text": "# The plan\n\nBuild it.\nPHASE_STATUS: ready_to_advance",
         "delay_ms": 200, "write": "final-plan.md", "body": "TAMPERED"},
    ]));
    h.say("/plan todo-app a todo app").await;
    h.press(Action::Finalize, h.revision().await).await;
    assert!(
        h.out
            .last_reply()
            .text
            .starts_with("✅ Plan `todo-app` finalized")
    );
    // Once the agent's process is gone, the file is still planbot's.
    crate::wait::wait_until(
        "the agent's exit",
        10,
        || h.fake.spans().len() == 2,
        || format!("{:?}", h.fake.spans()),
    )
    .await;
    let ws = h.fake.dir.path().join("workspace/todo-app");
    assert_eq!(
        std::fs::read_to_string(ws.join("final-plan.md")).unwrap(),
        "# The plan\n\nBuild it.\n"
    );
}

async fn a_whole_plan_through_commands_and_buttons() {
    let h = Harness::new(json!([
        {"kind": "answer", "text": "Who is it for?\nPHASE_STATUS: needs_input"},
        {"kind": "answer", "text": "Clear.\nPHASE_STATUS: ready_to_advance"},
        {"kind": "answer", "text": "CEO view.\nPHASE_STATUS: needs_input"},
        {"kind": "answer", "text": "# The plan\n\nBuild it.\nPHASE_STATUS: ready_to_advance"},
    ]));
    h.say("/plan todo-app a todo app for families").await;
    let reply = h.out.last_reply();
    assert_eq!(reply.text, "Who is it for?");
    let labels: Vec<_> = reply.actions.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(
        labels,
        ["Continue to /plan-ceo-review", "Finalize", "Cancel"]
    );
    // A turn that ends before the first progress tick shows no working message.
    assert!(
        !h.out
            .said()
            .iter()
            .any(|s| matches!(s, Said::Sent(m) if m.kind == MessageKind::Progress))
    );

    h.say("Parents with kids").await;
    assert_eq!(h.out.last_reply().text, "Clear.");
    let stale = reply.actions[0].revision;
    let current = h.revision().await;
    assert!(current > stale);

    // The first reply's button is stale now: nothing happens but a note.
    let calls_before = h.fake.calls().len();
    h.press(Action::Advance, stale).await;
    let note = h.out.last_reply();
    assert_eq!(
        (note.kind, note.text.as_str()),
        (MessageKind::Ephemeral, "This is no longer current.")
    );
    assert_eq!(note.interaction.as_deref(), Some("cb-1"));
    assert_eq!(h.fake.calls().len(), calls_before);

    h.press(Action::Advance, current).await;
    assert_eq!(h.out.last_reply().text, "CEO view.");
    let entry = h.plan("local").await.unwrap();
    assert_eq!(entry.phase, "plan-ceo-review");
    // The buttons of the message that stopped being current were withdrawn.
    assert!(h.out.said().iter().any(|s| matches!(s, Said::Withdrawn(_))));

    h.say("/status").await;
    let status = h.out.last_reply().text;
    assert!(
        status.contains("phase 2 of 4, /plan-ceo-review") && status.contains("Done: office-hours"),
        "{status}"
    );

    h.press(Action::Finalize, h.revision().await).await;
    let done = h.out.last_reply();
    assert!(
        done.text.starts_with("✅ Plan `todo-app` finalized"),
        "{}",
        done.text
    );
    assert_eq!(done.attachment.as_ref().unwrap().name, "final-plan.md");
    let ws = h.fake.dir.path().join("workspace/todo-app");
    assert_eq!(
        std::fs::read_to_string(ws.join("final-plan.md")).unwrap(),
        "# The plan\n\nBuild it.\n"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.join("plan.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "approved");
    assert_eq!(
        record["phases_completed"],
        json!(["office-hours", "plan-ceo-review"])
    );
    assert_eq!(record["session_ids"].as_object().unwrap().len(), 2);
    assert!(record["finalized_at"].is_string());
    assert!(h.plan("local").await.is_none(), "out of planning mode");

    // A press on the finished plan's buttons changes nothing.
    h.press(
        Action::Finalize,
        done.actions.first().map_or(1, |o| o.revision),
    )
    .await;
    assert_eq!(h.out.last_reply().text, "This is no longer current.");
}

async fn commands_in_every_state() {
    let h = Harness::new(json!([]));
    for (line, expected) in [
        ("/status", "Nothing is being planned here"),
        ("/advance", "Nothing is being planned here"),
        ("/finalize", "Nothing is being planned here"),
        ("/cancel", "Nothing is being planned here"),
        ("hello?", "Nothing is being planned here. Start with /plan"),
        ("/frobnicate", "Unknown command /frobnicate. Try /help."),
        ("/help", "/plan <slug> <idea>"),
        ("/plan", "Usage: /plan <slug> <idea>"),
    ] {
        h.say(line).await;
        assert!(
            h.out.last_reply().text.contains(expected),
            "{line}: {}",
            h.out.last_reply().text
        );
    }
    assert!(h.fake.calls().is_empty());

    h.say("/plan shop an online shop").await;
    h.say("/plan other something else").await;
    assert!(h.out.last_reply().text.contains("already planning `shop`"));
    h.say("/next").await;
    h.say("/advance").await;
    h.say("/advance").await;
    assert_eq!(h.plan("local").await.unwrap().phase, "plan-design-review");
    h.say("/advance").await;
    let last = h.out.last_reply();
    assert!(
        last.text.contains("is the last phase. Finalize the plan?"),
        "{}",
        last.text
    );
    assert_eq!(last.actions[0].action, Action::Finalize);
    h.say("/cancel").await;
    assert!(
        h.out
            .last_reply()
            .text
            .starts_with("Cancelled planning `shop`")
    );
    assert!(h.plan("local").await.is_none());
}

async fn bad_slugs_are_refused_with_the_rule() {
    let h = Harness::new(json!([]));
    for slug in ["../x", "/etc", "Todo", "-x", "a_b", "x.y"] {
        h.say(&format!("/plan {slug} idea")).await;
        let text = h.out.last_reply().text;
        assert!(
            text.contains("is not a valid slug")
                && text.contains("lower-case letters, digits and dashes"),
            "{slug}: {text}"
        );
    }
    assert!(h.fake.calls().is_empty());
    assert!(!h.fake.dir.path().join("workspace").exists());
}

async fn a_panicking_job_is_answered_and_the_chat_goes_on() {
    let h = Harness::new(json!([]));
    *h.out.panic_on.lock().unwrap() = Some("Unknown command /boom".into());
    h.say("/boom").await;
    assert!(
        h.out
            .last_reply()
            .text
            .contains("Something went wrong inside planbot"),
        "{:?}",
        h.out.replies()
    );
    h.say("/help").await;
    assert!(h.out.last_reply().text.contains("/plan <slug> <idea>"));
    h.say("/plan todo-app a list").await;
    assert_eq!(h.fake.calls().len(), 1, "the chat still plans");
}

async fn a_cancel_at_any_instant_around_a_turns_start_stops_it() {
    for delay_ms in [0, 1, 2, 3, 5, 8, 13, 21, 34, 55] {
        let h = Harness::new(json!([{"kind": "slow", "delay_ms": 3000}]));
        h.send("/plan todo-app x").await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        h.send("/cancel").await;
        h.idle().await;
        assert!(
            h.fake.spans().is_empty(),
            "cancelled {delay_ms} ms in, the turn still ran to its end"
        );
        assert!(h.plan("local").await.is_none());
    }
}

async fn status_and_help_answer_at_once_while_a_turn_runs() {
    let h = Harness::new(json!([{"kind": "slow", "delay_ms": 3000}]));
    let chat = Harness::chat();
    h.router
        .handle(Inbound::from_text(
            chat.clone(),
            "local",
            true,
            "/plan todo-app x",
        ))
        .await;
    while h.fake.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for command in ["/status", "/help"] {
        h.send(command).await;
    }
    for _ in 0..200 {
        if h.out.replies().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let texts: Vec<String> = h.out.replies().into_iter().map(|m| m.text).collect();
    assert!(
        h.fake.spans().is_empty(),
        "answered while the turn still ran"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("todo-app") && t.contains("office-hours")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("/plan <slug> <idea>")),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.starts_with("Queued")), "{texts:?}");
    h.idle().await;
}

async fn a_command_that_changes_nothing_keeps_the_buttons_current() {
    let h = Harness::new(json!([]));
    h.say("/plan todo-app a list").await;
    let revision = h.revision().await;
    h.say("/resume").await;
    assert_eq!(h.out.last_reply().text, "This plan is not paused.");
    h.say("/status").await;
    assert_eq!(
        h.revision().await,
        revision,
        "the buttons on screen stay current"
    );
    h.press(Action::Advance, revision).await;
    assert_eq!(h.fake.calls().len(), 2, "the earlier button still works");
}

async fn a_slug_belongs_to_the_chat_that_created_it() {
    let h = Harness::new(json!([]));
    h.say("/plan todo-app a shared list").await;
    let calls = h.fake.calls().len();
    let other = ChatKey::new("console", "other");
    h.router
        .handle(Inbound::from_text(
            other.clone(),
            "local",
            true,
            "/plan todo-app mine now",
        ))
        .await;
    for _ in 0..500 {
        if h.router.chat_is_idle(&other) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.out.last_reply().text,
        "`todo-app` belongs to another chat; pick another name"
    );
    assert_eq!(
        h.fake.calls().len(),
        calls,
        "no turn ran for the other chat"
    );
    assert!(h.plan("other").await.is_none());
    // Finalized or not, the slug stays the first chat's; a new name works for the other chat.
    h.router
        .handle(Inbound::from_text(
            other.clone(),
            "local",
            true,
            "/plan todo-two mine",
        ))
        .await;
    for _ in 0..500 {
        if h.router.chat_is_idle(&other) && h.fake.calls().len() > calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.fake.calls().len(), calls + 1);
}

async fn strangers_get_one_refusal_and_no_subprocess() {
    let h = Harness::new(json!([]));
    let stranger =
        |text: &str| Inbound::from_text(ChatKey::new("telegram", "-100"), "666", false, text);
    h.router.handle(stranger("/plan evil rm -rf")).await;
    h.router.handle(stranger("hello")).await;
    h.router.handle(stranger("/status")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let replies = h.out.replies();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].text.contains("not allowed"));
    assert!(h.fake.calls().is_empty());
    let from = |adapter: &str, user: &str| {
        Inbound::from_text(ChatKey::new(adapter, "1"), user, false, "hi")
    };
    assert!(!h.router.authorize(&from("telegram", "666")));
    assert!(h.router.authorize(&from("telegram", "42")));
    assert!(
        !h.router.authorize(&from("discord", "42")),
        "allowed per adapter"
    );
}

async fn guilds_and_roles_narrow_access() {
    let h = Harness::with(json!([]), |s| {
        s.allowed_users.push("discord:7".into());
        s.allowed_guilds = vec!["100".into()];
        s.allowed_roles = vec!["planner".into()];
    });
    let from = |guild: Option<&str>, roles: &[&str]| Inbound {
        membership: guild.map(|g| Membership {
            guild: g.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }),
        ..Inbound::from_text(ChatKey::new("discord", "5"), "7", guild.is_none(), "hi")
    };
    assert!(
        h.router
            .authorize(&from(Some("100"), &["other", "planner"]))
    );
    assert!(
        !h.router.authorize(&from(Some("100"), &["other"])),
        "role missing"
    );
    assert!(
        !h.router.authorize(&from(Some("200"), &["planner"])),
        "guild not allowed"
    );
    assert!(
        h.router.authorize(&from(None, &[])),
        "a direct message of an allowed user"
    );
    // A guild event whose membership the front end did not fill in fails closed.
    let unknown = Inbound::from_text(ChatKey::new("discord", "5"), "7", false, "/plan x y");
    assert!(
        !h.router.authorize(&unknown),
        "a guild event without membership"
    );
}

async fn group_chatter_is_ignored_and_long_messages_refused() {
    let h = Harness::new(json!([]));
    h.router
        .handle(Inbound::from_text(
            ChatKey::new("telegram", "-5"),
            "42",
            false,
            "just chatting",
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.out.replies().is_empty());
    h.say(&"x".repeat(16_001)).await;
    assert!(h.out.last_reply().text.contains("the limit is 16000"));
    h.say(&format!("/plan big {}", "y".repeat(16_001))).await;
    assert!(h.out.last_reply().text.contains("the limit is 16000"));
    assert!(h.fake.calls().is_empty());
}

async fn messages_queue_behind_a_turn_up_to_five() {
    let h = Harness::new(json!([{"kind": "slow", "delay_ms": 800}]));
    h.router
        .handle(Inbound::from_text(
            Harness::chat(),
            "local",
            true,
            "/plan q a queue",
        ))
        .await;
    // Wait until the first turn is running.
    while h.fake.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 1..=6 {
        h.router
            .handle(Inbound::from_text(
                Harness::chat(),
                "local",
                true,
                &format!("message {i}"),
            ))
            .await;
    }
    // The notes are sent outside the queue: wait (boundedly) until all six arrived.
    for _ in 0..500 {
        let notes = h
            .out
            .replies()
            .iter()
            .filter(|m| m.text.starts_with("Queued") || m.text.contains("already waiting"))
            .count();
        if notes >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each note is sent by its own task, so they may arrive in any order.
    let acks: Vec<String> = h.out.replies().into_iter().map(|m| m.text).collect();
    let mut queued: Vec<&String> = acks.iter().filter(|t| t.starts_with("Queued")).collect();
    queued.sort();
    let expected: Vec<String> = (1..=5)
        .map(|n| format!("Queued: I'll answer after the current turn ({n} waiting)."))
        .collect();
    assert_eq!(queued, expected.iter().collect::<Vec<_>>(), "{acks:?}");
    assert_eq!(
        acks.iter()
            .filter(|t| t.contains("5 messages are already waiting"))
            .count(),
        1,
        "{acks:?}"
    );
    h.idle().await;
    let said: Vec<String> = h
        .fake
        .calls()
        .iter()
        .skip(1)
        .map(|c| c["stdin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(said.len(), 5);
    for (i, stdin) in said.iter().enumerate() {
        assert!(
            stdin.contains(&format!("message {}", i + 1)),
            "in order: {said:?}"
        );
    }
}

async fn cancel_stops_a_running_turn_at_once_and_drops_the_queue() {
    let h = Harness::new(json!([{"kind": "hang", "grandchild": true}]));
    h.router
        .handle(Inbound::from_text(
            Harness::chat(),
            "local",
            true,
            "/plan c cancel me",
        ))
        .await;
    while h.fake.grandchildren().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.router
        .handle(Inbound::from_text(
            Harness::chat(),
            "local",
            true,
            "queued message",
        ))
        .await;
    h.say("/cancel").await;
    let texts: Vec<String> = h.out.replies().into_iter().map(|m| m.text).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Cancelled planning `c`")),
        "{texts:?}"
    );
    assert!(h.plan("local").await.is_none());
    assert_eq!(h.fake.calls().len(), 1, "the queued message was dropped");
    crate::util::eventually("grandchild survived", || {
        !crate::util::alive(h.fake.grandchildren()[0])
    });
}

async fn a_failed_turn_offers_only_cancel_and_keeps_the_plan() {
    let h = Harness::new(json!([{"kind": "crash", "exit": 2, "stderr": "boom"}]));
    h.say("/plan f fails").await;
    let reply = h.out.last_reply();
    assert!(
        reply.text.contains("did not finish") && reply.text.contains("boom"),
        "{}",
        reply.text
    );
    assert_eq!(reply.actions.len(), 1);
    assert_eq!(reply.actions[0].action, Action::Cancel);
    h.say("try again").await;
    assert!(
        h.out.last_reply().text.contains("You said"),
        "{}",
        h.out.last_reply().text
    );
}

async fn interrupted_plans_are_announced_and_resume_on_the_next_message() {
    let h = Harness::new(json!([]));
    h.say("/plan resumed an idea").await;
    let chat = Harness::chat();
    let mut entry = h.plan("local").await.unwrap();
    let id = entry.session_id.clone();
    if let Some((store, url)) = replicas() {
        // With replicas: the chat passes to another planbot, which dies mid-turn; this one
        // takes it over once that lease has run out, and says so.
        store.release(&chat).await.unwrap();
        let dying = PgStore::new(&planbot::config::Secret::new(url), 1)
            .unwrap()
            .with_lease(Duration::from_secs(1));
        dying
            .acquire(&chat)
            .await
            .unwrap()
            .expect("the chat is free");
        entry.status = planbot::planning::state::EntryStatus::Running;
        dying.put(&chat, entry).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        h.say("where were we?").await;
        assert!(
            h.out.replies().iter().any(|m| m
                .text
                .contains("The planbot serving `resumed` stopped during a turn")),
            "{:?}",
            h.out.replies()
        );
    } else {
        // A crash mid-turn leaves the entry running; the next start marks it interrupted.
        entry.status = planbot::planning::state::EntryStatus::Interrupted;
        h.store.put(&chat, entry).await.unwrap();
        h.router.announce_interrupted("console").await;
        assert!(
            h.out
                .last_reply()
                .text
                .contains("planbot restarted while a turn of `resumed`")
        );
        h.say("where were we?").await;
    }
    let calls = h.fake.calls();
    assert_eq!(
        crate::util::arg_after(calls.last().unwrap(), "--resume"),
        id.as_deref()
    );
    let entry = h.plan("local").await.unwrap();
    assert_eq!(
        entry.status,
        planbot::planning::state::EntryStatus::Planning
    );
}

async fn three_failed_turns_pause_the_plan_until_resume() {
    let crash = json!({"kind": "crash", "exit": 1, "stderr": "broken setup"});
    let h = Harness::new(json!([crash, crash, crash]));
    h.say("/plan brk a broken setup").await;
    h.say("again").await;
    h.say("and again").await;
    let paused = h.out.last_reply();
    assert!(
        paused.text.contains("paused after 3 failed turns"),
        "{}",
        paused.text
    );
    assert_eq!(paused.actions.len(), 1);
    assert_eq!(paused.actions[0].action, Action::Resume);
    h.say("one more try?").await;
    assert!(h.out.last_reply().text.contains("is paused"));
    assert_eq!(h.fake.calls().len(), 3, "no turn while paused");
    h.press(Action::Resume, paused.actions[0].revision).await;
    assert!(h.out.last_reply().text.starts_with("Resumed."));
    h.say("working now?").await;
    // The phase never got a session, so it starts afresh with the message at the end.
    assert!(
        h.out.last_reply().text.starts_with("[fake claude] reply 1"),
        "{}",
        h.out.last_reply().text
    );
    assert!(
        h.fake.calls()[3]["stdin"]
            .as_str()
            .unwrap()
            .ends_with("working now?\n</user_message>")
    );
    assert!(!h.plan("local").await.unwrap().paused);
}

async fn a_plan_budget_stops_new_turns() {
    // The fake reports $0.001 a turn.
    let h = Harness::with(json!([]), |s| s.plan_budget_usd = Some(0.0015));
    h.say("/plan capped an idea").await;
    h.say("second").await;
    h.say("third").await;
    let text = h.out.last_reply().text;
    assert!(
        text.contains("its budget is $0.00") && text.contains("PLANBOT_PLAN_BUDGET_USD"),
        "{text}"
    );
    assert_eq!(h.fake.calls().len(), 2);
    // The refusal says "/finalize it", and finalizing works past the plan's budget (#15, 3).
    h.say("/finalize").await;
    assert_eq!(h.fake.calls().len(), 3);
    assert!(h.plan("local").await.is_none(), "finalized");
    assert!(h.out.last_reply().text.contains("finalized"));
}

async fn a_daily_budget_follows_the_user_across_chats() {
    let h = Harness::with(json!([]), |s| s.user_daily_budget_usd = Some(0.0015));
    let telegram = |chat: &str, text: &str| {
        Inbound::from_text(ChatKey::new("telegram", chat), "42", true, text)
    };
    h.router.handle(telegram("1", "/plan one first")).await;
    h.router.handle(telegram("2", "/plan two second")).await;
    for _ in 0..500 {
        if h.fake.calls().len() == 2
            && h.router.chat_is_idle(&ChatKey::new("telegram", "2"))
            && h.router.chat_is_idle(&ChatKey::new("telegram", "1"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.router.handle(telegram("3", "/plan three third")).await;
    for _ in 0..500 {
        if h.out
            .replies()
            .iter()
            .any(|m| m.text.contains("daily budget"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        h.out
            .replies()
            .iter()
            .any(|m| m.text.contains("PLANBOT_USER_DAILY_BUDGET_USD"))
    );
    assert_eq!(h.fake.calls().len(), 2);
    // The refused /plan says only why and leaves nothing behind (#15, 7).
    assert!(
        !h.out
            .replies()
            .iter()
            .any(|m| m.text.contains("Planning `three`")),
        "{:?}",
        h.out.replies()
    );
    assert!(!h.fake.dir.path().join("workspace/three").exists());
}

async fn every_action_is_audited() {
    let h = Harness::new(json!([]));
    h.say("/plan audited an idea").await;
    h.say("a reply").await;
    h.say("/status").await;
    h.press(Action::Finalize, h.revision().await).await;
    h.router.flush_audit().await;
    let lines = planbot::audit::Audit::new(h._state.path()).lines();
    let actions: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.action.as_str(), l.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("plan", "answered"),
            ("message", "answered"),
            ("status", "ok"),
            ("button:fin", "finalized")
        ]
    );
    for line in &lines {
        assert_eq!(
            (
                line.adapter.as_str(),
                line.chat.as_str(),
                line.user.as_str()
            ),
            ("console", "local", "local")
        );
        assert_eq!(line.slug.as_deref(), Some("audited"));
    }
    assert!(lines[0].cost_usd > 0.0 && lines[2].cost_usd == 0.0);
    assert!(lines[0].phase.as_deref() == Some("office-hours"));
}

/// With replicas, `/status` received by a planbot that does not hold the chat is answered, while
/// the chat's turn runs, by the planbot that does: one planbot speaks to a chat, at its pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_the_chats_holder_answers_its_status() {
    let Some(url) = crate::postgres::shared_database("status_by_the_holder").await else {
        return;
    };
    let migrated = PgStore::new(&planbot::config::Secret::new(url.clone()), 1).unwrap();
    migrated.migrate().await.unwrap();
    let planbot = |steps: Value| {
        let store = PgStore::new(&planbot::config::Secret::new(url.clone()), 4)
            .unwrap()
            .with_lease(Duration::from_secs(15));
        DATABASE.sync_scope((Arc::new(store), url.clone(), true), || Harness::new(steps))
    };
    let holder = planbot(json!([{"kind": "slow", "delay_ms": 1500}]));
    let other = planbot(json!([]));
    holder.send("/plan held-plan an idea").await;
    while holder.fake.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.send("/status").await;
    let answered = || {
        holder
            .out
            .replies()
            .iter()
            .any(|m| m.text.contains("a turn is running"))
    };
    for _ in 0..500 {
        if answered() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered(), "{:?}", holder.out.replies());
    assert_eq!(other.out.replies(), Vec::new());
    holder.idle().await;
}
