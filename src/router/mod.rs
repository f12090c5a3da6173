//! Admission: the one authorization check, limits, answers that need no turn, and one worker
//! per chat behind its queue ([`worker`]). Front ends translate their platform to [`Inbound`]
//! and implement [`Outbound`]; nothing here knows a platform. What a job means is decided in
//! [`crate::conversation`].

pub(crate) mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::{Audit, AuditLine};
pub use crate::chat::{
    Action, Attachment, ChatKey, Inbound, InboundKind, Membership, MessageKind, MessageRef, Offer,
    Outbound, Outgoing, SendError, parse_text,
};
use crate::commands::{Command, help_text};
use crate::conversation::copy;
use crate::planning::Planner;
use crate::planning::state::{EntryStatus, SessionEntry};
use crate::store::{Inbox, SessionStore, Shared};
use crate::sync::Locked;
use worker::{ChatWorker, Worker, WorkerShared};

/// Longest message planbot accepts, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;
/// Messages that may wait behind a running turn.
pub const MAX_QUEUED: usize = 5;
/// Room in a chat's job channel: the waiting messages, and as many /cancel on top.
const JOB_CHANNEL: usize = 2 * MAX_QUEUED;
/// Strangers remembered as refused once; past this the memory starts afresh.
const MAX_REFUSED: usize = 10_000;
/// A chat's worker stops after this long without work (it is started again on demand).
pub(crate) const WORKER_IDLE: Duration = Duration::from_secs(600);

/// What the router needs.
#[derive(Clone)]
pub struct RouterSettings {
    /// `adapter:user_id` entries allowed to plan.
    pub allowed_users: Vec<String>,
    /// Where set, a message from a community must come from one of these (guild ids).
    pub allowed_guilds: Vec<String>,
    /// Where set, a member of a community must hold one of these roles.
    pub allowed_roles: Vec<String>,
    /// How often the progress message may change.
    pub progress_interval: Duration,
    /// Files sent to a plan larger than this are refused.
    pub max_attachment_bytes: u64,
    /// `adapter:user_id` entries who may answer any plan's questions.
    pub approvers: Vec<String>,
    /// An unanswered question is denied after this.
    pub approval_timeout: Duration,
    /// No turn starts for a plan that has spent this much.
    pub plan_budget_usd: Option<f64>,
    /// No turn starts for a user who has spent this much today (UTC).
    pub user_daily_budget_usd: Option<f64>,
    /// Where every action is recorded.
    pub audit: Option<Audit>,
    /// When the state was restored from `planning.json.bak` (the backup's time), at start-up.
    pub restored_from_backup: Option<String>,
    /// What each `adapter:user` has spent today (UTC), read from the audit log before the router
    /// is built (off the async threads: the log can be long).
    pub spent_today: HashMap<String, f64>,
    /// Where admitted events are kept until handled (PostgreSQL), if anywhere.
    pub inbox: Option<Arc<dyn Inbox>>,
    /// With several planbots on one database: chats are served under their lease only, their
    /// events taken from the inbox ([`Router::serve_shared`]).
    pub shared: Option<Arc<dyn Shared>>,
}

