//! Several planbots on one database: a chat is served only by the planbot holding its lease.
//! Every admitted event is kept in the inbox first; the holder takes the chat's events from
//! there in order, woken by the database when another planbot kept one (with a sweep as a
//! backstop, which also takes over the chats of a planbot that died once its lease runs out).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::Router;
use crate::chat::{ChatKey, FetchError, FileRef, MessageRef, Outbound, Outgoing, SendError};
use crate::conversation::copy;
use crate::planning::state::EntryStatus;
use crate::store::Shared;
use crate::sync::Locked;

/// How often the chats with waiting events are looked at, whatever woke this planbot.
const SWEEP: Duration = Duration::from_secs(2);

impl Router {
    /// Takes the chat's waiting events if this planbot holds its lease or can take it; leaves
    /// them to the holder otherwise.
    pub(crate) async fn serve(&self, chat: &ChatKey) {
        let Some(shared) = self.inner.shared.clone() else {
            return;
        };
        let Some(outbound) = self.inner.outbounds.get(&chat.adapter).cloned() else {
            return;
        };
        // The store knows what is held (a refused write tells it at once); the router keeps
        // only the last event it took under the lease.
        let held = shared.holds(chat);
        if !held && self.inner.leased.locked().contains_key(chat) {
            self.lost(chat);
        }
        if !held && self.saturated() {
            // Every run here is taken: the chat is left to a planbot with room (all of them
            // were woken), or to this one's sweep once it has room.
            return;
        }
        if !held && !self.take(shared.as_ref(), chat).await {
            return;
        }
        let after = self.inner.leased.locked().get(chat).copied().unwrap_or(0);
        let events = match shared.pull(chat, after).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(%chat, error = %e, "could not read a chat's events");
                return;
            }
        };
        for (id, inbound) in events {
            // Two wake-ups may read the same events: each is queued once, in order.
            let fresh = match self.inner.leased.locked().get_mut(chat) {
                Some(last) if *last < id => {
                    *last = id;
                    true
                }
                _ => false,
            };
            if fresh {
                self.enqueue(inbound, outbound.clone(), Some(id));
            }
        }
    }

    /// Takes the chat's lease (another planbot has it: `false`); a turn cut off by a planbot
    /// that died is taken over.
    async fn take(&self, shared: &dyn Shared, chat: &ChatKey) -> bool {
        match shared.acquire(chat).await {
            Ok(Some(taken)) => {
                // A renewal by a wake-up racing this one keeps the last event taken (a lost
                // chat's entry is gone already).
                self.inner.leased.locked().entry(chat.clone()).or_insert(0);
                tracing::info!(%chat, epoch = taken.epoch, from_another = taken.from_another, "took a chat's lease");
                if taken.from_another {
                    self.take_over(chat).await;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%chat, error = %e, "could not take a chat's lease");
                false
            }
        }
    }

    /// Whether planbot's own job for `chat` (a question that expired) is this planbot's to run:
    /// always alone; with replicas, when it holds the chat or can take it, so that one replica
    /// runs it.
    pub(crate) async fn runs_own_job(&self, chat: &ChatKey) -> bool {
        match self.inner.shared.clone() {
            None => true,
            Some(shared) => shared.holds(chat) || self.take(shared.as_ref(), chat).await,
        }
    }

    /// Whether this planbot has as many chats at work as it may run turns at once.
    fn saturated(&self) -> bool {
        let busy = self
            .inner
            .workers
            .locked()
            .values()
            .filter(|w| !w.shared.is_idle())
            .count();
        busy >= self.inner.planner.capacity()
    }

    /// The chat was another planbot's, which stopped renewing its lease: a turn it was running
    /// is cut off. The plan is marked interrupted and the chat told; the event that started the
    /// turn is still waiting, so it is handled again.
    async fn take_over(&self, chat: &ChatKey) {
        let store = &self.inner.store;
        let Ok(Some(mut entry)) = store.get(chat).await else {
            return;
        };
        if entry.status != EntryStatus::Running {
            return;
        }
        entry.status = EntryStatus::Interrupted;
        let text = copy::taken_over(&entry.slug, &entry.phase);
        if let Err(e) = store.put(chat, entry).await {
            tracing::warn!(%chat, error = %e, "could not mark a taken-over turn interrupted");
            return;
        }
        if let Some(outbound) = self.inner.outbounds.get(&chat.adapter) {
            let _ = outbound.send(chat, Outgoing::reply(text)).await;
        }
    }

    /// A lease this planbot lost (it was paused or cut off past it): the chat's worker stops,
    /// and its queued events are left to the new holder.
    fn lost(&self, chat: &ChatKey) {
        // Leases that are not chats' (a front end's, such as a Discord shard's) are not ours.
        let Some(_) = self.inner.leased.locked().remove(chat) else {
            return;
        };
        tracing::warn!(%chat, "the chat's lease passed to another planbot; stopping here");
        if let Some(worker) = self.inner.workers.locked().remove(chat) {
            worker.shared.cancel_running();
        }
    }

    /// A chat's worker retired (idle): its lease is given back.
    pub(crate) fn retired(&self, chat: &ChatKey) {
        let Some(shared) = self.inner.shared.clone() else {
            return;
        };
        self.inner.leased.locked().remove(chat);
        let chat = chat.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = shared.release(&chat).await {
                tracing::warn!(%chat, error = %e, "could not give a lease back");
            }
        });
    }

    /// With replicas and a daily budget: today's spending by every replica, read before a job
    /// is decided. A user's figure is the larger of the database's and this replica's own (whose
    /// last lines may be on their way to the database).
    pub(crate) async fn refresh_spend(&self) {
        let (Some(shared), Some(_)) = (&self.inner.shared, self.inner.user_daily_budget_usd) else {
            return;
        };
        let now = chrono::Utc::now();
        let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
        match shared.spent_since(midnight).await {
            Ok(spent) => {
                let mut spend = self.inner.spend.locked();
                if spend.0 != now.date_naive() {
                    *spend = (now.date_naive(), Default::default());
                }
                for (user, usd) in spent {
                    let mine = spend.1.entry(user).or_insert(0.0);
                    *mine = mine.max(usd);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read today's spending"),
        }
    }

    /// Serves every chat with events waiting (those this planbot holds or can take).
    async fn sweep(&self, shared: &dyn Shared) {
        for chat in shared.waiting().await.unwrap_or_default() {
            self.serve(&chat).await;
        }
    }

    /// Readiness, for a load balancer: without replicas always ready; with them, ready while the
    /// database answers and this planbot listens for events. Says how many chats it holds.
    pub async fn readiness(&self) -> Result<String, String> {
        let Some(shared) = &self.inner.shared else {
            return Ok("ready".into());
        };
        let held = self.inner.leased.locked().len();
        let waiting = shared
            .waiting()
            .await
            .map_err(|e| format!("the database does not answer: {e}"))?;
        if !self.inner.listening.load(Ordering::SeqCst) {
            return Err("not listening for events yet".into());
        }
        Ok(format!(
            "ready: {held} chats held, {} chats with events waiting",
            waiting.len()
        ))
    }

    /// Serves the chats this planbot holds or can take until `shutdown`: wakes on events kept
    /// by any planbot, sweeps the waiting chats every `SWEEP`, renews the leases held.
    pub async fn serve_shared(self, shutdown: CancellationToken) {
        let Some(shared) = self.inner.shared.clone() else {
            return;
        };
        // Audit lines to the shared table, off every reply's path.
        let (mirror, mut lines) = tokio::sync::mpsc::unbounded_channel();
        if let Some(audit) = &self.inner.audit {
            audit.mirror_to(mirror);
        }
        let recorder = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(first) = lines.recv().await {
                    let mut batch = vec![first];
                    while let Ok(line) = lines.try_recv() {
                        batch.push(line);
                    }
                    if let Err(e) = shared.record(&batch).await {
                        tracing::warn!(error = %e, lines = batch.len(), "could not record audit lines in the database");
                    }
                }
            })
        };
        let mut wake_ups = None;
        let mut sweep = tokio::time::interval(SWEEP);
        // Handled events are forgotten once they are old (a replica runs for weeks).
        let mut forget = tokio::time::interval(Duration::from_secs(3600));
        let mut renew = tokio::time::interval(shared.lease() / 3);
        loop {
            if wake_ups.is_none() {
                wake_ups = match shared.wake_ups().await {
                    Ok(rx) => Some(rx),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for events; sweeping only");
                        None
                    }
                };
                let listening = wake_ups.is_some();
                self.inner.listening.store(listening, Ordering::SeqCst);
            }
            let woken = async {
                match wake_ups.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                chat = woken => match chat {
                    Some(chat) => self.serve(&chat).await,
                    None => wake_ups = None,
                },
                // A sweep on the clock, and whenever a job here ends (room for another chat).
                _ = sweep.tick() => self.sweep(shared.as_ref()).await,
                _ = forget.tick() => {
                    if let Err(e) = shared.forget_handled().await {
                        tracing::warn!(error = %e, "could not forget old events");
                    }
                }
                _ = self.inner.room.notified() => self.sweep(shared.as_ref()).await,
                _ = renew.tick() => match shared.renew().await {
                    Ok(lost) => lost.iter().for_each(|chat| self.lost(chat)),
                    Err(e) => tracing::warn!(error = %e, "could not renew the leases"),
                },
                _ = shutdown.cancelled() => break,
            }
        }
        // The last lines get a moment to reach the database (each replica's own log has them
        // all in any case).
        tokio::time::sleep(Duration::from_millis(300)).await;
        recorder.abort();
        // Stopping: every chat given back, for the others to take at once.
        let held: Vec<ChatKey> = self.inner.leased.locked().keys().cloned().collect();
        for chat in held {
            let _ = shared.release(&chat).await;
        }
    }
}

