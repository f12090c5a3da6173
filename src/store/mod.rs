//! Where plans are kept, keyed by chat: the [`SessionStore`] trait; `planning.json` ([`Store`],
//! the default, in [`file`]), its format ([`format`]), and an in-memory twin for tests. The
//! PostgreSQL store is [`crate::store_pg`].

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::chat::ChatKey;
use crate::planning::state::SessionEntry;
use crate::sync::Locked;

pub mod file;
pub mod format;
mod journal;

pub use file::{StateLock, Store, inspect};

pub use format::{JOURNAL_FILE, LOCK_FILE, ParseError, STATE_FILE, State, VERSION};

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not save to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error(
        "another planbot already uses the state directory {dir} ({holder}); stop it or choose another PLANBOT_STATE_DIR"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("the store has shut down")]
    Closed,
    #[error("PostgreSQL: {0}")]
    Database(String),
    /// Another replica holds the chat's lease now: this one's write was refused.
    #[error("the lease on {0} passed to another planbot; this one no longer serves the chat")]
    LeaseLost(String),
}

/// What loading found, for the log and `planbot check`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub sessions: usize,
    /// Keys whose turn was cut off by a crash; now `interrupted`.
    pub interrupted: Vec<String>,
    /// Where an unreadable file was moved.
    pub moved_aside: Option<PathBuf>,
    /// The backup was loaded because the main file was missing or unreadable.
    pub from_backup: bool,
    /// Keys of entries that did not parse (kept in the file as they are).
    pub unreadable: Vec<String>,
    /// The parse error of a file moved aside.
    pub problem: Option<String>,
    /// Updates read from `planning.json.journal`, not yet in the file.
    pub journaled: usize,
}

impl LoadReport {
    /// Whether the operator must look at something.
    pub fn is_healthy(&self) -> bool {
        self.moved_aside.is_none() && !self.from_backup && self.unreadable.is_empty()
    }
}

/// Where plans are kept, keyed by chat: the file store ([`Store`], `planning.json`) by default,
/// [`MemoryStore`] for tests. Every write is durable (as the implementation defines it) when it
/// returns.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn get(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError>;
    async fn put(&self, chat: &ChatKey, entry: SessionEntry) -> Result<(), StoreError>;
    /// Removes the chat's plan; returns what was there.
    async fn remove(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError>;
    /// Every plan, with its chat.
    async fn all(&self) -> Result<Vec<(ChatKey, SessionEntry)>, StoreError>;
}

/// Events kept durably from the moment they are received until their chat has handled them
/// (the PostgreSQL store's `planbot_inbound`): a front end acknowledges an event to its platform
/// only once it is kept, and a planbot that stops or dies before handling it handles it after
/// its restart.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Keeps `inbound`; returns its number, or `None` when an event of the same
    /// [`Inbound::event`](crate::chat::Inbound::event) was kept before (a redelivery).
    async fn keep(&self, inbound: &crate::chat::Inbound) -> Result<Option<i64>, StoreError>;
    /// The event was handled.
    async fn done(&self, id: i64) -> Result<(), StoreError>;
    /// Forgets events handled long ago (kept a while to recognise a redelivery).
    async fn forget_handled(&self) -> Result<(), StoreError>;
    /// The events kept and not yet handled, oldest first.
    async fn pending(&self) -> Result<Vec<(i64, crate::chat::Inbound)>, StoreError>;
}

/// A chat taken by [`Shared::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub epoch: i64,
    /// Another planbot held it before (dead or paused past its lease): a turn it was running is
    /// cut off.
    pub from_another: bool,
}

/// A store several planbots share (PostgreSQL): each chat is served by the one planbot that holds
/// its lease, and the events of a chat another planbot holds are left to it (it is woken).
#[async_trait]
pub trait Shared: Inbox {
    /// Takes or renews the chat's lease; `None` while another planbot holds it.
    async fn acquire(&self, chat: &ChatKey) -> Result<Option<Taken>, StoreError>;
    /// Renews every lease held; returns the chats lost to another planbot.
    async fn renew(&self) -> Result<Vec<ChatKey>, StoreError>;
    /// Gives an idle chat's lease back.
    async fn release(&self, chat: &ChatKey) -> Result<(), StoreError>;
    /// The chat's kept events not yet handled, numbered above `after`, oldest first.
    async fn pull(
        &self,
        chat: &ChatKey,
        after: i64,
    ) -> Result<Vec<(i64, crate::chat::Inbound)>, StoreError>;
    /// The chats with kept events not yet handled.
    async fn waiting(&self) -> Result<Vec<ChatKey>, StoreError>;
    /// The chats of events kept from now on, by whichever planbot kept them.
    async fn wake_ups(&self) -> Result<tokio::sync::mpsc::Receiver<ChatKey>, StoreError>;
    /// How long a lease lasts unless renewed.
    fn lease(&self) -> std::time::Duration;
    /// Whether this planbot still holds the chat, as far as it knows (a refused write or a
    /// failed renewal tells it otherwise).
    fn holds(&self, chat: &ChatKey) -> bool;
    /// The leases in force whose key starts with `prefix` (`discord-shard:`), each with whether
    /// this planbot holds it.
    async fn leases(&self, prefix: &str) -> Result<Vec<(ChatKey, bool)>, StoreError>;
    /// Records audit lines where every replica's are (`planbot_audit`).
    async fn record(&self, lines: &[crate::audit::AuditLine]) -> Result<(), StoreError>;
    /// What each `adapter:user` spent since `since`, by every replica.
    async fn spent_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::HashMap<String, f64>, StoreError>;
}

/// The store's in-memory twin: the same behaviour without a disk, for tests.
#[derive(Default)]
pub struct MemoryStore {
    sessions: std::sync::Mutex<BTreeMap<ChatKey, SessionEntry>>,
}

impl MemoryStore {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<ChatKey, SessionEntry>> {
        self.sessions.locked()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        Ok(self.sessions().get(chat).cloned())
    }

    async fn put(&self, chat: &ChatKey, entry: SessionEntry) -> Result<(), StoreError> {
        self.sessions().insert(chat.clone(), entry);
        Ok(())
    }

    async fn remove(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        Ok(self.sessions().remove(chat))
    }

    async fn all(&self) -> Result<Vec<(ChatKey, SessionEntry)>, StoreError> {
        Ok(self
            .sessions()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
