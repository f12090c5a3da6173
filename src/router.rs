//! Chat events to actions: the one authorization check, one worker per chat, and every command's
//! behaviour in every state. Front ends translate their platform to [`Inbound`] and implement
//! [`Outbound`]; nothing here knows a platform.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{Audit, AuditLine};
pub use crate::chat::{
    Action, Attachment, ChatKey, Inbound, InboundKind, Membership, MessageKind, MessageRef, Offer,
    Outbound, Outgoing, SendError, parse_text,
};
use crate::claude::{Progress, TurnStatus};
use crate::commands::{Command, help_text};
use crate::conversation::{BREAKER_FAILURES, Decision, Limits, Op, copy, decide};
use crate::planning::workspace::WorkspaceError;
use crate::planning::{PlanError, Planner, PlanningSession, Reply, ReplyOutcome, write_final_plan};
use crate::store::{EntryStatus, SessionEntry, SessionStore};

/// Longest message planbot accepts, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;
/// Messages that may wait behind a running turn.
pub const MAX_QUEUED: usize = 5;
/// A final plan longer than this is posted as a file with a short note, not as text.
const INLINE_PLAN_CHARS: usize = 3_000;
/// A chat's worker stops after this long without work (it is started again on demand).
const WORKER_IDLE: Duration = Duration::from_secs(600);

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
    /// No turn starts for a plan that has spent this much.
    pub plan_budget_usd: Option<f64>,
    /// No turn starts for a user who has spent this much today (UTC).
    pub user_daily_budget_usd: Option<f64>,
    /// Where every action is recorded.
    pub audit: Option<Audit>,
}

/// Routes every front end's events. A cheap handle.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SessionStore>,
    planner: Planner,
    allowed: HashSet<String>,
    allowed_guilds: Vec<String>,
    allowed_roles: Vec<String>,
    progress_interval: Duration,
    plan_budget_usd: Option<f64>,
    user_daily_budget_usd: Option<f64>,
    audit: Option<Audit>,
    /// What each `adapter:user` has spent today, seeded from the audit log.
    spend: Mutex<(chrono::NaiveDate, HashMap<String, f64>)>,
    /// Set by [`Router::shutdown`]: no new work is taken.
    closing: AtomicBool,
    outbounds: HashMap<String, Arc<dyn Outbound>>,
    /// Live workers by chat. Held only to look up or insert, never across an await.
    workers: Mutex<HashMap<ChatKey, Worker>>,
    /// Strangers already refused once, so they get one refusal and no more.
    refused: Mutex<HashSet<(String, String)>>,
    /// Answers being sent outside the chats' queues (`/help`, `/status`, refusals, notes).
    answering: AtomicUsize,
}

/// The handle to a chat's worker.
#[derive(Clone)]
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<WorkerShared>,
}

/// What the router and a chat's worker both see.
struct WorkerShared {
    /// Messages waiting behind the running one.
    waiting: AtomicUsize,
    /// Whether a job is being processed.
    busy: AtomicBool,
    /// The parent of the token of every job queued since the last /cancel. /cancel cancels it
    /// (the running turn and everything queued, whenever the job stands) and starts a new one.
    generation: Mutex<CancellationToken>,
    /// The running job's token: Ctrl-C in the console and shutdown end only the turn.
    running: Mutex<Option<CancellationToken>>,
}

struct Job {
    inbound: Inbound,
    /// The job's own token, a child of its generation, made when it was queued: a /cancel at
    /// any instant after that reaches it.
    cancel: CancellationToken,
    /// The generation it was queued in; cancelled once a /cancel came after it.
    generation: CancellationToken,
}

impl WorkerShared {
    /// A job for `inbound` in the current generation; with `cancel_before`, every earlier job
    /// (running or queued) is cancelled first and a new generation starts.
    fn job(&self, inbound: Inbound, cancel_before: bool) -> Job {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cancel_before {
            generation.cancel();
            *generation = CancellationToken::new();
        }
        Job {
            inbound,
            cancel: generation.child_token(),
            generation: generation.clone(),
        }
    }