/// A chat worker's front end under a lease: once the chat passed to another planbot (a write
/// refused, a renewal failed), nothing more is sent to it from here, so a planbot that was
/// paused past its lease never answers in the new holder's place.
pub(crate) struct LeasedOutbound {
    inner: Arc<dyn Outbound>,
    shared: Arc<dyn Shared>,
}

impl LeasedOutbound {
    pub(crate) fn wrap(inner: Arc<dyn Outbound>, shared: Arc<dyn Shared>) -> Arc<dyn Outbound> {
        Arc::new(LeasedOutbound { inner, shared })
    }

    fn check(&self, chat: &ChatKey) -> Result<(), SendError> {
        if self.shared.holds(chat) {
            Ok(())
        } else {
            tracing::warn!(%chat, "not sent: the chat passed to another planbot");
            Err(SendError::Rejected(
                "the chat passed to another planbot".into(),
            ))
        }
    }
}

#[async_trait]
impl Outbound for LeasedOutbound {
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        self.check(chat)?;
        self.inner.send(chat, message).await
    }

    async fn edit(
        &self,
        chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        self.check(chat)?;
        self.inner.edit(chat, id, message).await
    }

    async fn withdraw_actions(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.check(chat)?;
        self.inner.withdraw_actions(chat, id).await
    }

    async fn delete(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.check(chat)?;
        self.inner.delete(chat, id).await
    }

    async fn stream_text(&self, chat: &ChatKey, delta: &str) {
        if self.check(chat).is_ok() {
            self.inner.stream_text(chat, delta).await
        }
    }

    async fn typing(&self, chat: &ChatKey) {
        if self.check(chat).is_ok() {
            self.inner.typing(chat).await
        }
    }

    async fn fetch(&self, file: &FileRef, limit: u64) -> Result<Vec<u8>, FetchError> {
        self.inner.fetch(file, limit).await
    }
}
