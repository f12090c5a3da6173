//! Long polling, the default: `getUpdates` in a loop, each batch's last update id recorded
//! durably before the batch is handled, so a restart never answers a message twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use teloxide::payloads::GetUpdatesSetters;
use teloxide::prelude::Requester;
use teloxide::types::AllowedUpdate;
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

use super::updates::{ALBUM_WAIT, Updates, gather, trailing_album};
use super::{POLL_SECS, TelegramOutbound};
use crate::durable::write_durably;
use crate::router::Router;
use crate::sync::Locked;

/// Conflicts in a row (409) after which polling stops: more than a restart's overlap.
const CONFLICTS_TO_STOP: u32 = 3;

/// Why polling cannot go on, when Telegram answered 409 Conflict: another poller of the same
/// token, or a webhook set for it.
fn conflict(e: &RequestError) -> Option<String> {
    let text = e.to_string();
    if matches!(e, RequestError::Api(ApiError::TerminatedByOtherGetUpdates))
        || text.contains("terminated by other getUpdates")
    {
        return Some(
            "another program is polling this bot's updates (Telegram answered 409 Conflict: terminated by other getUpdates request). One planbot may long-poll a bot token: stop the other one, or run several planbots behind TELEGRAM_WEBHOOK_URL"
                .into(),
        );
    }
    if matches!(e, RequestError::Api(ApiError::CantGetUpdates))
        || text.contains("webhook is active")
    {
        return Some(
            "a webhook is set for this bot, so long polling gets nothing (Telegram answered 409 Conflict): set TELEGRAM_WEBHOOK_URL here too, or delete the webhook (deleteWebhook) to poll"
                .into(),
        );
    }
    None
}

/// The long-polling loop: runs until `shutdown`.
pub struct Poller {
    pub outbound: Arc<TelegramOutbound>,
    pub router: Router,
    /// Where the last handled update id is kept.
    pub offset_file: PathBuf,
}

impl Poller {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let Some(handler) =
            Updates::start(self.outbound.clone(), self.router.clone(), &shutdown).await?
        else {
            return Ok(());
        };
        let bot = self.outbound.bot.clone();
        let mut last_done = read_offset(&self.offset_file);
        let offsets = Arc::new(std::sync::Mutex::new(OffsetRecord {
            path: self.offset_file.clone(),
            file: None,
        }));
        let mut failures = Failures::default();
        // The album last held back for more of its files (held once, then handled).
        let mut waited_for: Option<(i64, String)> = None;
        loop {
            let request = bot
                .get_updates()
                .offset(last_done.map_or(0, |id| id.saturating_add(1)))
                .timeout(POLL_SECS)
                .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
            let updates = tokio::select! {
                updates = request => updates,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let updates = match updates {
                Ok(updates) => {
                    failures = Failures::default();
                    updates
                }
                Err(e) => {
                    let wait = failures.after(&e)?;
                    tracing::warn!(error = %self.outbound.redact(&e), ?wait, "getUpdates failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                }
            };
            let mut fresh: Vec<_> = updates
                .into_iter()
                .filter(|u| last_done.is_none_or(|done| (u.id.0 as i32) > done))
                .collect();
            // An album arrives as one update per file, possibly over more than one batch. One
            // that ends the batch is left unconfirmed and fetched again a moment later, with
            // whatever else of it has arrived, so that it makes one turn.
            let mut held = false;
            if let Some((album, first)) = trailing_album(&fresh)
                && waited_for.as_ref() != Some(&album)
            {
                fresh.truncate(first);
                (held, waited_for) = (true, Some(album));
            }
            if let Some(newest) = fresh.iter().map(|u| u.id.0 as i32).max() {
                // The batch is recorded before it is handled: after a crash it is skipped, never
                // answered twice.
                last_done = Some(newest);
                record_offset(&offsets, newest).await;
                for item in gather(fresh) {
                    handler.handle(item).await;
                }
            }
            if held {
                tokio::select! {
                    _ = tokio::time::sleep(ALBUM_WAIT) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// Failed polls in a row, and how many of them were conflicts.
#[derive(Default)]
struct Failures {
    failures: u32,
    conflicts: u32,
}

impl Failures {
    /// How long to wait after `e`, or why polling must stop: a conflict that outlasts a
    /// restart's overlap (which ends within a poll or two; a second poller never does).
    fn after(&mut self, e: &RequestError) -> Result<Duration, String> {
        if let Some(why) = conflict(e) {
            self.conflicts += 1;
            if self.conflicts >= CONFLICTS_TO_STOP {
                return Err(why);
            }
        }
        self.failures += 1;
        Ok(match e {
            RequestError::RetryAfter(wait) => wait.duration(),
            _ => Duration::from_millis(500 * 2u64.pow(self.failures.min(6))),
        })
    }
}

/// Records `newest` as handled, with one sync off the async threads; a failure is logged.
async fn record_offset(offsets: &Arc<std::sync::Mutex<OffsetRecord>>, newest: i32) {
    let record = offsets.clone();
    let written = tokio::task::spawn_blocking(move || record.locked().write(newest))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    if let Err(e) = written {
        tracing::error!(error = %e, "could not record the Telegram update offset");
    }
}

/// The last handled update id, on disk: a fixed-width record rewritten in place and synced (one
/// `fdatasync`, no temp file, rename or directory sync on the path of every message). The
/// record is one small write at offset 0, which a crash cannot tear.
struct OffsetRecord {
    path: PathBuf,
    /// Open once the file is known to be complete.
    file: Option<std::fs::File>,
}

impl OffsetRecord {
    fn write(&mut self, id: i32) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let record = format!("{id:<23}\n");
        match &self.file {
            Some(file) => {
                file.write_all_at(record.as_bytes(), 0)?;
                file.sync_data()
            }
            None => {
                // The first time: a complete file of the record's width, put in place durably.
                write_durably(&self.path, record.as_bytes(), false)?;
                self.file = Some(std::fs::OpenOptions::new().write(true).open(&self.path)?);
                Ok(())
            }
        }
    }
}

fn read_offset(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_record_is_rewritten_in_place_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telegram.offset");
        std::fs::write(&path, "7").unwrap();
        assert_eq!(read_offset(&path), Some(7));
        let mut record = OffsetRecord {
            path: path.clone(),
            file: None,
        };
        for id in [123_456_789, 5, 1_000] {
            record.write(id).unwrap();
            assert_eq!(read_offset(&path), Some(id));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        }
    }
}
