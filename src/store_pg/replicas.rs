//! Several planbots on one database: the chats' leases, the inbox of kept events, the
//! announcements that wake the holders, the audit every replica writes to.

use std::collections::HashMap;

use async_trait::async_trait;

use super::*;
use crate::audit::AuditLine;
use crate::chat::Inbound;
use crate::store::{Inbox, Shared, Taken};

impl PgStore {
    /// The epoch this process holds `chat` at (0: no lease, as one planbot alone writes).
    pub(super) fn epoch(&self, chat: &str) -> i64 {
        self.held.locked().get(chat).copied().unwrap_or(0)
    }

    /// Takes the lease on `chat`, or renews it when this process holds it. Returns the lease's
    /// epoch and whether another planbot held it before, or `None` while another holds it.
    /// Taking a lease another process held moves the epoch on, which fences its writes.
    pub async fn take(&self, chat: &ChatKey) -> Result<Option<Taken>, StoreError> {
        let key = chat.to_string();
        let millis = self.lease.as_millis() as f64;
        let row = self
            .row_opt(
                "taking a chat's lease",
                "WITH before AS (SELECT holder FROM planbot_leases WHERE chat = $1)
                 INSERT INTO planbot_leases AS l (chat, holder, epoch, expires_at)
                 VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (chat) DO UPDATE SET
                     epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
                     holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
                 RETURNING epoch, coalesce((SELECT holder FROM before) <> $2, false)",
                &[&key, &self.holder, &millis],
            )
            .await?;
        let taken = row.map(|r| Taken {
            epoch: r.get(0),
            from_another: r.get(1),
        });
        let mut held = self.held.locked();
        match taken {
            Some(taken) => held.insert(key, taken.epoch),
            None => held.remove(&key),
        };
        Ok(taken)
    }

    /// Renews every lease this process holds; returns the chats whose lease passed to another
    /// planbot (no longer held).
    pub async fn renew_all(&self) -> Result<Vec<String>, StoreError> {
        let held: Vec<String> = self.held.locked().keys().cloned().collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let millis = self.lease.as_millis() as f64;
        let rows = self
            .rows(
                "renewing leases",
                "UPDATE planbot_leases SET expires_at = now() + $3 * interval '1 millisecond'
                 WHERE holder = $1 AND chat = ANY($2) RETURNING chat",
                &[&self.holder, &held, &millis],
            )
            .await?;
        let kept: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let lost: Vec<String> = held.into_iter().filter(|c| !kept.contains(c)).collect();
        let mut held = self.held.locked();
        for chat in &lost {
            held.remove(chat);
        }
        Ok(lost)
    }

    /// Gives the lease on `chat` back (an idle chat): it ends now, its epoch kept, so the next
    /// holder's is higher.
    pub async fn give_back(&self, chat: &ChatKey) -> Result<(), StoreError> {
        let key = chat.to_string();
        self.held.locked().remove(&key);
        self.run(
            "giving a lease back",
            "UPDATE planbot_leases SET expires_at = now() WHERE chat = $1 AND holder = $2",
            &[&key, &self.holder],
        )
        .await?;
        Ok(())
    }