    fn cancel_running(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = running.as_ref() {
            token.cancel();
        }
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
        let spent = settings
            .audit
            .as_ref()
            .map(|a| a.spend_on(today))
            .unwrap_or_default();
        Router {
            inner: Arc::new(Inner {
                store,
                planner,
                allowed: settings.allowed_users.into_iter().collect(),
                allowed_guilds: settings.allowed_guilds,
                allowed_roles: settings.allowed_roles,
                progress_interval: settings.progress_interval,
                plan_budget_usd: settings.plan_budget_usd,
                user_daily_budget_usd: settings.user_daily_budget_usd,
                audit: settings.audit,
                spend: Mutex::new((today, spent)),
                closing: AtomicBool::new(false),
                outbounds,
                workers: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashSet::new()),
                answering: AtomicUsize::new(0),
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
        let Some(outbound) = self.inner.outbounds.get(&inbound.chat.adapter).cloned() else {
            tracing::error!(adapter = %inbound.chat.adapter, "event from an unregistered front end");
            return;
        };
        let chat = inbound.chat.clone();
        if self.inner.closing.load(Ordering::SeqCst) {
            let note = "planbot is restarting; send that again in a minute.";
            self.send_later(&outbound, &chat, Outgoing::reply(note));
            return;
        }
        if !self.authorize(&inbound) {
            // Chatter of strangers in a group is not addressed to planbot: ignored quietly.
            if !inbound.private && matches!(inbound.kind, InboundKind::Text(_)) {
                return;
            }
            let first = self
                .inner
                .refused
                .lock()
                .map(|mut r| r.insert((chat.to_string(), inbound.user.clone())))
                .unwrap_or(false);
            tracing::warn!(chat = %chat, user = %inbound.user, "refused a stranger");
            // An interaction (a button, a slash command) always needs its answer.
            if first || inbound.interaction.is_some() {
                let msg = Outgoing::answer(
                    &inbound,
                    "Sorry, you are not allowed to use this planbot. Ask its operator to add \
                     your user id to PLANBOT_ALLOWED_USERS.",
                );
                self.send_later(&outbound, &chat, msg);
            }
            return;
        }
        if let InboundKind::Text(text) | InboundKind::Command { args: text, .. } = &inbound.kind {
            let chars = text.chars().count();
            if chars > MAX_MESSAGE_CHARS {
                let msg = format!(
                    "That message is {chars} characters; the limit is {MAX_MESSAGE_CHARS}. Send it \
                     in shorter parts, or put the long text in a file in the plan's workspace."
                );
                self.send_later(&outbound, &chat, Outgoing::reply(msg));
                return;
            }
        }
        if let InboundKind::Command { name, .. } = &inbound.kind
            && let Some(command @ (Command::Help | Command::Status)) = Command::parse(name)
        {
            // Read-only: answered at once, even while a turn runs.
            self.inner.answering.fetch_add(1, Ordering::SeqCst);
            let router = self.clone();
            tokio::spawn(async move {
                router.answer_read_only(command, inbound, outbound).await;
                router.inner.answering.fetch_sub(1, Ordering::SeqCst);
            });
            return;
        }
        if let InboundKind::Button { revision, .. } = inbound.kind {
            // Answered at once, so that the front end can stop its button spinner: a press on a
            // button that is no longer current changes nothing; a current one is acknowledged
            // and queued (and checked again when its turn comes).
            let current = self
                .inner
                .store
                .get(&chat)
                .await
                .ok()
                .flatten()
                .is_some_and(|entry| entry.revision == revision);
            let note = if current { "" } else { STALE };
            // An empty acknowledgement only where there is an interaction to close.
            if inbound.interaction.is_some() || !note.is_empty() {
                self.send_later(&outbound, &chat, Outgoing::answer(&inbound, note));
            }
            if !current {
                return;
            }
        }
        let is_cancel = matches!(&inbound.kind, InboundKind::Command { name, .. } if Command::parse(name) == Some(Command::Cancel))
            || matches!(
                inbound.kind,
                InboundKind::Button {
                    action: Action::Cancel,
                    ..
                }
            );
        let refused = {
            let Ok(mut workers) = self.inner.workers.lock() else {
                return;
            };
            let worker = workers
                .entry(chat.clone())
                .or_insert_with(|| self.spawn_worker(chat.clone(), outbound.clone()))
                .clone();
            let shared = &worker.shared;
            if is_cancel {
                // Bypasses the queue: everything waiting is dropped and the running turn ends.
                shared.waiting.fetch_add(1, Ordering::SeqCst);
                let _ = worker.jobs.send(shared.job(inbound, true));
                None
            } else {
                let busy =
                    shared.busy.load(Ordering::SeqCst) || shared.waiting.load(Ordering::SeqCst) > 0;
                let waiting = shared.waiting.load(Ordering::SeqCst);
                if busy && waiting >= MAX_QUEUED {
                    Some(format!(
                        "{MAX_QUEUED} messages are already waiting for the current turn; this one \
                         was not taken. Send it again once the reply arrives."
                    ))
                } else {
                    shared.waiting.fetch_add(1, Ordering::SeqCst);
                    let _ = worker.jobs.send(shared.job(inbound, false));
                    busy.then(|| {
                        format!(
                            "Queued: I'll answer after the current turn ({} waiting).",
                            waiting + 1
                        )
                    })
                }
            }
        };
        if let Some(note) = refused {
            self.send_later(&outbound, &chat, Outgoing::reply(note));
        }
    }

    /// Sends without waiting: admission never waits on a chat's lane (a chat held in a 429
    /// window must not hold up the others). Counted until sent, so that idleness includes it.
    fn send_later(&self, outbound: &Arc<dyn Outbound>, chat: &ChatKey, message: Outgoing) {
        let (outbound, chat) = (outbound.clone(), chat.clone());
        let router = self.clone();
        router.inner.answering.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = outbound.send(&chat, message).await {
                tracing::warn!(chat = %chat, error = %e, "could not deliver a message");
            }
            router.inner.answering.fetch_sub(1, Ordering::SeqCst);
        });
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
            audit
                .append(AuditLine {
                    time: chrono::Utc::now(),
                    adapter: chat.adapter.clone(),
                    chat: chat.channel.clone(),
                    user: inbound.user.clone(),
                    action: command.spec().name.to_string(),
                    slug: entry.as_ref().map(|e| e.slug.clone()),
                    phase: entry.as_ref().map(|e| e.phase.clone()),
                    outcome: "ok".into(),
                    cost_usd: 0.0,
                    duration_ms: started.elapsed().as_millis() as u64,
                })
                .await;
        }
    }

    /// Tells chats whose turn a restart cut off that their next message resumes the phase.
    pub async fn announce_interrupted(&self, adapter: &str) {
        let Some(outbound) = self.inner.outbounds.get(adapter).cloned() else {
            return;
        };
        let entries = self.inner.store.all().await.unwrap_or_default();
        let interrupted = entries
            .into_iter()
            .map(|(_, entry)| entry)
            .filter(|e| e.status == EntryStatus::Interrupted && e.adapter == adapter);
        for entry in interrupted {
            let chat = ChatKey::new(entry.adapter.clone(), entry.channel_id.clone());
            let text = format!(
                "planbot restarted while a turn of `{}` ({}) was running. Your plan is saved: send \
                 a message to continue this phase.",
                entry.slug, entry.phase
            );
            let _ = outbound.send(&chat, Outgoing::reply(text)).await;
        }
    }

    /// Stops taking work, lets running turns finish within `grace`, then cancels the rest (their
    /// plans are kept as interrupted and their chats told). Returns once every chat is idle.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while !self.all_idle() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.all_idle() {
            return;
        }
        tracing::warn!("the shutdown grace period is over; interrupting the running turns");
        if let Ok(workers) = self.inner.workers.lock() {
            for worker in workers.values() {
                worker.shared.cancel_running();
            }
        }
        // Cancelled turns end within the runner's kill grace; bounded so shutdown cannot hang.
        let hard_deadline = Instant::now() + Duration::from_secs(10);
        while !self.all_idle() && Instant::now() < hard_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn all_idle(&self) -> bool {
        self.inner.answering.load(Ordering::SeqCst) == 0
            && self.inner.workers.lock().is_ok_and(|workers| {
                workers.values().all(|w| {
                    !w.shared.busy.load(Ordering::SeqCst)
                        && w.shared.waiting.load(Ordering::SeqCst) == 0
                })
            })
    }

    /// Adds to what a user spent today.
    fn add_spend(&self, user_key: &str, usd: f64) {
        self.with_spend(|spend| *spend.entry(user_key.to_string()).or_insert(0.0) += usd);
    }

    /// What a user has spent today.
    fn spent_today(&self, user_key: &str) -> f64 {
        self.with_spend(|spend| spend.get(user_key).copied().unwrap_or(0.0))
    }

    /// Today's spending, starting afresh when the UTC day changes.
    fn with_spend<R>(&self, f: impl FnOnce(&mut HashMap<String, f64>) -> R) -> R {
        let today = chrono::Utc::now().date_naive();
        let mut fresh = HashMap::new();
        let Ok(mut spend) = self.inner.spend.lock() else {
            return f(&mut fresh);
        };
        if spend.0 != today {
            *spend = (today, HashMap::new());
        }
        f(&mut spend.1)
    }

    /// Whether `chat` has nothing running or waiting.
    pub fn chat_is_idle(&self, chat: &ChatKey) -> bool {
        self.inner.answering.load(Ordering::SeqCst) == 0
            && self.inner.workers.lock().is_ok_and(|workers| {
                workers.get(chat).is_none_or(|w| {
                    !w.shared.busy.load(Ordering::SeqCst)
                        && w.shared.waiting.load(Ordering::SeqCst) == 0
                })
            })
    }

    /// Ends `chat`'s running turn, keeping its plan (Ctrl-C in the console).
    pub fn cancel_running(&self, chat: &ChatKey) {
        if let Ok(workers) = self.inner.workers.lock()
            && let Some(worker) = workers.get(chat)
        {
            worker.shared.cancel_running();
        }
    }

    fn spawn_worker(&self, chat: ChatKey, outbound: Arc<dyn Outbound>) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
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
        tokio::spawn(chat_worker.run(rx));
        worker
    }
}