/// Routes every front end's events. A cheap handle.
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) planner: Planner,
    pub(crate) allowed: HashSet<String>,
    pub(crate) allowed_guilds: Vec<String>,
    pub(crate) allowed_roles: Vec<String>,
    pub(crate) progress_interval: Duration,
    pub(crate) max_attachment_bytes: u64,
    pub(crate) approvers: HashSet<String>,
    pub(crate) approval_timeout: Duration,
    pub(crate) plan_budget_usd: Option<f64>,
    pub(crate) user_daily_budget_usd: Option<f64>,
    pub(crate) audit: Option<Audit>,
    pub(crate) inbox: Option<Arc<dyn Inbox>>,
    pub(crate) shared: Option<Arc<dyn Shared>>,
    /// The chats whose lease this planbot holds, with the number of the last event taken.
    pub(crate) leased: Mutex<HashMap<ChatKey, i64>>,
    /// Whether this planbot is woken by the database for events others keep.
    pub(crate) listening: AtomicBool,
    /// A chat's job ended: with replicas, a chat left waiting for room may be taken now.
    pub(crate) room: tokio::sync::Notify,
    /// What each `adapter:user` has spent today, seeded from the audit log.
    pub(crate) spend: Mutex<(chrono::NaiveDate, HashMap<String, f64>)>,
    /// Set by [`Router::shutdown`]: no new work is taken.
    pub(crate) closing: AtomicBool,
    pub(crate) outbounds: HashMap<String, Arc<dyn Outbound>>,
    /// Live workers by chat. Held only to look up or insert, never across an await.
    pub(crate) workers: Mutex<HashMap<ChatKey, Worker>>,
    /// Strangers already refused once, so they get one refusal and no more.
    pub(crate) refused: Mutex<HashSet<(String, String)>>,
    /// Answers being sent outside the chats' queues (`/help`, `/status`, refusals, notes).
    pub(crate) answering: AtomicUsize,
    /// Every worker and answer task, so that shutdown can close and await them.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// See [`RouterSettings::restored_from_backup`].
    pub(crate) restored_from_backup: Option<String>,
    /// Woken whenever a job ends or an answer is sent: [`Router::until_idle`] waits on it.
    pub(crate) idle: tokio::sync::Notify,
}

/// `/help` and `/status`: they change nothing and are answered at once, even while a turn runs.
fn read_only(inbound: &Inbound) -> Option<Command> {
    match &inbound.kind {
        InboundKind::Command { name, .. } => {
            Command::parse(name).filter(|c| matches!(c, Command::Help | Command::Status))
        }
        _ => None,
    }
}

