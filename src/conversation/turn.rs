//! One planning step as a turn: marked running, Claude started, progress shown, the state
//! saved, the reply delivered (and a finished plan written).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{BREAKER_FAILURES, Op, QuestionAnswer, copy};
use crate::audit::AuditLine;
use crate::chat::{Action, Attachment, MessageKind, MessageRef, Offer, Outgoing};
use crate::claude::approval::ToolCall;
use crate::claude::{Progress, TurnStatus};
use crate::planning::state::{EntryStatus, SessionEntry};
use crate::planning::workspace::WorkspaceError;
use crate::planning::{PlanError, PlanningSession, Reply, ReplyOutcome, write_final_plan};
use crate::router::SAVE_FAILED;
use crate::router::worker::ChatWorker;

/// Progress events waiting for the chat, at most.
const PROGRESS_QUEUE: usize = 256;
/// A final plan longer than this is posted as a file with a short note, not as text.
const INLINE_PLAN_CHARS: usize = 3_000;

impl ChatWorker {
    /// Runs one planning step as a turn: marks it running, shows progress, saves and replies.
    pub(crate) async fn run_turn(
        &mut self,
        mut entry: SessionEntry,
        op: Op,
        cancel: &CancellationToken,
    ) {
        let cost_before = entry.total_cost_usd;
        entry.status = EntryStatus::Running;
        if let Op::Answer { call, answer } = &op {
            // Answered: the question is closed from here on, whatever the turn does.
            entry.pending_approval = None;
            self.audit_answer(&entry, call, *answer);
        }
        // "typing" is the first sign of life: it goes out while the plan is saved as running.
        let (saved, ()) = tokio::join!(
            self.store().put(&self.chat, entry.clone()),
            self.outbound.typing(&self.chat)
        );
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not save before a turn");
            self.say(SAVE_FAILED).await;
            return;
        }
        let label = match &op {
            Op::Advance => entry.next_phase().unwrap_or(&entry.phase).to_string(),
            _ => entry.phase.clone(),
        };
        let working = match op {
            Op::Finalize => copy::writing_final_plan(&entry.slug),
            _ => copy::working_on(&label),
        };
        let (events, mut events_rx) = mpsc::channel(PROGRESS_QUEUE);
        let mut events = ProgressSender {
            events,
            unsent: String::new(),
        };
        let mut on_progress = move |p: Progress| events.send(p);
        let span = tracing::info_span!("turn", slug = %entry.slug, phase = %label);
        let mut session = PlanningSession::new(self.planner().clone(), entry);
        // Claude starts at once: what the chat shows runs beside the turn, never before it.
        let done = CancellationToken::new();
        let step = async {
            let result = match &op {
                Op::Start => Ok(session.start_phase(cancel, &mut on_progress).await),
                Op::Respond(text) => Ok(session.respond(text, cancel, &mut on_progress).await),
                Op::Advance => session.advance(cancel, &mut on_progress).await,
                Op::Finalize => session.finalize(cancel, &mut on_progress).await,
                Op::Answer { call, answer } => {
                    let timeout = self.router.inner.approval_timeout;
                    Ok(answer_question(
                        &mut session,
                        call,
                        *answer,
                        timeout,
                        cancel,
                        &mut on_progress,
                    )
                    .await)
                }
            };
            done.cancel();
            result
        };
        let (result, progress_ref) = tokio::join!(
            step.instrument(span),
            self.show_progress(&mut events_rx, &working, &done)
        );
        // Text the turn wrote that the progress loop had not passed on yet is streamed before
        // the reply, so no front end loses the end of it.
        while let Ok(event) = events_rx.try_recv() {
            if let Progress::Text(delta) = event {
                self.outbound.stream_text(&self.chat, &delta).await;
            }
        }
        let entry = session.into_state();
        self.conclude(entry, &op, result, cost_before, progress_ref)
            .await;
    }

    /// Every answer to a question is an audit line of its own: who, the tool, what it would do,
    /// the answer.
    fn audit_answer(&self, entry: &SessionEntry, call: &ToolCall, answer: QuestionAnswer) {
        if let Some(audit) = &self.router.inner.audit {
            audit.append(AuditLine {
                slug: Some(entry.slug.clone()),
                phase: Some(entry.phase.clone()),
                outcome: format!("{} {} {}", answer.name(), call.tool, call.summary()),
                ..AuditLine::new(
                    &self.chat,
                    self.user.clone(),
                    "approval".into(),
                    std::time::Instant::now(),
                )
            });
        }
    }

    /// After a turn: spending, the audit record, the breaker, saving, and the reply.
    async fn conclude(
        &mut self,
        mut entry: SessionEntry,
        op: &Op,
        result: Result<Reply, PlanError>,
        cost_before: f64,
        progress_ref: Option<MessageRef>,
    ) {
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
                ReplyOutcome::Deferred(call) => format!("asked: {} {}", call.tool, call.summary()),
            },
            Err(e) => e.to_string(),
        };
        self.record = Some((outcome, cost, entry.slug.clone(), entry.phase.clone()));
        let interrupted = self.router.inner.closing.load(Ordering::SeqCst)
            && matches!(&result, Ok(reply) if reply.outcome == ReplyOutcome::Cancelled);
        if interrupted {
            // Shutdown cut this turn off: the plan waits, and the chat hears it on return too.
            entry.status = EntryStatus::Interrupted;
            let text = match self.store().put(&self.chat, entry).await {
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
                    .edit(&self.chat, id, Outgoing::reply(copy::CANCELLED))
                    .await;
            }
            return;
        }
        let reply = result.unwrap_or_else(|e| Reply {
            text: e.to_string(),
            outcome: ReplyOutcome::Failed(TurnStatus::Cancelled),
            notices: Vec::new(),
        });
        if matches!(op, Op::Finalize) && reply.is_answered() {
            self.finish_plan(entry, reply, progress_ref).await;
            return;
        }
        if let Err(e) = self.store().put(&self.chat, entry.clone()).await {
            tracing::error!(error = %e, "could not save after a turn");
            let text = format!("{}\n\n{SAVE_FAILED}", reply.text);
            self.deliver(progress_ref, Outgoing::reply(text)).await;
            return;
        }
        self.deliver(progress_ref, reply_message(&entry, &reply))
            .await;
    }

    /// Delivers a turn's last word: the message first, then the bookkeeping (the older buttons
    /// withdrawn, the progress message taken away).
    async fn deliver(&mut self, progress: Option<MessageRef>, message: Outgoing) {
        self.offer(message).await;
        if let Some(id) = progress
            && let Err(e) = self.outbound.delete(&self.chat, &id).await
        {
            tracing::warn!(error = %e, "could not remove the progress message");
        }
    }

    async fn finish_plan(
        &mut self,
        entry: SessionEntry,
        reply: Reply,
        progress: Option<MessageRef>,
    ) {
        let key = self.chat.clone();
        // The agent's process may still be exiting after its answer: the plan is written once
        // it is gone, so nothing it does can change the file after planbot wrote it.
        self.planner().settled(&entry.cwd).await;
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
                    Outgoing::reply(copy::final_plan_not_saved(&e.to_string())),
                )
                .await;
                return;
            }
        };
        if let Err(e) = self.store().remove(&key).await {
            tracing::error!(error = %e, "could not close the plan in the store");
        }
        let mut text = copy::finalized(
            &entry.slug,
            entry.turns,
            entry.total_cost_usd,
            &crate::planning::workspace::shown(&entry.cwd, &path),
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

    /// Shows a running turn until `done` ("typing" went out as it started, and is renewed at
    /// each tick): if the turn is still running one interval later, a progress message, edited at most once per interval and only when
    /// what it shows changed; text streams to front ends that want it. Returns the progress
    /// message, if one was sent. A call in flight when the turn ends is finished, not dropped.
    async fn show_progress(
        &self,
        events: &mut mpsc::Receiver<Progress>,
        working: &str,
        done: &CancellationToken,
    ) -> Option<MessageRef> {
        let started = Instant::now();
        let every = self.router.inner.progress_interval;
        let mut tick = tokio::time::interval_at(started + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress: Option<MessageRef> = None;
        let (mut text, mut shown) = (String::new(), String::new());
        let (mut queued, mut open) = (false, true);
        let mut last_update = started;
        loop {
            let due = tokio::select! {
                biased;
                _ = done.cancelled() => return progress,
                event = events.recv(), if open => match event {
                    Some(Progress::Text(delta)) => {
                        self.outbound.stream_text(&self.chat, &delta).await;
                        let first = text.is_empty();
                        text.push_str(&delta);
                        // The first text is shown at once if the last update is old enough.
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
            let view = progress_view(working, started.elapsed(), &text, queued);
            if !due || view == shown {
                continue;
            }
            let message = Outgoing {
                kind: MessageKind::Progress,
                ..Outgoing::reply(view.clone())
            };
            let shown_now = match &progress {
                Some(id) => self.outbound.edit(&self.chat, id, message).await.is_ok(),
                None => match self.outbound.send(&self.chat, message).await {
                    Ok(id) => {
                        progress = Some(id);
                        true
                    }
                    Err(_) => false,
                },
            };
            if shown_now {
                shown = view;
            }
            last_update = Instant::now();
            tick.reset();
        }
    }
}

/// The turn's side of the bounded progress channel: while the chat is slow (a 429 window), text
/// waiting to be shown is gathered into one piece rather than queued without end; other events
/// are dropped then (they only tune the progress message).
struct ProgressSender {
    events: mpsc::Sender<Progress>,
    unsent: String,
}

impl ProgressSender {
    fn send(&mut self, progress: Progress) {
        let progress = match progress {
            Progress::Text(delta) => {
                self.unsent.push_str(&delta);
                Progress::Text(std::mem::take(&mut self.unsent))
            }
            other => other,
        };
        if let Err(mpsc::error::TrySendError::Full(Progress::Text(text))) =
            self.events.try_send(progress)
        {
            self.unsent = text;
        }
    }
}

/// A turn's reply as the chat shows it: notices, the text, and the buttons that fit the plan now.
fn reply_message(entry: &SessionEntry, reply: &Reply) -> Outgoing {
    let mut text = String::new();
    for notice in &reply.notices {
        text.push_str(&format!("_{notice}_\n\n"));
    }
    if let ReplyOutcome::Deferred(call) = &reply.outcome {
        if !reply.text.trim().is_empty() {
            text.push_str(reply.text.trim());
            text.push_str("\n\n");
        }
        text.push_str(&format!("❓ {}", copy::question(call)));
        return Outgoing::reply(text).with_actions(question_offers(entry, call));
    }
    text.push_str(if reply.text.trim().is_empty() {
        copy::EMPTY_REPLY
    } else {
        &reply.text
    });
    let mut offers = phase_offers(entry, reply);
    if entry.paused {
        text.push_str(&format!("\n\n⏸ {}", copy::paused_now()));
        offers = vec![Offer {
            label: "Resume".into(),
            action: Action::Resume,
            revision: entry.revision,
        }];
    }
    Outgoing::reply(text).with_actions(offers)
}

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

/// Resumes the session with the user's answer to its question; the reply notes the answer.
async fn answer_question(
    session: &mut PlanningSession,
    call: &ToolCall,
    answer: QuestionAnswer,
    timeout: Duration,
    cancel: &CancellationToken,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Reply {
    let allow = matches!(
        answer,
        QuestionAnswer::AllowOnce | QuestionAnswer::AllowForPlan
    );
    let for_plan = answer == QuestionAnswer::AllowForPlan;
    let mut reply = session
        .answer_question(call.clone(), allow, for_plan, cancel, progress)
        .await;
    reply
        .notices
        .insert(0, copy::answered(call, answer, timeout));
    reply
}

/// Allow once, allow for the plan (where there is something to name), deny.
fn question_offers(entry: &SessionEntry, call: &ToolCall) -> Vec<Offer> {
    let offer = |label: String, action| Offer {
        label,
        action,
        revision: entry.revision,
    };
    let mut offers = vec![offer("Allow once".into(), Action::AllowOnce)];
    if let Some(label) = copy::allow_for_plan(call) {
        offers.push(offer(label, Action::AllowForPlan));
    }
    offers.push(offer("Deny".into(), Action::Deny));
    offers
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_gathered_not_lost_while_the_channel_is_full() {
        let (events, mut rx) = mpsc::channel(2);
        let mut sender = ProgressSender {
            events,
            unsent: String::new(),
        };
        for word in ["a", "b", "c", "d"] {
            sender.send(Progress::Text(word.into()));
        }
        sender.send(Progress::Started);
        let mut seen = Vec::new();
        while let Ok(event) = rx.try_recv() {
            seen.push(event);
        }
        assert_eq!(
            seen,
            [Progress::Text("a".into()), Progress::Text("b".into())]
        );
        // Room again: what waited goes out as one piece, in order.
        sender.send(Progress::Text("e".into()));
        assert_eq!(rx.try_recv().ok(), Some(Progress::Text("cde".into())));
    }

    #[test]
    fn progress_shows_time_and_tail() {
        let view = progress_view("⏳ Working", Duration::from_secs(12), "abc", false);
        assert_eq!(view, "⏳ Working 12s\n\n…abc");
        let view = progress_view("⏳ Working", Duration::from_secs(1), "", true);
        assert_eq!(view, "⏳ Working waiting for a free slot (1s)");
    }
}