/// One chat's worker: takes its jobs in order.
struct ChatWorker {
    router: Router,
    chat: ChatKey,
    outbound: Arc<dyn Outbound>,
    shared: Arc<WorkerShared>,
    /// The last message with buttons, withdrawn when it stops being current.
    last_offer: Option<MessageRef>,
    /// The user of the job in hand (for budgets).
    user: String,
    /// What the job in hand did, for its audit line: outcome, cost, slug, phase.
    record: Option<(String, f64, String, String)>,
    /// The generation of the job in hand: cancelled when a /cancel came after it.
    generation: CancellationToken,
}

impl ChatWorker {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        loop {
            let job = match tokio::time::timeout(WORKER_IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    // Retire if still idle; sends happen under the same lock, so none is lost.
                    let Ok(mut workers) = self.router.inner.workers.lock() else {
                        return;
                    };
                    if jobs.is_empty() {
                        workers.remove(&self.chat);
                        return;
                    }
                    continue;
                }
            };
            // Busy before no longer waiting, so the chat never looks idle in between.
            self.shared.busy.store(true, Ordering::SeqCst);
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            if job.generation.is_cancelled() {
                // A /cancel came after this was queued.
                self.shared.busy.store(false, Ordering::SeqCst);
                continue;
            }
            self.set_running(Some(job.cancel.clone()));
            self.generation = job.generation.clone();
            let cancel = job.cancel.clone();
            let span = tracing::info_span!("chat", chat = %self.chat, user = %job.inbound.user);
            // A job that panics fails with a message; the chat goes on with its next one.
            let processed = AssertUnwindSafe(self.process(job, &cancel).instrument(span))
                .catch_unwind()
                .await;
            if let Err(panic) = processed {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(chat = %self.chat, panic = %what, "a job panicked; the chat goes on");
                self.say(JOB_PANICKED).await;
            }
            self.set_running(None);
            self.shared.busy.store(false, Ordering::SeqCst);
        }
    }

    fn set_running(&self, token: Option<CancellationToken>) {
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = token;
    }

    fn store(&self) -> &dyn SessionStore {
        self.router.inner.store.as_ref()
    }

    fn planner(&self) -> &Planner {
        &self.router.inner.planner
    }

    async fn say(&self, text: impl Into<String>) {
        if let Err(e) = self.outbound.send(&self.chat, Outgoing::reply(text)).await {
            tracing::warn!(chat = %self.chat, error = %e, "could not deliver a message");
        }
    }

    async fn ephemeral(&self, inbound: &Inbound, text: &str) {
        let _ = self
            .outbound
            .send(&self.chat, Outgoing::answer(inbound, text))
            .await;
    }

    async fn load(&self) -> Result<Option<SessionEntry>, ()> {
        match self.store().get(&self.chat).await {
            Ok(entry) => Ok(entry),
            Err(e) => {
                tracing::error!(error = %e, "reading the store failed");
                self.say("planbot could not read its state; try again in a moment.")
                    .await;
                Err(())
            }
        }
    }

    /// Handles one job and records it in the audit log.
    async fn process(&mut self, job: Job, cancel: &CancellationToken) {
        let started = Instant::now();
        let inbound = job.inbound;
        let action = match &inbound.kind {
            InboundKind::Command { name, .. } => name.clone(),
            InboundKind::Text(_) => "message".into(),
            InboundKind::Button { action, .. } => format!("button:{}", action.code()),
        };
        self.user = inbound.user.clone();
        self.record = None;
        let entry = self.dispatch(inbound.clone(), cancel).await;
        let Some(audit) = self.router.inner.audit.clone() else {
            return;
        };
        let (outcome, cost, slug, phase) = match self.record.take() {
            Some((outcome, cost, slug, phase)) => (outcome, cost, Some(slug), Some(phase)),
            None => (
                "ok".to_string(),
                0.0,
                entry.as_ref().map(|e| e.slug.clone()),
                entry.as_ref().map(|e| e.phase.clone()),
            ),
        };
        audit
            .append(AuditLine {
                time: chrono::Utc::now(),
                adapter: self.chat.adapter.clone(),
                chat: self.chat.channel.clone(),
                user: inbound.user,
                action,
                slug,
                phase,
                outcome,
                cost_usd: cost,
                duration_ms: started.elapsed().as_millis() as u64,
            })
            .await;
    }

    /// Does what a job asks. Returns the chat's entry as it was when the job started.
    async fn dispatch(
        &mut self,
        inbound: Inbound,
        cancel: &CancellationToken,
    ) -> Option<SessionEntry> {
        let Ok(entry) = self.load().await else {
            return None;
        };
        let seen = entry.clone();
        self.route(inbound, entry, cancel).await;
        seen
    }

    /// Carries out what [`decide`] makes of this job.
    async fn route(
        &mut self,
        inbound: Inbound,
        entry: Option<SessionEntry>,
        cancel: &CancellationToken,
    ) {
        let decision = decide(
            entry.as_ref(),
            inbound.private,
            &inbound.kind,
            &self.limits(),
        );
        let Some(entry) = entry else {
            match decision {
                Decision::Reply(text) => self.say(text).await,
                Decision::Stale => self.ephemeral(&inbound, STALE).await,
                Decision::Start { slug, idea } => self.plan(&inbound, slug, idea, cancel).await,
                Decision::Refuse { text, .. } => self.say(text).await,
                // Every other decision needs a plan, and decide gives none without one.
                _ => {}
            }
            return;
        };
        match decision {
            Decision::Reply(text) => self.say(text).await,
            Decision::Stale => self.ephemeral(&inbound, STALE).await,
            Decision::Ignore | Decision::Start { .. } => {}
            Decision::Turn(op) => self.run_turn(entry, op, cancel).await,
            Decision::Refuse { text, offer_resume } => {
                self.record = Some((
                    "refused".into(),
                    0.0,
                    entry.slug.clone(),
                    entry.phase.clone(),
                ));
                let mut message = Outgoing::reply(text);
                if offer_resume {
                    message.actions = vec![Offer {
                        label: "Resume".into(),
                        action: Action::Resume,
                        revision: entry.revision,
                    }];
                }
                self.offer(message).await;
            }
            Decision::AskFinalize => {
                let offers = vec![
                    Offer {
                        label: "Finalize".into(),
                        action: Action::Finalize,
                        revision: entry.revision,
                    },
                    Offer {
                        label: "Cancel".into(),
                        action: Action::Cancel,
                        revision: entry.revision,
                    },
                ];
                let text = format!("`{}` is the last phase. Finalize the plan?", entry.phase);
                self.offer(Outgoing::reply(text).with_actions(offers)).await;
            }
            Decision::Cancel => match self.store().remove(&self.chat).await {
                Ok(_) => {
                    self.withdraw_offer().await;
                    self.say(format!(
                        "Cancelled planning `{}`. Its workspace and notes stay in place.",
                        entry.slug
                    ))
                    .await
                }
                Err(e) => {
                    tracing::error!(error = %e, "cancel could not be saved");
                    self.say(SAVE_FAILED).await
                }
            },
            Decision::Resume => {
                let mut entry = entry;
                entry.paused = false;
                entry.failures = 0;
                entry.revision += 1;
                match self.store().put(&self.chat, entry).await {
                    Ok(()) => {
                        self.say("Resumed. Send your message again to continue this phase.")
                            .await
                    }
                    Err(_) => self.say(SAVE_FAILED).await,
                }
            }
        }
    }

    /// The spending limits for the job in hand.
    fn limits(&self) -> Limits {
        let inner = &self.router.inner;
        Limits {
            plan_budget_usd: inner.plan_budget_usd,
            user_daily_budget_usd: inner.user_daily_budget_usd,
            user_spent_today: self
                .router
                .spent_today(&format!("{}:{}", self.chat.adapter, self.user)),
        }
    }

    /// Creates the plan `slug` (claiming the slug, writing its workspace) and runs its first turn.
    async fn plan(
        &mut self,
        inbound: &Inbound,
        slug: String,
        idea: String,
        cancel: &CancellationToken,
    ) {
        // File work, off the async threads.
        let (planner, chat, slug_owned) =
            (self.planner().clone(), inbound.chat.clone(), slug.clone());
        let created = tokio::task::spawn_blocking(move || {
            planner.new_plan(&chat.adapter, &chat.channel, &slug_owned, &idea)
        })
        .await;
        let entry = match created.unwrap_or_else(|e| Err(PlanError::Internal(e.to_string()))) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(error = %e, "could not create a plan");
                self.say(plan_error_text(&e)).await;
                return;
            }
        };
        let first = entry.phase.clone();
        self.say(format!(
            "Planning `{slug}`: {} phases, starting with /{first}.",
            entry.phases.len()
        ))
        .await;
        self.run_turn(entry, Op::Start, cancel).await;
    }

    /// Sends a message with buttons, withdrawing the previous one's.
    async fn offer(&mut self, message: Outgoing) {
        self.withdraw_offer().await;
        match self.outbound.send(&self.chat, message).await {
            Ok(id) => self.last_offer = Some(id),
            Err(e) => tracing::warn!(chat = %self.chat, error = %e, "could not deliver a reply"),
        }
    }

    async fn withdraw_offer(&mut self) {
        if let Some(id) = self.last_offer.take() {
            let _ = self.outbound.withdraw_actions(&self.chat, &id).await;
        }
    }

    /// Runs one planning step as a turn: marks it running, shows progress, saves and replies.
    async fn run_turn(&mut self, mut entry: SessionEntry, op: Op, cancel: &CancellationToken) {
        let key = self.chat.clone();
        let cost_before = entry.total_cost_usd;
        entry.status = EntryStatus::Running;
        if let Err(e) = self.store().put(&key, entry.clone()).await {
            tracing::error!(error = %e, "could not save before a turn");
            self.say(SAVE_FAILED).await;
            return;
        }
        self.withdraw_offer().await;
        let label = match &op {
            Op::Advance => entry.next_phase().unwrap_or(&entry.phase).to_string(),
            _ => entry.phase.clone(),
        };
        let working = match op {
            Op::Finalize => format!("⏳ Writing the final plan for `{}`…", entry.slug),
            _ => format!("⏳ Working on /{label}…"),
        };
        let progress_ref = self
            .outbound
            .send(
                &self.chat,
                Outgoing {
                    kind: MessageKind::Progress,
                    ..Outgoing::reply(working.clone())
                },
            )
            .await
            .ok();

        let (events, mut events_rx) = mpsc::unbounded_channel();
        let mut on_progress = move |p: Progress| {
            let _ = events.send(p);
        };
        let label_slug = entry.slug.clone();
        let mut session = PlanningSession::new(self.planner().clone(), entry);
        let step = async {
            match &op {
                Op::Start => Ok(session.start_phase(cancel, &mut on_progress).await),
                Op::Respond(text) => Ok(session.respond(text, cancel, &mut on_progress).await),
                Op::Advance => session.advance(cancel, &mut on_progress).await,
                Op::Finalize => session.finalize(cancel, &mut on_progress).await,
            }
        };
        let span = tracing::info_span!("turn", slug = %label_slug, phase = %label);
        let result = tokio::select! {
            result = step.instrument(span) => result,
            _ = self.show_progress(&mut events_rx, progress_ref.as_ref(), &working) => unreachable!(),
        };
        let mut entry = session.into_state();
        entry.status = EntryStatus::Planning;
        entry.revision += 1;
        entry.updated_at = chrono::Utc::now();
        let cost = entry.total_cost_usd - cost_before;
        self.router
            .add_spend(&format!("{}:{}", self.chat.adapter, self.user), cost);
        let outcome = match &result {
            Ok(reply) => match &reply.outcome {
                ReplyOutcome::Answered(_) if matches!(op, Op::Finalize) => "finalized".to_string(),
                ReplyOutcome::Answered(_) => "answered".to_string(),
                ReplyOutcome::Failed(status) => status.describe(),
                ReplyOutcome::Cancelled => "cancelled".to_string(),
            },
            Err(e) => e.to_string(),
        };
        self.record = Some((outcome, cost, entry.slug.clone(), entry.phase.clone()));
        let interrupted = self.router.inner.closing.load(Ordering::SeqCst)
            && matches!(&result, Ok(reply) if reply.outcome == ReplyOutcome::Cancelled);
        if interrupted {
            // Shutdown cut this turn off: the plan waits, and the chat hears it on return too.
            entry.status = EntryStatus::Interrupted;
            let saved = self.store().put(&key, entry).await;
            let text = match saved {
                Ok(()) => copy::INTERRUPTED_BY_RESTART,
                Err(_) => SAVE_FAILED,
            };
            self.deliver(progress_ref, Outgoing::reply(text)).await;
            return;
        }
        let failed =
            matches!(&result, Ok(reply) if matches!(reply.outcome, ReplyOutcome::Failed(_)));
        entry.failures = if failed { entry.failures + 1 } else { 0 };
        if entry.failures >= BREAKER_FAILURES {
            entry.paused = true;
        }

        if self.generation.is_cancelled() {
            // /cancel came while this ran; it removes the entry next. Nothing to save or say.
            if let Some(id) = &progress_ref {
                let _ = self
                    .outbound
                    .edit(&self.chat, id, Outgoing::reply("Cancelled."))
                    .await;
            }
            return;
        }
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => Reply {
                text: plan_error_text(&e),
                outcome: ReplyOutcome::Failed(TurnStatus::Cancelled),
                notices: Vec::new(),
            },
        };
        if matches!(op, Op::Finalize) && reply.is_answered() {
            self.finish_plan(entry, reply, progress_ref).await;
            return;
        }
        if let Err(e) = self.store().put(&key, entry.clone()).await {
            tracing::error!(error = %e, "could not save after a turn");
            self.deliver(
                progress_ref,
                Outgoing::reply(format!("{}\n\n{SAVE_FAILED}", reply.text)),
            )
            .await;
            return;
        }
        let mut text = String::new();
        for notice in &reply.notices {
            text.push_str(&format!("_{notice}_\n\n"));
        }
        text.push_str(if reply.text.trim().is_empty() {
            "(Claude sent an empty reply.)"
        } else {
            &reply.text
        });
        let mut offers = phase_offers(&entry, &reply);
        if entry.paused {
            text.push_str(&format!("\n\n⏸ {}", copy::paused_now()));
            offers = vec![Offer {
                label: "Resume".into(),
                action: Action::Resume,
                revision: entry.revision,
            }];
        }
        let message = Outgoing::reply(text).with_actions(offers);
        self.deliver(progress_ref, message).await;
    }

    /// Replaces the progress message with `message`, or sends it if there is none.
    async fn deliver(&mut self, progress: Option<MessageRef>, message: Outgoing) {
        let has_actions = !message.actions.is_empty();
        match progress {
            Some(id) => match self.outbound.edit(&self.chat, &id, message.clone()).await {
                Ok(()) => {
                    if has_actions {
                        self.last_offer = Some(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not edit the progress message; sending anew");
                    self.offer(message).await;
                }
            },
            None => self.offer(message).await,
        }
    }

    async fn finish_plan(
        &mut self,
        entry: SessionEntry,
        reply: Reply,
        progress: Option<MessageRef>,
    ) {
        let key = self.chat.clone();
        let (state, plan) = (entry.clone(), reply.text.clone());
        let written = tokio::task::spawn_blocking(move || write_final_plan(&state, &plan))
            .await
            .unwrap_or_else(|e| {
                Err(WorkspaceError::Io {
                    path: "final-plan.md".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let path = match written {
            Ok(path) => path,
            Err(e) => {
                tracing::error!(error = %e, "could not write the final plan");
                let _ = self.store().put(&key, entry).await;
                self.deliver(
                    progress,
                    Outgoing::reply(format!(
                        "The plan was written, but saving final-plan.md failed ({e}). Your plan \
                         is still open: try /finalize again."
                    )),
                )
                .await;
                return;
            }
        };
        if let Err(e) = self.store().remove(&key).await {
            tracing::error!(error = %e, "could not close the plan in the store");
        }
        let mut text = format!(
            "✅ Plan `{}` finalized after {} turns (${:.2}). Saved to {}.",
            entry.slug,
            entry.turns,
            entry.total_cost_usd,
            path.display()
        );
        if reply.text.chars().count() <= INLINE_PLAN_CHARS {
            text.push_str("\n\n");
            text.push_str(&reply.text);
        }
        let mut message = Outgoing::reply(text);
        message.attachment = Some(Attachment {
            name: "final-plan.md".into(),
            bytes: format!("{}\n", reply.text.trim()).into_bytes(),
        });
        self.deliver(progress, message).await;
    }

    /// Shows a running turn: streams text to front ends that want it and edits the progress
    /// message at most once per interval, only when what it shows changed. Never returns.
    async fn show_progress(
        &self,
        events: &mut mpsc::UnboundedReceiver<Progress>,
        progress: Option<&MessageRef>,
        working: &str,
    ) {
        let started = Instant::now();
        let every = self.router.inner.progress_interval;
        // The progress message was just sent: the first update may come one interval later, at
        // the next tick or as soon as text arrives after that, whichever is first.
        let mut tick = tokio::time::interval_at(started + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_update = started;
        self.outbound.typing(&self.chat).await;
        let mut text = String::new();
        let mut shown = working.to_string();
        let mut queued = false;
        let mut open = true;
        loop {
            let due = tokio::select! {
                event = events.recv(), if open => match event {
                    Some(Progress::Text(delta)) => {
                        self.outbound.stream_text(&self.chat, &delta).await;
                        let first = text.is_empty();
                        text.push_str(&delta);
                        first && last_update.elapsed() >= every
                    }
                    Some(Progress::Queued) => { queued = true; false }
                    Some(Progress::Started) => { queued = false; false }
                    Some(Progress::Tool(_)) => false,
                    None => { open = false; false }
                },
                _ = tick.tick() => {
                    self.outbound.typing(&self.chat).await;
                    true
                }
            };
            let Some(id) = progress.filter(|_| due) else {
                continue;
            };
            let view = progress_view(working, started.elapsed(), &text, queued);
            if view != shown {
                let message = Outgoing {
                    kind: MessageKind::Progress,
                    ..Outgoing::reply(view.clone())
                };
                if self.outbound.edit(&self.chat, id, message).await.is_ok() {
                    shown = view;
                }
                last_update = Instant::now();
                tick.reset();
            }
        }
    }
}

/// The answer to a press on a button whose moment has passed.
pub const STALE: &str = "This is no longer current.";

/// The answer to a job that failed inside planbot.
const JOB_PANICKED: &str = "Something went wrong inside planbot while handling that, so it was \
dropped. Your plan is as it was: send it again, or /status.";

const SAVE_FAILED: &str =
    "⚠️ planbot could not save, so your last step is not recorded. Try again in a moment.";

/// The progress message: elapsed time and the tail of the text so far.
fn progress_view(working: &str, elapsed: Duration, text: &str, queued: bool) -> String {
    let secs = elapsed.as_secs();
    let mut view = if queued {
        format!("{working} waiting for a free slot ({secs}s)")
    } else {
        format!("{working} {secs}s")
    };
    let tail: Vec<char> = text.chars().rev().take(300).collect();
    if !tail.is_empty() {
        let tail: String = tail.into_iter().rev().collect();
        view.push_str("\n\n…");
        view.push_str(tail.trim_start());
    }
    view
}

fn phase_offers(entry: &SessionEntry, reply: &Reply) -> Vec<Offer> {
    let revision = entry.revision;
    if !reply.is_answered() {
        // After a failed or cancelled turn the user retries by writing; only leaving is offered.
        return vec![Offer {
            label: "Cancel".into(),
            action: Action::Cancel,
            revision,
        }];
    }
    let mut offers = Vec::new();
    match entry.next_phase() {
        Some(next) => {
            let optional = if entry.is_optional(next) {
                " (optional)"
            } else {
                ""
            };
            offers.push(Offer {
                label: format!("Continue to /{next}{optional}"),
                action: Action::Advance,
                revision,
            });
            offers.push(Offer {
                label: "Finalize".into(),
                action: Action::Finalize,
                revision,
            });
        }
        None => offers.push(Offer {
            label: "Finalize".into(),
            action: Action::Finalize,
            revision,
        }),
    }
    offers.push(Offer {
        label: "Cancel".into(),
        action: Action::Cancel,
        revision,
    });
    offers
}

fn plan_error_text(e: &PlanError) -> String {
    match e {
        PlanError::Workspace { .. } => format!("planbot could not prepare the workspace: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_with_bot_suffixes() {
        assert_eq!(
            parse_text("/plan@PlanBot todo-app  a list "),
            InboundKind::Command {
                name: "plan".into(),
                args: "todo-app  a list".into()
            }
        );
        assert_eq!(
            parse_text("/Status"),
            InboundKind::Command {
                name: "status".into(),
                args: String::new()
            }
        );
        assert_eq!(parse_text("hello /x"), InboundKind::Text("hello /x".into()));
        assert_eq!(parse_text("/"), InboundKind::Text("/".into()));
    }

    #[test]
    fn payloads_round_trip_within_limits() {
        let offer = Offer {
            label: "x".into(),
            action: Action::Finalize,
            revision: u64::MAX,
        };
        assert!(offer.payload().len() <= 64);
        assert_eq!(
            Offer::parse_payload(&offer.payload()),
            Some((Action::Finalize, u64::MAX))
        );
        assert_eq!(Offer::parse_payload("zzz:1"), None);
        assert_eq!(Offer::parse_payload("adv:x"), None);
    }

    #[test]
    fn progress_shows_time_and_tail() {
        let view = progress_view("⏳ Working", Duration::from_secs(12), "abc", false);
        assert_eq!(view, "⏳ Working 12s\n\n…abc");
        let view = progress_view("⏳ Working", Duration::from_secs(1), "", true);
        assert_eq!(view, "⏳ Working waiting for a free slot (1s)");
    }
}