impl Router {
    pub fn new(
        store: Arc<dyn SessionStore>,
        planner: Planner,
        settings: RouterSettings,
        outbounds: HashMap<String, Arc<dyn Outbound>>,
    ) -> Router {
        let today = chrono::Utc::now().date_naive();
        let spent = settings.spent_today;
        Router {
            inner: Arc::new(Inner {
                store,
                planner,
                allowed: settings.allowed_users.into_iter().collect(),
                allowed_guilds: settings.allowed_guilds,
                allowed_roles: settings.allowed_roles,
                progress_interval: settings.progress_interval,
                max_attachment_bytes: settings.max_attachment_bytes,
                approvers: settings.approvers.into_iter().collect(),
                approval_timeout: settings.approval_timeout,
                plan_budget_usd: settings.plan_budget_usd,
                user_daily_budget_usd: settings.user_daily_budget_usd,
                audit: settings.audit,
                inbox: settings.inbox,
                shared: settings.shared,
                leased: Mutex::new(HashMap::new()),
                listening: AtomicBool::new(false),
                room: tokio::sync::Notify::new(),
                restored_from_backup: settings.restored_from_backup,
                spend: Mutex::new((today, spent)),
                closing: AtomicBool::new(false),
                outbounds,
                workers: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashSet::new()),
                answering: AtomicUsize::new(0),
                tasks: tokio_util::task::TaskTracker::new(),
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The one access check, on every path: an allowed user, and where the event comes from a
    /// community, an allowed one and an allowed role. The console's local user is always allowed.
    pub fn authorize(&self, inbound: &Inbound) -> bool {
        let inner = &self.inner;
        if inbound.chat.adapter == "console" {
            return true;
        }
        let user = format!("{}:{}", inbound.chat.adapter, inbound.user);
        if !inner.allowed.contains(&user) {
            return false;
        }
        match &inbound.membership {
            Some(m) => {
                (inner.allowed_guilds.is_empty() || inner.allowed_guilds.contains(&m.guild))
                    && (inner.allowed_roles.is_empty()
                        || m.roles.iter().any(|r| inner.allowed_roles.contains(r)))
            }
            // A Discord event outside a DM that says nothing of its guild cannot be checked
            // against the guild and role limits: refused, never let through.
            None => {
                let limited = !inner.allowed_guilds.is_empty() || !inner.allowed_roles.is_empty();
                inbound.private || !limited || inbound.chat.adapter != "discord"
            }
        }
    }

    /// Takes one event from a front end. Returns at once; the work happens in the chat's worker.
    pub async fn handle(&self, inbound: Inbound) {
        self.admit(inbound, None).await
    }

    /// Admits an event and queues it for its chat; `kept` is its number in the inbox when it
    /// was kept before (one handled again after a restart), else it is kept now.
    async fn admit(&self, inbound: Inbound, kept: Option<i64>) {
        let Some(outbound) = self.inner.outbounds.get(&inbound.chat.adapter).cloned() else {
            tracing::error!(adapter = %inbound.chat.adapter, "event from an unregistered front end");
            return;
        };
        if let Some(answer) = self.turn_away(&inbound) {
            if let Some(message) = answer {
                self.send_later(&outbound, &inbound.chat, message);
            }
            return;
        }
        if self.inner.shared.is_none() && read_only(&inbound).is_some() {
            // Read-only: answered at once, even while a turn runs (with replicas, by the chat's
            // holder, which keeps the chat's pace: see `enqueue`).
            self.enqueue(inbound, outbound, None);
            return;
        }
        if let InboundKind::Button { action, revision } = inbound.kind {
            // Answered at once, so that the front end can stop its button spinner: a press on a
            // button that is no longer current changes nothing, nor does an answer to a question
            // from someone who may not give it; a current one is acknowledged and queued (and
            // checked again when its turn comes).
            let entry = self.inner.store.get(&inbound.chat).await.ok().flatten();
            let current = entry.as_ref().is_some_and(|e| e.revision == revision);
            let question = matches!(
                action,
                Action::AllowOnce | Action::AllowForPlan | Action::Deny
            );
            let refused = current && question && !self.may_answer(&inbound, entry.as_ref());
            let note = match (current, refused) {
                (false, _) => STALE,
                (true, true) => copy::NOT_YOURS,
                (true, false) => "",
            };
            // An empty acknowledgement only where there is an interaction to close.
            if inbound.interaction.is_some() || !note.is_empty() {
                self.send_later(&outbound, &inbound.chat, Outgoing::answer(&inbound, note));
            }
            if !note.is_empty() {
                return;
            }
        }
        let kept = match (kept, &self.inner.inbox) {
            (Some(id), _) => Some(id),
            (None, Some(inbox)) => match inbox.keep(&inbound).await {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    tracing::info!(chat = %inbound.chat, event = ?inbound.event, "an event delivered twice is handled once");
                    return;
                }
                Err(e) if self.inner.shared.is_some() => {
                    // With replicas only the chat's holder may handle it, and it takes events
                    // from the inbox: the sender is asked to send it again.
                    tracing::error!(chat = %inbound.chat, error = %e, "could not keep an event");
                    self.send_later(&outbound, &inbound.chat, Outgoing::reply(SAVE_FAILED));
                    return;
                }
                Err(e) => {
                    // Handled all the same: answered now rather than lost, though not kept.
                    tracing::error!(chat = %inbound.chat, error = %e, "could not keep an event");
                    None
                }
            },
            (None, None) => None,
        };
        if self.inner.shared.is_some() && kept.is_some() {
            // Served from the inbox by whichever planbot holds the chat (woken if not this one).
            self.serve(&inbound.chat).await;
            return;
        }
        self.enqueue(inbound, outbound, kept);
    }

    /// Handles the events of `adapter` kept and not handled when planbot last stopped (its
    /// front end is up to answer them), in the order they came.
    pub async fn handle_kept(&self, adapter: &str) {
        let Some(inbox) = &self.inner.inbox else {
            return;
        };
        if let Err(e) = inbox.forget_handled().await {
            tracing::warn!(error = %e, "could not forget old events");
        }
        if self.inner.shared.is_some() {
            // Taken by the chats' lease holders (see serve_shared).
            return;
        }
        let pending = match inbox.pending().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(error = %e, "could not read the events kept before this start");
                return;
            }
        };
        for (id, inbound) in pending {
            if inbound.chat.adapter == adapter {
                tracing::info!(chat = %inbound.chat, id, "handling an event kept before this start");
                self.admit(inbound, Some(id)).await;
            }
        }
    }

