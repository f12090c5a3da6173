//! `planning.json`: every chat's planning state, owned by one thread, written durably.
//!
//! Every read-modify-write goes through the owner thread in order; it applies a batch of waiting
//! updates, appends the sessions they changed to `planning.json.journal` and syncs it, and only
//! then acknowledges each update. The whole file is written (temp file, fsync, rename, fsync the
//! directory, the previous file kept as `planning.json.bak`) when the journal has grown as large
//! as the file, after [`IDLE_WRITE`] without updates, and on close, so that it is seldom behind;
//! each whole write starts a new generation and a fresh journal, and only the journal of the
//! file's own generation is applied to it when it is read. A failed write rolls the batch back in
//! memory, so what the disk holds and what callers were told always agree.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::chat::ChatKey;
use crate::durable::{sync_dir, write_durably};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::planning::state::{EntryStatus, SessionEntry};

use super::format::{encode_entry, journal_record};
use super::journal::Journal;
use super::*;

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn backup_path(dir: &Path) -> PathBuf {
    dir.join(format!("{STATE_FILE}.bak"))
}

pub(super) fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL_FILE)
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads the state without changing anything on disk (for `planbot sessions` and `check`).
pub fn inspect(dir: &Path) -> Result<(State, LoadReport), StoreError> {
    load(dir, false)
}

/// Loads the state. With `repair`, an unreadable file is moved aside and running entries become
/// interrupted; without, nothing on disk changes.
fn load(dir: &Path, repair: bool) -> Result<(State, LoadReport), StoreError> {
    let path = state_path(dir);
    let mut report = LoadReport::default();
    let mut state = match read_file(&path)? {
        None => match read_backup(dir)? {
            Some(state) => {
                tracing::warn!(path = %path.display(), "planning.json is missing; loaded planning.json.bak");
                report.from_backup = true;
                state
            }
            None => State::default(),
        },
        Some(bytes) => match State::from_bytes(&bytes) {
            Ok(state) => state,
            Err(source @ ParseError::FutureVersion(_)) => {
                return Err(StoreError::Parse { path, source });
            }
            Err(ParseError::Corrupt(problem)) => {
                tracing::error!(path = %path.display(), problem, "planning.json is unreadable");
                report.problem = Some(problem);
                if repair {
                    let aside = dir.join(format!(
                        "{STATE_FILE}.corrupt-{}",
                        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
                    ));
                    fs::rename(&path, &aside).map_err(|source| StoreError::Write {
                        path: aside.clone(),
                        source,
                    })?;
                    sync_dir(dir).map_err(|source| StoreError::Write {
                        path: dir.to_owned(),
                        source,
                    })?;
                    tracing::error!(aside = %aside.display(), "the unreadable planning.json was moved aside, its bytes unchanged");
                    report.moved_aside = Some(aside);
                }
                match read_backup(dir)? {
                    Some(state) => {
                        report.from_backup = true;
                        tracing::warn!("loaded planning.json.bak instead");
                        state
                    }
                    None => State::default(),
                }
            }
        },
    };
    if let Some(journal) = read_file(&journal_path(dir))? {
        report.journaled = state.replay(&journal);
    }
    report.unreadable = state.unreadable.keys().cloned().collect();
    if repair {
        for (key, entry) in state.sessions.iter_mut() {
            if entry.status == EntryStatus::Running {
                entry.status = EntryStatus::Interrupted;
                report.interrupted.push(key.clone());
            }
        }
    }
    report.sessions = state.sessions.len();
    Ok((state, report))
}

fn read_backup(dir: &Path) -> Result<Option<State>, StoreError> {
    let path = backup_path(dir);
    match read_file(&path)? {
        None => Ok(None),
        Some(bytes) => match State::from_bytes(&bytes) {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "planning.json.bak is unreadable too");
                Ok(None)
            }
        },
    }
}

/// Removes the temp files of writers that died mid-write (`.planning.json.tmp-<pid>` and
/// `.planning.json.bak-<pid>`). Only the lock holder calls it, so none is in use.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = [".tmp-", ".bak-"]
            .iter()
            .any(|infix| name.starts_with(&format!(".{STATE_FILE}{infix}")));
        if stale && let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(file = %name, error = %e, "could not remove a stale temp file");
        }
    }
}

/// The lock that makes one planbot per state directory.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let write_err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_err)?;
        // A health check's probe holds the lock for an instant: a start-up that meets one
        // tries again for a moment rather than fail.
        let mut tries = 0;
        let locked = loop {
            match file.try_lock() {
                Err(fs::TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(&text),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(write_err(e)),
        }
        file.set_len(0).map_err(write_err)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        writeln!(
            file,
            "pid {} on {} since {}",
            std::process::id(),
            host.trim(),
            Utc::now().to_rfc3339()
        )
        .map_err(write_err)?;
        Ok(StateLock { _file: file })
    }

    /// Whether the lock is free right now (for `planbot check`): a shared lock taken and let go
    /// at once, which changes nothing in the file (a planbot starting meanwhile waits it out).
    pub fn probe(dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            // No lock file: nobody ever held it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                dir: dir.to_owned(),
                holder: holder(&fs::read_to_string(&path).unwrap_or_default()),
            }),
            Err(fs::TryLockError::Error(source)) => Err(StoreError::Read { path, source }),
        }
    }
}

