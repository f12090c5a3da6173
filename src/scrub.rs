//! Nothing secret leaves by a reply: every text a front end sends is scrubbed of the configured
//! secrets' values and of token shapes (a Telegram bot token, an Anthropic key) first, whatever
//! the agent managed to put in it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use regex::Regex;

use crate::chat::{ChatKey, FetchError, FileRef, MessageRef, Outbound, Outgoing, SendError};
use crate::config::Secret;
use crate::sync::Locked;

/// What a scrubbed secret becomes.
pub const REDACTED: &str = "[redacted]";
/// Streamed text held back at most this long while waiting for a word's end.
const HOLD_CHARS: usize = 256;

static TOKEN_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{6,}:[A-Za-z0-9_-]{30,}|sk-ant-[A-Za-z0-9_-]{20,}").expect("a valid pattern")
});

/// Removes secrets from text.
#[derive(Clone, Default)]
pub struct Scrubber {
    values: Vec<Secret>,
}

impl Scrubber {
    /// Scrubs `values` (too short ones would only mangle ordinary text) and the token shapes.
    pub fn new(values: &[Secret]) -> Scrubber {
        let mut values: Vec<Secret> = values
            .iter()
            .filter(|s| s.expose().len() >= 8)
            .cloned()
            .collect();
        // Longest first, so a secret containing another is removed whole.
        values.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        Scrubber { values }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.values {
            if out.contains(secret.expose()) {
                out = out.replace(secret.expose(), REDACTED);
            }
        }
        TOKEN_SHAPES.replace_all(&out, REDACTED).into_owned()
    }

    fn scrub_message(&self, mut message: Outgoing) -> Outgoing {
        message.text = self.scrub(&message.text);
        if let Some(attachment) = &mut message.attachment
            && let Ok(text) = std::str::from_utf8(&attachment.bytes)
        {
            attachment.bytes = self.scrub(text).into_bytes();
        }
        message
    }
}

/// A front end behind the scrubber: what it is given to send is scrubbed first.
pub struct ScrubbedOutbound {
    inner: Arc<dyn Outbound>,
    scrubber: Scrubber,
    /// Streamed text not yet passed on, per chat: a secret split across two deltas must be
    /// whole when it is scrubbed, so text waits for the end of its word.
    pending: Mutex<HashMap<ChatKey, String>>,
}

impl ScrubbedOutbound {
    pub fn wrap(inner: Arc<dyn Outbound>, scrubber: Scrubber) -> Arc<dyn Outbound> {
        Arc::new(ScrubbedOutbound {
            inner,
            scrubber,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn take_pending(&self, chat: &ChatKey) -> String {
        let mut pending = self.pending.locked();
        pending.remove(chat).unwrap_or_default()
    }

    async fn flush(&self, chat: &ChatKey) {
        let rest = self.take_pending(chat);
        if !rest.is_empty() {
            self.inner
                .stream_text(chat, &self.scrubber.scrub(&rest))
                .await;
        }
    }
}

#[async_trait]
impl Outbound for ScrubbedOutbound {
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        self.flush(chat).await;
        self.inner
            .send(chat, self.scrubber.scrub_message(message))
            .await
    }

    async fn edit(
        &self,
        chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        self.flush(chat).await;
        self.inner
            .edit(chat, id, self.scrubber.scrub_message(message))
            .await
    }

    async fn withdraw_actions(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.inner.withdraw_actions(chat, id).await
    }

    async fn delete(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        self.inner.delete(chat, id).await
    }

    async fn stream_text(&self, chat: &ChatKey, delta: &str) {
        let ready = {
            let mut pending = self.pending.locked();
            let buffer = pending.entry(chat.clone()).or_default();
            buffer.push_str(delta);
            let cut = match buffer.rfind(char::is_whitespace) {
                Some(i) => i + buffer[i..].chars().next().map_or(1, char::len_utf8),
                None if buffer.chars().count() > HOLD_CHARS => buffer.len(),
                None => 0,
            };
            let rest = buffer.split_off(cut);
            std::mem::replace(buffer, rest)
        };
        if !ready.is_empty() {
            self.inner
                .stream_text(chat, &self.scrubber.scrub(&ready))
                .await;
        }
    }

    async fn typing(&self, chat: &ChatKey) {
        self.inner.typing(chat).await
    }

    async fn fetch(&self, file: &FileRef, limit: u64) -> Result<Vec<u8>, FetchError> {
        self.inner.fetch(file, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_token_shapes_are_removed() {
        let scrubber = Scrubber::new(&[Secret::new("hunter2-long-secret"), Secret::new("short")]);
        let text = "a hunter2-long-secret, 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 and \
                    sk-ant-api03-abcdefghijklmnopqrstuvwxyz short";
        assert_eq!(
            scrubber.scrub(text),
            "a [redacted], [redacted] and [redacted] short"
        );
        assert_eq!(scrubber.scrub("phone 12345678"), "phone 12345678");
    }
}
