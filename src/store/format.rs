//! The format of `planning.json`: a version and every chat's entry, encoded entry by entry so
//! that a write re-encodes only what changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::planning::state::SessionEntry;

/// The file name inside the state directory.
pub const STATE_FILE: &str = "planning.json";
/// The journal beside it: the updates since `planning.json` was last written whole.
pub const JOURNAL_FILE: &str = "planning.json.journal";
/// The lock held by the one running instance.
pub const LOCK_FILE: &str = "planbot.lock";
/// The format version this build writes.
pub const VERSION: u64 = 1;
/// The whole file in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub sessions: BTreeMap<String, SessionEntry>,
    /// Entries that did not parse: written back unchanged, never dropped.
    pub unreadable: BTreeMap<String, Value>,
    /// Top-level fields of a newer version, kept.
    pub extra: Map<String, Value>,
    /// Counts the times the file was written whole; only the journal of the same generation
    /// applies to it (one left by a write that was cut short is already in the file).
    pub generation: u64,
}

impl State {
    /// The file's bytes: one session per line, so the file reads and diffs well.
    pub fn to_bytes(&self) -> Vec<u8> {
        let encoded: BTreeMap<String, Vec<u8>> = self
            .sessions
            .iter()
            .map(|(key, entry)| (key.clone(), encode_entry(key, entry)))
            .collect();
        self.assemble(&encoded)
    }

    /// The file from already encoded sessions (see [`encode_entry`]), so that an update
    /// re-encodes only what changed.
    pub(super) fn assemble(&self, encoded: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
        let size: usize = encoded.values().map(|e| e.len() + 2).sum();
        let mut out = Vec::with_capacity(size + 64);
        out.extend_from_slice(
            format!(
                "{{\"version\":{VERSION},\"generation\":{},\n\"sessions\":{{",
                self.generation
            )
            .as_bytes(),
        );
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(if first { b"\n" } else { b",\n" });
            out.extend_from_slice(bytes);
            first = false;
        };
        for (key, value) in &self.unreadable {
            if !encoded.contains_key(key) {
                push(&mut out, &encode_pair(key, value));
            }
        }
        for bytes in encoded.values() {
            push(&mut out, bytes);
        }
        out.extend_from_slice(b"\n}");
        for (key, value) in &self.extra {
            out.extend_from_slice(b",\n");
            out.extend_from_slice(&encode_pair(key, value));
        }
        out.extend_from_slice(b"}\n");
        out
    }

    /// Parses a file's bytes. Unreadable entries are kept aside, not fatal.
    pub fn from_bytes(bytes: &[u8]) -> Result<State, ParseError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Corrupt(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(ParseError::Corrupt("the top level is not an object".into()));
        };
        match top.remove("version") {
            Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v > VERSION) => {
                return Err(ParseError::FutureVersion(n.as_u64().unwrap_or_default()));
            }
            other => {
                return Err(ParseError::Corrupt(format!(
                    "unsupported version field {other:?}"
                )));
            }
        }
        let sessions = match top.remove("sessions") {
            Some(Value::Object(sessions)) => sessions,
            None => Map::new(),
            Some(_) => return Err(ParseError::Corrupt("`sessions` is not an object".into())),
        };
        let generation = match top.remove("generation") {
            None => 0,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
            Some(other) => {
                return Err(ParseError::Corrupt(format!(
                    "unsupported generation field {other}"
                )));
            }
        };
        let mut state = State {
            extra: top,
            generation,
            ..State::default()
        };
        for (key, value) in sessions {
            state.set_value(key, value);
        }
        Ok(state)
    }

    /// Sets one session from its stored form; one that does not parse is kept as it is.
    fn set_value(&mut self, key: String, value: Value) {
        self.unreadable.remove(&key);
        match SessionEntry::deserialize(&value) {
            Ok(entry) => {
                self.sessions.insert(key, entry);
            }
            Err(e) => {
                tracing::error!(key, error = %e, "a stored session does not parse; it is kept as it is");
                self.sessions.remove(&key);
                self.unreadable.insert(key, value);
            }
        }
    }

    /// Applies a journal written after this state (a header naming its generation, then one
    /// record per line): its records in order, if it is of this state's generation. A line that
    /// does not parse is a record a crash cut short, never acknowledged, and is passed over. Returns
    /// how many records were applied.
    pub fn replay(&mut self, journal: &[u8]) -> usize {
        let mut lines = journal.split(|b| *b == b'\n');
        let header: Option<Value> = lines.next().and_then(|l| serde_json::from_slice(l).ok());
        let generation = header.as_ref().and_then(|h| h["generation"].as_u64());
        if generation != Some(self.generation) {
            if generation.is_some_and(|g| g > self.generation) {
                tracing::error!(
                    journal = ?generation,
                    file = self.generation,
                    "the journal is newer than planning.json; it was not applied"
                );
            }
            return 0;
        }
        let mut applied = 0;
        for line in lines {
            let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            for (key, value) in record {
                if value.is_null() {
                    self.sessions.remove(&key);
                    self.unreadable.remove(&key);
                } else {
                    self.set_value(key, value);
                }
                applied += 1;
            }
        }
        applied
    }
}

/// The journal's first line, naming the generation of the file it follows.
pub(super) fn journal_header(generation: u64) -> Vec<u8> {
    format!("{{\"generation\":{generation}}}\n").into_bytes()
}

/// One journal record: a session as it now stands (`encoded` by [`encode_entry`]), or its
/// removal.
pub(super) fn journal_record(key: &str, encoded: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![b'{'];
    match encoded {
        Some(pair) => out.extend_from_slice(pair),
        None => out.extend_from_slice(&encode_pair(key, &Value::Null)),
    }
    out.extend_from_slice(b"}\n");
    out
}

/// One session as it stands in the file: `"key":{...}`.
pub(super) fn encode_entry(key: &str, entry: &SessionEntry) -> Vec<u8> {
    let mut out = serde_json::to_vec(key).unwrap_or_default();
    out.push(b':');
    // Serializing a struct of strings, numbers and maps cannot fail.
    let _ = serde_json::to_writer(&mut out, entry);
    out
}

fn encode_pair<T: Serialize>(key: &str, value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(key).unwrap_or_default();
    out.push(b':');
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// Why a state file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not a valid planning.json: {0}")]
    Corrupt(String),
    #[error(
        "planning.json has version {0}, newer than this planbot understands ({VERSION}); upgrade planbot"
    )]
    FutureVersion(u64),
}
