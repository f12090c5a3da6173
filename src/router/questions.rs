//! Questions about tool calls, as the router sees them: who may answer one, and the watcher
//! that denies those nobody answered in time.

use super::*;

impl Router {
    /// Whether the sender of `inbound` may answer the questions of the plan `entry`: who started
    /// it (anyone allowed, for a plan from before that was recorded), or an approver.
    pub(crate) fn may_answer(&self, inbound: &Inbound, entry: Option<&SessionEntry>) -> bool {
        let sender = format!("{}:{}", inbound.chat.adapter, inbound.user);
        let starter = entry.and_then(|e| e.started_by.as_deref());
        starter.is_none_or(|s| s == sender) || self.inner.approvers.contains(&sender)
    }

    /// Denies the questions nobody answered within the timeout (each as a job of its chat, so
    /// the chat hears it); runs until planbot closes.
    pub async fn expire_questions(self) {
        let timeout = self.inner.approval_timeout;
        let every = (timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        loop {
            tokio::time::sleep(every).await;
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            let Ok(all) = self.inner.store.all().await else {
                continue;
            };
            let now = chrono::Utc::now();
            for (chat, entry) in all {
                let overdue = entry.status == EntryStatus::Planning
                    && entry
                        .pending_approval
                        .as_ref()
                        .is_some_and(|p| now - p.asked_at >= timeout);
                let outbound = self.inner.outbounds.get(&chat.adapter).cloned();
                if let (true, Some(outbound)) = (overdue, outbound)
                    && self.runs_own_job(&chat).await
                {
                    let inbound = Inbound {
                        chat,
                        user: "planbot".into(),
                        private: false,
                        kind: InboundKind::QuestionExpired {
                            revision: entry.revision,
                        },
                        interaction: None,
                        membership: None,
                        event: None,
                    };
                    self.enqueue(inbound, outbound, None);
                }
            }
        }
    }
}