/// Who holds the lock, as its file says.
fn holder(text: &str) -> String {
    match text.trim() {
        "" => "holder unknown".into(),
        holder => holder.to_string(),
    }
}

/// How often, and how long apart, a start-up tries a lock a probe holds.
const LOCK_TRIES: u32 = 40;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// Changes one entry in place and returns how to answer its caller once the write is done.
type Apply = Box<dyn FnOnce(&mut Option<SessionEntry>) -> Completion + Send>;

enum Request {
    /// Changes one key's entry.
    Update { key: String, apply: Apply },
    /// Reads the whole state as of the requests before it.
    Read(Box<dyn FnOnce(&State) + Send>),
    /// Stops the owner and releases the lock, then answers.
    Close(oneshot::Sender<()>),
}

#[async_trait]
impl SessionStore for Store {
    async fn get(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        Store::get(self, &chat.to_string()).await
    }

    async fn put(&self, chat: &ChatKey, entry: SessionEntry) -> Result<(), StoreError> {
        Store::put(self, &chat.to_string(), entry).await
    }

    async fn remove(&self, chat: &ChatKey) -> Result<Option<SessionEntry>, StoreError> {
        Store::remove(self, &chat.to_string()).await
    }

    async fn all(&self) -> Result<Vec<(ChatKey, SessionEntry)>, StoreError> {
        self.read(|state| {
            state
                .sessions
                .values()
                .map(|e| {
                    (
                        ChatKey::new(e.adapter.clone(), e.channel_id.clone()),
                        e.clone(),
                    )
                })
                .collect()
        })
        .await
    }
}

/// A cheap handle to the store's owner thread.
#[derive(Clone)]
pub struct Store {
    requests: mpsc::Sender<Request>,
    dir: PathBuf,
}

impl Store {
    /// Locks the state directory, loads it (repairing what needs it) and starts the owner.
    pub fn open(dir: &Path) -> Result<(Store, LoadReport), StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let lock = StateLock::acquire(dir)?;
        remove_stale_temp_files(dir);
        let (state, report) = load(dir, true)?;
        let encoded: BTreeMap<String, Vec<u8>> = state
            .sessions
            .iter()
            .map(|(key, entry)| (key.clone(), encode_entry(key, entry)))
            .collect();
        let mut owner = Owner {
            dir: dir.to_owned(),
            state,
            encoded_len: encoded.values().map(|e| e.len() as u64).sum(),
            encoded,
            journal: Journal::open(dir)?,
            _lock: lock,
        };
        // The journal read and the repairs go into the file before anyone is told of them;
        // otherwise a fresh journal starts for the file as it is.
        let written = if report.journaled > 0 || !report.interrupted.is_empty() {
            owner.write_whole()
        } else {
            let generation = owner.state.generation;
            owner.journal.restart(generation)
        };
        written.map_err(|source| StoreError::Write {
            path: state_path(dir),
            source,
        })?;
        let (tx, rx) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("planbot-store".into())
            .spawn(move || owner.run(rx))
            .map_err(|source| StoreError::Write {
                path: dir.to_owned(),
                source,
            })?;
        Ok((
            Store {
                requests: tx,
                dir: dir.to_owned(),
            },
            report,
        ))
    }

    /// Applies `f` to the entry under `key` (`None` if absent; set it to `None` to remove it).
    /// Returns once the change is durable on disk; on a failed write the change is undone.
    pub async fn update<R, F>(&self, key: &str, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Option<SessionEntry>) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, String>>();
        let apply = Box::new(move |slot: &mut Option<SessionEntry>| -> Completion {
            let value = f(slot);
            Box::new(move |written: Result<(), &StoreError>| {
                // The write's own error, without its "could not save to …" (added once below).
                let cause = |e: &StoreError| match e {
                    StoreError::Write { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                let _ = tx.send(written.map(|()| value).map_err(cause));
            })
        });
        self.requests
            .send(Request::Update {
                key: key.to_string(),
                apply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(StoreError::Write {
                path: state_path(&self.dir),
                source: io::Error::other(message),
            }),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Stores `entry` under `key`.
    pub async fn put(&self, key: &str, entry: SessionEntry) -> Result<(), StoreError> {
        self.update(key, move |slot| *slot = Some(entry)).await
    }

    /// Removes `key`; returns what was there.
    pub async fn remove(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        self.update(key, Option::take).await
    }

    /// The entry under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<SessionEntry>, StoreError> {
        let key = key.to_string();
        self.read(move |state| state.sessions.get(&key).cloned())
            .await
    }

    /// Stops the owner after the requests before this one and releases the state lock.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs `f` over the state as of now.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&State) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Read(Box::new(move |state| {
                let _ = tx.send(f(state));
            })))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }
}

/// The journal written whole into the file after this long without an update.
pub const IDLE_WRITE: std::time::Duration = std::time::Duration::from_millis(250);
/// The journal is written into the file once it is as large as the file, or this large.
const JOURNAL_MIN: u64 = 256 * 1024;