    /// Whether the event is turned away before any work (planbot closing, a stranger, a message
    /// over the limit), and with what answer (`None`: in silence).
    fn turn_away(&self, inbound: &Inbound) -> Option<Option<Outgoing>> {
        let chat = &inbound.chat;
        if self.inner.closing.load(Ordering::SeqCst) {
            return Some(Some(Outgoing::reply(copy::STOPPING)));
        }
        if !self.authorize(inbound) {
            // Chatter of strangers in a group is not addressed to planbot: ignored quietly.
            if !inbound.private
                && matches!(
                    inbound.kind,
                    InboundKind::Text(_) | InboundKind::Files { .. }
                )
            {
                return Some(None);
            }
            let first = {
                let mut refused = self.inner.refused.locked();
                // Bounded: a flood of strangers cannot grow it without end.
                if refused.len() >= MAX_REFUSED {
                    refused.clear();
                }
                refused.insert((chat.to_string(), inbound.user.clone()))
            };
            tracing::warn!(chat = %chat, user = %inbound.user, "refused a stranger");
            // An interaction (a button, a slash command) always needs its answer.
            let answer = (first || inbound.interaction.is_some())
                .then(|| Outgoing::answer(inbound, copy::STRANGER));
            return Some(answer);
        }
        if let InboundKind::Text(text)
        | InboundKind::Command { args: text, .. }
        | InboundKind::Files { caption: text, .. } = &inbound.kind
        {
            let chars = text.chars().count();
            if chars > MAX_MESSAGE_CHARS {
                let msg = copy::too_long(chars, MAX_MESSAGE_CHARS);
                return Some(Some(Outgoing::reply(msg)));
            }
        }
        None
    }

    /// Queues the job on the chat's worker (started on demand), or says why it was not taken.
    /// /cancel bypasses the queue: everything waiting is dropped and the running turn ends.
    fn enqueue(&self, inbound: Inbound, outbound: Arc<dyn Outbound>, kept: Option<i64>) {
        if let Some(command) = read_only(&inbound) {
            // Outside the chat's queue: at once, even while a turn runs.
            let router = self.clone();
            self.answer_later(async move {
                let chat = inbound.chat.clone();
                router.answer_read_only(command, inbound, outbound).await;
                router.handled(&chat, kept).await;
                // With replicas, a chat taken only to answer this is given back at once.
                let idle = !router.inner.workers.locked().contains_key(&chat);
                if idle {
                    router.retired(&chat);
                }
            });
            return;
        }
        let chat = inbound.chat.clone();
        let is_cancel = matches!(&inbound.kind, InboundKind::Command { name, .. } if Command::parse(name) == Some(Command::Cancel))
            || matches!(
                inbound.kind,
                InboundKind::Button {
                    action: Action::Cancel,
                    ..
                }
            );
        // planbot's own jobs are not announced as queued.
        let internal = matches!(inbound.kind, InboundKind::QuestionExpired { .. });
        let note = {
            let mut workers = self.inner.workers.locked();
            let worker = workers
                .entry(chat.clone())
                .or_insert_with(|| self.spawn_worker(chat.clone(), outbound.clone()))
                .clone();
            let shared = &worker.shared;
            let waiting = shared.waiting.load(Ordering::SeqCst);
            let busy = shared.busy.load(Ordering::SeqCst) || waiting > 0;
            if !is_cancel && busy && waiting >= MAX_QUEUED {
                Some(copy::queue_full(MAX_QUEUED))
            } else {
                shared.waiting.fetch_add(1, Ordering::SeqCst);
                match worker.jobs.try_send(shared.job(inbound, is_cancel, kept)) {
                    Ok(()) => (busy && !is_cancel && !internal).then(|| copy::queued(waiting + 1)),
                    Err(_) => {
                        // Only a run of /cancel can fill the channel; the jobs it cancelled
                        // are dropped as the worker reaches them.
                        shared.waiting.fetch_sub(1, Ordering::SeqCst);
                        Some(copy::queue_full(MAX_QUEUED))
                    }
                }
            }
        };
        if let Some(note) = note {
            self.send_later(&outbound, &chat, Outgoing::reply(note));
        }
    }

