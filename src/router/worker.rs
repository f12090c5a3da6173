//! One chat's worker: its queue of jobs, taken in order; a job that panics is answered and the
//! chat goes on; /cancel reaches every job queued before it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JOB_PANICKED, Router, WORKER_IDLE};
use crate::audit::AuditLine;
use crate::chat::{ChatKey, Inbound, InboundKind, MessageRef, Outbound, Outgoing};
use crate::planning::Planner;
use crate::planning::state::SessionEntry;
use crate::store::SessionStore;
use crate::sync::Locked;

/// The handle to a chat's worker.
#[derive(Clone)]
pub(crate) struct Worker {
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) shared: Arc<WorkerShared>,
}

/// What the router and a chat's worker both see.
pub(crate) struct WorkerShared {
    /// Messages waiting behind the running one.
    pub(crate) waiting: AtomicUsize,
    /// Whether a job is being processed.
    pub(crate) busy: AtomicBool,
    /// The parent of the token of every job queued since the last /cancel. /cancel cancels it
    /// (the running turn and everything queued, whenever the job stands) and starts a new one.
    pub(crate) generation: Mutex<CancellationToken>,
    /// The running job's token: Ctrl-C in the console and shutdown end only the turn.
    pub(crate) running: Mutex<Option<CancellationToken>>,
}

pub(crate) struct Job {
    pub(crate) inbound: Inbound,
    /// The job's own token, a child of its generation, made when it was queued: a /cancel at
    /// any instant after that reaches it.
    pub(crate) cancel: CancellationToken,
    /// The generation it was queued in; cancelled once a /cancel came after it.
    pub(crate) generation: CancellationToken,
    /// Its number in the inbox, marked handled once the job is done.
    pub(crate) kept: Option<i64>,
}

impl WorkerShared {
    /// Nothing running and nothing waiting.
    pub(crate) fn is_idle(&self) -> bool {
        !self.busy.load(Ordering::SeqCst) && self.waiting.load(Ordering::SeqCst) == 0
    }

    /// A job for `inbound` in the current generation; with `cancel_before`, every earlier job
    /// (running or queued) is cancelled first and a new generation starts.
    pub(crate) fn job(&self, inbound: Inbound, cancel_before: bool, kept: Option<i64>) -> Job {
        let mut generation = self.generation.locked();
        if cancel_before {
            generation.cancel();
            *generation = CancellationToken::new();
        }
        Job {
            inbound,
            cancel: generation.child_token(),
            generation: generation.clone(),
            kept,
        }
    }

    pub(crate) fn cancel_running(&self) {
        let running = self.running.locked();
        if let Some(token) = running.as_ref() {
            token.cancel();
        }
    }
}

/// One chat's worker: takes its jobs in order.
pub(crate) struct ChatWorker {
    pub(crate) router: Router,
    pub(crate) chat: ChatKey,
    pub(crate) outbound: Arc<dyn Outbound>,
    pub(crate) shared: Arc<WorkerShared>,
    /// The last message with buttons, withdrawn when it stops being current.
    pub(crate) last_offer: Option<MessageRef>,
    /// The user of the job in hand (for budgets).
    pub(crate) user: String,
    /// What the job in hand did, for its audit line: outcome, cost, slug, phase.
    pub(crate) record: Option<(String, f64, String, String)>,
    /// The generation of the job in hand: cancelled when a /cancel came after it.
    pub(crate) generation: CancellationToken,
}

impl ChatWorker {
    pub(crate) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match tokio::time::timeout(WORKER_IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    // Retire if still idle; sends happen under the same lock, so none is lost.
                    let mut workers = self.router.inner.workers.locked();
                    if jobs.is_empty() {
                        workers.remove(&self.chat);
                        drop(workers);
                        self.router.retired(&self.chat);
                        return;
                    }
                    continue;
                }
            };
            // Busy before no longer waiting, so the chat never looks idle in between.
            self.shared.busy.store(true, Ordering::SeqCst);
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            let kept = job.kept;
            if job.generation.is_cancelled() {
                // A /cancel came after this was queued.
                self.handled(kept).await;
                self.shared.busy.store(false, Ordering::SeqCst);
                self.router.inner.idle.notify_waiters();
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
            self.handled(kept).await;
            self.set_running(None);
            self.shared.busy.store(false, Ordering::SeqCst);
            self.router.inner.idle.notify_waiters();
            self.router.inner.room.notify_one();
        }
    }

    /// See [`Router::handled`].
    async fn handled(&self, kept: Option<i64>) {
        self.router.handled(&self.chat, kept).await;
    }

    pub(crate) fn set_running(&self, token: Option<CancellationToken>) {
        *self.shared.running.locked() = token;
    }

    pub(crate) fn store(&self) -> &dyn SessionStore {
        self.router.inner.store.as_ref()
    }

    pub(crate) fn planner(&self) -> &Planner {
        &self.router.inner.planner
    }

    pub(crate) async fn say(&self, text: impl Into<String>) {
        if let Err(e) = self.outbound.send(&self.chat, Outgoing::reply(text)).await {
            tracing::warn!(chat = %self.chat, error = %e, "could not deliver a message");
        }
    }

    pub(crate) async fn ephemeral(&self, inbound: &Inbound, text: &str) {
        let _ = self
            .outbound
            .send(&self.chat, Outgoing::answer(inbound, text))
            .await;
    }

    pub(crate) async fn load(&self) -> Result<Option<SessionEntry>, ()> {
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
    pub(crate) async fn process(&mut self, job: Job, cancel: &CancellationToken) {
        let started = Instant::now();
        let inbound = job.inbound;
        let action = match &inbound.kind {
            InboundKind::Command { name, .. } => name.clone(),
            InboundKind::Text(_) => "message".into(),
            InboundKind::Files { files, .. } => format!("files:{}", files.len()),
            InboundKind::QuestionExpired { .. } => "question-expired".into(),
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
        audit.append(AuditLine {
            slug,
            phase,
            outcome,
            cost_usd: cost,
            ..AuditLine::new(&self.chat, inbound.user, action, started.into_std())
        });
    }

    /// Does what a job asks. Returns the chat's entry as it was when the job started.
    pub(crate) async fn dispatch(
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
}