/// The owner thread's state.
struct Owner {
    dir: PathBuf,
    state: State,
    /// Each session's encoded form, kept so that a write re-encodes only what changed.
    encoded: BTreeMap<String, Vec<u8>>,
    /// The encoded sessions' size, the file's but for its frame: kept with `encoded`.
    encoded_len: u64,
    journal: Journal,
    _lock: StateLock,
}

/// Most updates applied in one write.
const MAX_BATCH: usize = 256;

impl Owner {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        loop {
            let next = match &timer {
                Ok(timer) if self.journal.has_records() => {
                    let waited =
                        timer.block_on(async { tokio::time::timeout(IDLE_WRITE, rx.recv()).await });
                    match waited {
                        Ok(next) => next,
                        Err(_) => {
                            self.write_whole_logged();
                            continue;
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = next else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if let Some(closed) = self.apply_batch(batch) {
                self.close();
                let _ = closed.send(());
                return;
            }
        }
        self.close();
    }

    /// Writes what the journal holds into the file and releases the lock.
    fn close(mut self) {
        if self.journal.has_records() {
            self.write_whole_logged();
        }
    }

    fn write_whole_logged(&mut self) {
        if let Err(e) = self.write_whole() {
            tracing::error!(error = %e, "writing planning.json whole failed; its journal keeps every change");
        }
    }

    /// Writes the whole state as the next generation, then restarts the journal for it. Once
    /// the file is written, everything is in it: a journal that cannot be restarted is only
    /// marked, so that the next update writes the whole file again.
    fn write_whole(&mut self) -> io::Result<()> {
        // Never reused, even when this write fails: the file may already be renamed into place,
        // and then the journal no longer applies to it, so nothing more is appended until a
        // whole write succeeds.
        self.state.generation += 1;
        self.journal.sound = false;
        write_durably(
            &state_path(&self.dir),
            &self.state.assemble(&self.encoded),
            true,
        )?;
        if let Err(e) = self.journal.restart(self.state.generation) {
            tracing::warn!(error = %e, "could not restart planning.json.journal; the next update writes the file whole");
        }
        Ok(())
    }

    /// Makes the changes to `keys` durable: appended to the journal, or the whole file written
    /// when the journal is due to be folded in (or cannot be trusted).
    fn persist(&mut self, keys: &[String]) -> io::Result<()> {
        let mut records = Vec::new();
        for key in keys {
            records.extend(journal_record(
                key,
                self.encoded.get(key).map(Vec::as_slice),
            ));
        }
        let file_len = self
            .encoded
            .values()
            .map(|e| e.len() as u64 + 2)
            .sum::<u64>();
        let grown = self.journal.len + records.len() as u64 > file_len.max(JOURNAL_MIN);
        if !self.journal.sound || grown {
            return self.write_whole();
        }
        self.journal.append(&records)
    }

    /// Puts or removes one session, keeping its encoded form in step.
    fn set(&mut self, key: &str, entry: Option<SessionEntry>) {
        let replaced = match entry {
            Some(entry) => {
                let encoded = encode_entry(key, &entry);
                self.encoded_len += encoded.len() as u64;
                self.state.sessions.insert(key.to_string(), entry);
                self.encoded.insert(key.to_string(), encoded)
            }
            None => {
                self.state.sessions.remove(key);
                self.encoded.remove(key)
            }
        };
        self.encoded_len -= replaced.map_or(0, |e| e.len() as u64);
    }

    /// Applies a batch in order, makes it durable if anything changed, then answers everyone.
    /// Returns the close request's answer, if the batch ended with one.
    fn apply_batch(&mut self, batch: Vec<Request>) -> Option<oneshot::Sender<()>> {
        let mut close = None;
        let mut undo: Vec<(String, Option<SessionEntry>)> = Vec::new();
        let mut completions: Vec<Completion> = Vec::new();
        for request in batch {
            if close.is_some() {
                // Nothing after a close is served: its caller sees the store as closed.
                continue;
            }
            match request {
                Request::Close(answer) => close = Some(answer),
                Request::Read(f) => f(&self.state),
                Request::Update { key, apply } => {
                    let before = self.state.sessions.get(&key).cloned();
                    let mut slot = before.clone();
                    completions.push(apply(&mut slot));
                    if slot != before {
                        self.set(&key, slot);
                        undo.push((key, before));
                    }
                }
            }
        }
        let mut keys: Vec<String> = undo.iter().map(|(key, _)| key.clone()).collect();
        keys.sort();
        keys.dedup();
        let written = if keys.is_empty() {
            Ok(())
        } else {
            self.persist(&keys).map_err(|source| StoreError::Write {
                path: state_path(&self.dir),
                source,
            })
        };
        if let Err(e) = &written {
            tracing::error!(error = %e, "saving planning.json failed; the last changes are not recorded");
            for (key, before) in undo.into_iter().rev() {
                self.set(&key, before);
            }
        }
        for complete in completions {
            complete(written.as_ref().map(|_| ()));
        }
        close
    }
}