    /// Sends without waiting: admission never waits on a chat's lane (a chat held in a 429
    /// window must not hold up the others). Counted until sent, so that idleness includes it.
    fn send_later(&self, outbound: &Arc<dyn Outbound>, chat: &ChatKey, message: Outgoing) {
        let (outbound, chat) = (outbound.clone(), chat.clone());
        self.answer_later(async move {
            if let Err(e) = outbound.send(&chat, message).await {
                tracing::warn!(chat = %chat, error = %e, "could not deliver a message");
            }
        });
    }

    /// Runs an answer outside the chats' queues, counted until done so that idleness
    /// ([`Router::until_idle`]) includes it.
    fn answer_later(&self, answer: impl std::future::Future<Output = ()> + Send + 'static) {
        let router = self.clone();
        router.inner.answering.fetch_add(1, Ordering::SeqCst);
        self.inner.tasks.spawn(async move {
            answer.await;
            router.inner.answering.fetch_sub(1, Ordering::SeqCst);
            router.inner.idle.notify_waiters();
        });
    }

    /// Marks a kept event handled (its answer is out; a crash before this handles it again).
    /// Under a lease that passed to another planbot, the event is left to the new holder.
    pub(crate) async fn handled(&self, chat: &ChatKey, kept: Option<i64>) {
        let inner = &self.inner;
        if inner.shared.as_ref().is_some_and(|s| !s.holds(chat)) {
            return;
        }
        if let (Some(id), Some(inbox)) = (kept, &inner.inbox)
            && let Err(e) = inbox.done(id).await
        {
            tracing::error!(%chat, id, error = %e, "could not mark an event handled");
        }
    }

    /// `/help` and `/status`, outside the chat's queue; audited like any job.
    async fn answer_read_only(
        &self,
        command: Command,
        inbound: Inbound,
        outbound: Arc<dyn Outbound>,
    ) {
        let started = Instant::now();
        let chat = &inbound.chat;
        let entry = self.inner.store.get(chat).await.ok().flatten();
        let text = match (command, &entry) {
            (Command::Status, Some(entry)) => copy::status(entry),
            (Command::Status, None) => copy::NOTHING_PLANNED.to_string(),
            _ => help_text(),
        };
        if let Err(e) = outbound.send(chat, Outgoing::reply(text)).await {
            tracing::warn!(chat = %chat, error = %e, "could not deliver a message");
        }
        if let Some(audit) = &self.inner.audit {
            let action = command.spec().name.to_string();
            audit.append(AuditLine {
                slug: entry.as_ref().map(|e| e.slug.clone()),
                phase: entry.as_ref().map(|e| e.phase.clone()),
                ..AuditLine::new(chat, inbound.user.clone(), action, started.into_std())
            });
        }
    }

    /// Tells chats whose turn a restart cut off that their next message resumes the phase.
    /// When the state file was damaged and its backup loaded, every chat of `adapter` is told
    /// that instead: its last step may be missing.
    pub async fn announce_interrupted(&self, adapter: &str) {
        if self.inner.shared.is_some() {
            // Each chat is told by the planbot that takes it over (see `serve`).
            return;
        }
        let Some(outbound) = self.inner.outbounds.get(adapter).cloned() else {
            return;
        };
        let entries = self.inner.store.all().await.unwrap_or_default();
        let restored = self.inner.restored_from_backup.as_deref();
        let told = entries
            .into_iter()
            .map(|(_, entry)| entry)
            .filter(|e| e.adapter == adapter)
            .filter(|e| restored.is_some() || e.status == EntryStatus::Interrupted);
        for entry in told {
            let chat = ChatKey::new(entry.adapter.clone(), entry.channel_id.clone());
            let text = match restored {
                Some(taken) => copy::restored_from_backup(&entry.slug, taken),
                None => copy::interrupted_by_crash(&entry.slug, &entry.phase),
            };
            let _ = outbound.send(&chat, Outgoing::reply(text)).await;
        }
    }

