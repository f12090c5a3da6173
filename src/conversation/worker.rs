//! Carrying out a [`Decision`]: creating a plan, offering buttons, cancelling, resuming; the
//! turns themselves are in [`super::turn`].

use tokio_util::sync::CancellationToken;

use super::{Decision, Limits, Op, copy, decide};
use crate::chat::{Action, FetchError, FileRef, Inbound, Offer, Outgoing};
use crate::planning::PlanError;
use crate::planning::inbox;
use crate::planning::state::SessionEntry;
use crate::router::worker::ChatWorker;
use crate::router::{SAVE_FAILED, STALE};

/// The longest a file may take to download.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl ChatWorker {
    /// Carries out what [`decide`] makes of this job.
    pub(crate) async fn route(
        &mut self,
        inbound: Inbound,
        entry: Option<SessionEntry>,
        cancel: &CancellationToken,
    ) {
        self.router.refresh_spend().await;
        let limits = Limits {
            may_answer: self.router.may_answer(&inbound, entry.as_ref()),
            ..self.limits()
        };
        let decision = decide(entry.as_ref(), inbound.private, &inbound.kind, &limits);
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
            Decision::NotYours => self.ephemeral(&inbound, copy::NOT_YOURS).await,
            Decision::Ignore | Decision::Start { .. } => {}
            Decision::Turn(op) => self.run_turn(entry, op, cancel).await,
            Decision::Receive { files, caption } => {
                self.receive(entry, files, caption, cancel).await
            }
            Decision::Refuse { text, offer_resume } => {
                self.refuse(&entry, text, offer_resume).await
            }
            Decision::AskFinalize => self.ask_finalize(&entry).await,
            Decision::Cancel => self.cancel(&entry).await,
            Decision::Resume => self.resume(entry).await,
        }
    }

    /// Takes the files into the plan's inbox, then runs the turn that tells Claude what arrived.
    /// A file that cannot be taken is named to the user; the others go on.
    async fn receive(
        &mut self,
        entry: SessionEntry,
        files: Vec<FileRef>,
        caption: String,
        cancel: &CancellationToken,
    ) {
        self.outbound.typing(&self.chat).await;
        let limit = self.router.inner.max_attachment_bytes;
        let (mut received, mut missed) = (Vec::new(), Vec::new());
        for file in &files {
            let name = inbox::safe_name(file.name.as_deref(), inbox::fallback_name(&file.mime));
            let shown_name = file.name.clone().unwrap_or_else(|| name.clone());
            let fetched = tokio::select! {
                fetched = tokio::time::timeout(FETCH_TIMEOUT, self.outbound.fetch(file, limit)) => {
                    fetched.unwrap_or_else(|_| Err(FetchError::Failed("timed out".into())))
                }
                _ = cancel.cancelled() => return,
            };
            let bytes = match fetched {
                Ok(bytes) => bytes,
                Err(FetchError::TooLarge { size }) => {
                    missed.push(copy::file_too_large(&shown_name, size, limit));
                    continue;
                }
                Err(FetchError::Failed(why)) => {
                    tracing::warn!(chat = %self.chat, error = %why, "could not fetch a file");
                    missed.push(copy::file_not_received(&shown_name));
                    continue;
                }
            };
            let (cwd, safe, len) = (entry.cwd.clone(), name.clone(), bytes.len() as u64);
            let saved = tokio::task::spawn_blocking(move || inbox::save(&cwd, &safe, &bytes)).await;
            match saved {
                Ok(Ok(path)) => received.push(inbox::Received {
                    path,
                    sent_as: file.name.clone().filter(|sent| *sent != name),
                    mime: inbox::mime_of(file.mime.as_deref(), &name),
                    bytes: len,
                }),
                Ok(Err(e)) => {
                    tracing::warn!(chat = %self.chat, error = %e, "could not save a file");
                    missed.push(format!("{}: {e}", copy::file_not_received(&shown_name)));
                }
                Err(e) => {
                    tracing::error!(chat = %self.chat, error = %e, "saving a file failed");
                    missed.push(copy::file_not_received(&shown_name));
                }
            }
        }
        if !missed.is_empty() {
            self.say(missed.join("\n")).await;
        }
        let text = match (received.is_empty(), caption.trim().is_empty()) {
            (true, true) => return,
            (true, false) => caption,
            (false, _) => inbox::describe(&received, &caption),
        };
        self.run_turn(entry, Op::Respond(text), cancel).await;
    }

    /// Refuses a step (a budget, a pause), offering to resume when that is the way on.
    async fn refuse(&mut self, entry: &SessionEntry, text: String, offer_resume: bool) {
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

    /// After the last phase there is nowhere to go but finishing: asks with buttons.
    async fn ask_finalize(&mut self, entry: &SessionEntry) {
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
        let text = copy::last_phase(&entry.phase);
        self.offer(Outgoing::reply(text).with_actions(offers)).await;
    }

    async fn cancel(&mut self, entry: &SessionEntry) {
        match self.store().remove(&self.chat).await {
            Ok(_) => {
                self.withdraw_offer().await;
                self.say(copy::cancelled_plan(&entry.slug)).await
            }
            Err(e) => {
                tracing::error!(error = %e, "cancel could not be saved");
                self.say(SAVE_FAILED).await
            }
        }
    }

    async fn resume(&mut self, mut entry: SessionEntry) {
        entry.paused = false;
        entry.failures = 0;
        entry.revision += 1;
        match self.store().put(&self.chat, entry).await {
            Ok(()) => self.say(copy::RESUMED).await,
            Err(_) => self.say(SAVE_FAILED).await,
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
            may_answer: false,
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
        let mut entry = match created.unwrap_or_else(|e| Err(PlanError::Internal(e.to_string()))) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(error = %e, "could not create a plan");
                self.say(e.to_string()).await;
                return;
            }
        };
        entry.started_by = Some(format!("{}:{}", inbound.chat.adapter, inbound.user));
        self.say(copy::planning(&slug, entry.phases.len(), &entry.phase))
            .await;
        self.run_turn(entry, Op::Start, cancel).await;
    }

    /// Sends a message with buttons, then withdraws the previous one's: the answer first.
    pub(crate) async fn offer(&mut self, message: Outgoing) {
        let sent = self.outbound.send(&self.chat, message).await;
        self.withdraw_offer().await;
        match sent {
            Ok(id) => self.last_offer = Some(id),
            Err(e) => tracing::warn!(chat = %self.chat, error = %e, "could not deliver a reply"),
        }
    }

    pub(crate) async fn withdraw_offer(&mut self) {
        if let Some(id) = self.last_offer.take() {
            let _ = self.outbound.withdraw_actions(&self.chat, &id).await;
        }
    }
}