    /// Kept events read back (`id`, `inbound`); one this planbot cannot read is set aside as
    /// handled, not retried forever.
    async fn events(
        &self,
        rows: Vec<tokio_postgres::Row>,
    ) -> Result<Vec<(i64, Inbound)>, StoreError> {
        let mut events = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            match serde_json::from_value(row.get(1)) {
                Ok(inbound) => events.push((id, inbound)),
                Err(e) => {
                    tracing::error!(id, error = %e, "a kept event does not parse; it is skipped");
                    self.done(id).await?;
                }
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl Inbox for PgStore {
    async fn keep(&self, inbound: &Inbound) -> Result<Option<i64>, StoreError> {
        let json = serde_json::to_value(inbound).map_err(|e| db_error("encoding an event", e))?;
        let row = self
            .row_opt(
                "keeping an event",
                "WITH kept AS (
                     INSERT INTO planbot_inbound (event, chat, inbound) VALUES ($1, $2, $3)
                     ON CONFLICT (event) DO NOTHING RETURNING id
                 )
                 SELECT id, pg_notify($4, $2) FROM kept",
                &[&inbound.event, &inbound.chat.to_string(), &json, &WAKE_UP],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn done(&self, id: i64) -> Result<(), StoreError> {
        self.run(
            "marking an event handled",
            "UPDATE planbot_inbound SET done_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }

    async fn forget_handled(&self) -> Result<(), StoreError> {
        self.run(
            "forgetting old events",
            &format!(
                "DELETE FROM planbot_inbound WHERE done_at < now() - interval '{INBOUND_KEPT}'"
            ),
            &[],
        )
        .await?;
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<(i64, Inbound)>, StoreError> {
        let rows = self
            .rows(
                "reading kept events",
                "SELECT id, inbound FROM planbot_inbound WHERE done_at IS NULL ORDER BY id",
                &[],
            )
            .await?;
        self.events(rows).await
    }
}

#[async_trait]
impl Shared for PgStore {
    async fn acquire(&self, chat: &ChatKey) -> Result<Option<Taken>, StoreError> {
        self.take(chat).await
    }

    async fn renew(&self) -> Result<Vec<ChatKey>, StoreError> {
        Ok(self.renew_all().await?.iter().map(|c| key_of(c)).collect())
    }

    async fn release(&self, chat: &ChatKey) -> Result<(), StoreError> {
        self.give_back(chat).await
    }

    async fn pull(&self, chat: &ChatKey, after: i64) -> Result<Vec<(i64, Inbound)>, StoreError> {
        let rows = self
            .rows(
                "reading a chat's events",
                "SELECT id, inbound FROM planbot_inbound
                 WHERE chat = $1 AND done_at IS NULL AND id > $2 ORDER BY id",
                &[&chat.to_string(), &after],
            )
            .await?;
        self.events(rows).await
    }

    async fn waiting(&self) -> Result<Vec<ChatKey>, StoreError> {
        let rows = self
            .rows(
                "reading the chats waiting",
                "SELECT DISTINCT chat FROM planbot_inbound WHERE done_at IS NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| key_of(r.get(0))).collect())
    }

    async fn wake_ups(&self) -> Result<tokio::sync::mpsc::Receiver<ChatKey>, StoreError> {
        let (client, mut connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(self.tls.clone()))
                .await
                .map_err(|_| db_error("listening", "no answer"))?
                .map_err(|e| db_error("listening", e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let keeper = tx.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(key_of(n.payload())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the connection listening for events ended");
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {WAKE_UP}"))
            .await
            .map_err(|e| db_error("listening", e))?;
        // The client lives as long as someone listens.
        tokio::spawn(async move {
            keeper.closed().await;
            drop(client);
        });
        Ok(rx)
    }

    fn lease(&self) -> std::time::Duration {
        self.lease
    }

    async fn leases(&self, prefix: &str) -> Result<Vec<(ChatKey, bool)>, StoreError> {
        let rows = self
            .rows(
                "reading the leases",
                "SELECT chat, holder = $2 FROM planbot_leases
                 WHERE starts_with(chat, $1) AND expires_at > now()",
                &[&prefix, &self.holder],
            )
            .await?;
        Ok(rows.iter().map(|r| (key_of(r.get(0)), r.get(1))).collect())
    }

    fn holds(&self, chat: &ChatKey) -> bool {
        self.held.locked().contains_key(&chat.to_string())
    }

    async fn record(&self, lines: &[AuditLine]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("recording the audit", e))?;
        for line in lines {
            let json =
                serde_json::to_value(line).map_err(|e| db_error("encoding an audit line", e))?;
            tx.execute(
                "INSERT INTO planbot_audit (at, user_key, cost_usd, line)
                 VALUES ($1::text::timestamptz, $2, $3, $4)",
                &[
                    &line.time.to_rfc3339(),
                    &format!("{}:{}", line.adapter, line.user),
                    &line.cost_usd,
                    &json,
                ],
            )
            .await
            .map_err(|e| db_error("recording the audit", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("recording the audit", e))
    }

    async fn spent_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<HashMap<String, f64>, StoreError> {
        let rows = self
            .rows(
                "reading the spending",
                "SELECT user_key, sum(cost_usd) FROM planbot_audit
                 WHERE at >= $1::text::timestamptz AND cost_usd > 0 GROUP BY user_key",
                &[&since.to_rfc3339()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