    /// Stops taking work, lets running turns finish within `grace`, then cancels the rest (their
    /// plans are kept as interrupted and their chats told). Returns once every chat is idle.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let finished = tokio::time::timeout(grace, self.until_idle(None)).await;
        if finished.is_err() {
            tracing::warn!("the shutdown grace period is over; interrupting the running turns");
            for worker in self.inner.workers.locked().values() {
                worker.shared.cancel_running();
            }
            // Cancelled turns end within the runner's kill grace; bounded so it cannot hang.
            let _ = tokio::time::timeout(Duration::from_secs(10), self.until_idle(None)).await;
        }
        // The workers end once their queues close; every task is awaited (bounded: a task that
        // does not end must not hang the stop).
        self.inner.workers.locked().clear();
        self.inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some chat tasks did not end in time");
        }
        // Processes ending after their answer: bounded by the exit and kill graces.
        self.inner.planner.drain().await;
        self.flush_audit().await;
    }

    /// Chat workers and answers still running (none once [`Router::shutdown`] returns).
    pub fn tasks_left(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Returns once every audit line of what was done so far is on disk.
    pub async fn flush_audit(&self) {
        if let Some(audit) = &self.inner.audit {
            audit.flush().await;
        }
    }

    /// Returns once `chat` (or, with `None`, every chat) has nothing running, waiting or being
    /// answered. Woken by each job's end, not by a timer.
    pub async fn until_idle(&self, chat: Option<&ChatKey>) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a job ending in between is not missed.
            notified.as_mut().enable();
            let idle = match chat {
                Some(chat) => self.chat_is_idle(chat),
                None => self.all_idle(),
            };
            if idle {
                return;
            }
            notified.await;
        }
    }

    fn all_idle(&self) -> bool {
        self.inner.answering.load(Ordering::SeqCst) == 0
            && self
                .inner
                .workers
                .locked()
                .values()
                .all(|w| w.shared.is_idle())
    }

    /// Adds to what a user spent today.
    pub(crate) fn add_spend(&self, user_key: &str, usd: f64) {
        self.with_spend(|spend| *spend.entry(user_key.to_string()).or_insert(0.0) += usd);
    }

    /// What a user has spent today.
    pub(crate) fn spent_today(&self, user_key: &str) -> f64 {
        self.with_spend(|spend| spend.get(user_key).copied().unwrap_or(0.0))
    }

    /// Today's spending, starting afresh when the UTC day changes.
    fn with_spend<R>(&self, f: impl FnOnce(&mut HashMap<String, f64>) -> R) -> R {
        let today = chrono::Utc::now().date_naive();
        let mut spend = self.inner.spend.locked();
        if spend.0 != today {
            *spend = (today, HashMap::new());
        }
        f(&mut spend.1)
    }

    /// Whether `chat` has nothing running or waiting.
    pub fn chat_is_idle(&self, chat: &ChatKey) -> bool {
        self.inner.answering.load(Ordering::SeqCst) == 0
            && self
                .inner
                .workers
                .locked()
                .get(chat)
                .is_none_or(|w| w.shared.is_idle())
    }

    /// Ends `chat`'s running turn, keeping its plan (Ctrl-C in the console).
    pub fn cancel_running(&self, chat: &ChatKey) {
        if let Some(worker) = self.inner.workers.locked().get(chat) {
            worker.shared.cancel_running();
        }
    }

    fn spawn_worker(&self, chat: ChatKey, outbound: Arc<dyn Outbound>) -> Worker {
        let (tx, rx) = mpsc::channel(JOB_CHANNEL);
        let shared = Arc::new(WorkerShared {
            waiting: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            generation: Mutex::new(CancellationToken::new()),
            running: Mutex::new(None),
        });
        let worker = Worker {
            jobs: tx,
            shared: shared.clone(),
        };
        // Under a lease, a chat that passed to another planbot hears nothing more from here.
        let outbound = match &self.inner.shared {
            Some(shared) => shared::LeasedOutbound::wrap(outbound, shared.clone()),
            None => outbound,
        };
        let chat_worker = ChatWorker {
            router: self.clone(),
            chat,
            outbound,
            shared,
            last_offer: None,
            user: String::new(),
            record: None,
            generation: CancellationToken::new(),
        };
        self.inner.tasks.spawn(chat_worker.run(rx));
        worker
    }
}

mod questions;
mod shared;

pub use crate::conversation::copy::STALE;
pub(crate) use crate::conversation::copy::{JOB_PANICKED, SAVE_FAILED};

#[cfg(test)]
mod tests;
