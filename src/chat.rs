//! The platform-neutral vocabulary every front end speaks: a chat's key, what arrives
//! ([`Inbound`]), what goes out ([`Outgoing`], with [`Offer`]s as buttons) and the one trait a
//! front end implements to send it ([`Outbound`]). No platform type appears here or behind it.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A chat: `adapter:channel`, the key of its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChatKey {
    pub adapter: String,
    pub channel: String,
}

impl ChatKey {
    pub fn new(adapter: impl Into<String>, channel: impl Into<String>) -> ChatKey {
        ChatKey {
            adapter: adapter.into(),
            channel: channel.into(),
        }
    }
}

impl fmt::Display for ChatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.adapter, self.channel)
    }
}

/// What a button or command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Advance,
    Finalize,
    Cancel,
    /// Lifts a pause of the circuit breaker.
    Resume,
    /// Answers the plan's question: let Claude make this one call.
    AllowOnce,
    /// Answers the plan's question: allow calls like it (its domain) for the rest of the plan.
    AllowForPlan,
    /// Answers the plan's question: refuse the call.
    Deny,
}

impl Action {
    /// Short code for button payloads.
    pub fn code(self) -> &'static str {
        match self {
            Action::Advance => "adv",
            Action::Finalize => "fin",
            Action::Cancel => "can",
            Action::Resume => "res",
            Action::AllowOnce => "aon",
            Action::AllowForPlan => "apl",
            Action::Deny => "den",
        }
    }

    pub fn from_code(code: &str) -> Option<Action> {
        match code {
            "adv" => Some(Action::Advance),
            "fin" => Some(Action::Finalize),
            "can" => Some(Action::Cancel),
            "res" => Some(Action::Resume),
            "aon" => Some(Action::AllowOnce),
            "apl" => Some(Action::AllowForPlan),
            "den" => Some(Action::Deny),
            _ => None,
        }
    }
}

/// A button: an action at a revision of the chat's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub label: String,
    pub action: Action,
    pub revision: u64,
}

impl Offer {
    /// The payload a front end puts in its button, e.g. `adv:12` (well within 64 bytes).
    pub fn payload(&self) -> String {
        format!("{}:{}", self.action.code(), self.revision)
    }

    /// Reads a payload back.
    pub fn parse_payload(payload: &str) -> Option<(Action, u64)> {
        let (code, revision) = payload.split_once(':')?;
        Some((Action::from_code(code)?, revision.parse().ok()?))
    }
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboundKind {
    /// `/name args`, the name without slash or `@bot` suffix, lower-cased.
    Command {
        name: String,
        args: String,
    },
    Text(String),
    Button {
        action: Action,
        revision: u64,
    },
    /// planbot's own: the question at this revision went unanswered too long.
    QuestionExpired {
        revision: u64,
    },
    /// Files sent in one message (a Telegram album, several Discord attachments), with the
    /// message's caption (may be empty).
    Files {
        files: Vec<FileRef>,
        caption: String,
    },
}

/// A file someone sent, as its front end can fetch it ([`Outbound::fetch`]). Nothing is
/// downloaded until the sender is admitted and a plan takes the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The front end's handle for it: a Telegram file id, a Discord attachment URL, a path.
    pub id: String,
    /// The name the sender gave it (a photo has none). Untrusted: never used as a path as is.
    pub name: Option<String>,
    pub mime: Option<String>,
    /// The size the platform reports, checked again while downloading.
    pub size: Option<u64>,
}

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Larger than the limit (`size` where the platform stated it).
    #[error("larger than the limit")]
    TooLarge { size: Option<u64> },
    #[error("{0}")]
    Failed(String),
}

/// One event from a front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub chat: ChatKey,
    /// The sender's platform id.
    pub user: String,
    /// A one-to-one chat (plain text there gets a hint when nothing is being planned).
    pub private: bool,
    pub kind: InboundKind,
    /// An opaque token of the front end (a callback or interaction id) for an ephemeral answer.
    pub interaction: Option<String>,
    /// The community the sender wrote from, where the platform has one (a Discord guild).
    pub membership: Option<Membership>,
    /// The platform's id of the event (a message, a press), by which one delivered twice is
    /// handled once; `None` where the front end has none (the console).
    #[serde(default)]
    pub event: Option<String>,
}

/// A sender's place in a community, for narrowing access to guilds and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub guild: String,
    pub roles: Vec<String>,
}

impl Inbound {
    /// Parses a line of chat text: `/command args` or plain text.
    pub fn from_text(chat: ChatKey, user: &str, private: bool, text: &str) -> Inbound {
        Inbound {
            chat,
            user: user.to_string(),
            private,
            kind: parse_text(text),
            interaction: None,
            membership: None,
            event: None,
        }
    }
}

/// `/plan@mybot slug idea` → command `plan`, args `slug idea`.
pub fn parse_text(text: &str) -> InboundKind {
    let trimmed = text.trim_start();
    if let Some(rest) = trimmed.strip_prefix('/') {
        let (head, args) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim()),
            None => (rest, ""),
        };
        let name = head.split('@').next().unwrap_or("").to_ascii_lowercase();
        if !name.is_empty() {
            return InboundKind::Command {
                name,
                args: args.to_string(),
            };
        }
    }
    InboundKind::Text(text.to_string())
}

/// How a message is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The "working" message of a running turn, edited as it goes.
    Progress,
    /// A reply that ends a turn, or the answer to a command.
    Reply,
    /// A short note answering a button press (a front end may show it ephemerally).
    Ephemeral,
}

/// A file to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A message to send or to replace an earlier one with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub kind: MessageKind,
    /// Markdown.
    pub text: String,
    pub actions: Vec<Offer>,
    pub attachment: Option<Attachment>,
    /// The inbound's interaction token, for ephemeral answers.
    pub interaction: Option<String>,
}

impl Outgoing {
    pub fn reply(text: impl Into<String>) -> Outgoing {
        Outgoing {
            kind: MessageKind::Reply,
            text: text.into(),
            actions: Vec::new(),
            attachment: None,
            interaction: None,
        }
    }

    /// An answer to `inbound`: ephemeral where the front end has an interaction to answer (a
    /// button press), an ordinary reply otherwise.
    pub fn answer(inbound: &Inbound, text: impl Into<String>) -> Outgoing {
        let mut message = Outgoing::reply(text);
        if inbound.interaction.is_some() {
            message.kind = MessageKind::Ephemeral;
            message.interaction = inbound.interaction.clone();
        }
        message
    }

    pub fn with_actions(mut self, actions: Vec<Offer>) -> Outgoing {
        self.actions = actions;
        self
    }
}

/// A sent message, as the front end identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef(pub String);

/// Why a front end could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The platform could not be reached, or failed on its side, after the lane's retries.
    #[error("network: {0}")]
    Network(String),
    /// Still rate-limited once the lane had waited what it may.
    #[error("rate-limited: {0}")]
    RateLimited(String),
    /// The platform refused the call (a bad request, a forbidden chat, nothing to send).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The chat or message named is not one of this front end's.
    #[error("bad target: {0}")]
    BadTarget(String),
}

/// How the router talks back; each front end implements it.
#[async_trait]
pub trait Outbound: Send + Sync {
    /// Sends a message.
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError>;
    /// Replaces an earlier message (progress edits, and the reply that ends a turn).
    async fn edit(
        &self,
        chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError>;
    /// Removes the buttons of a message that is no longer current.
    async fn withdraw_actions(&self, _chat: &ChatKey, _id: &MessageRef) -> Result<(), SendError> {
        Ok(())
    }
    /// Takes a message away (a progress message once the answer is there).
    async fn delete(&self, _chat: &ChatKey, _id: &MessageRef) -> Result<(), SendError> {
        Ok(())
    }
    /// Model text as it is written, for front ends that show it live.
    async fn stream_text(&self, _chat: &ChatKey, _delta: &str) {}
    /// Downloads a file someone sent, refusing one over `limit` bytes (by its stated size, and
    /// again as it arrives).
    async fn fetch(&self, _file: &FileRef, _limit: u64) -> Result<Vec<u8>, FetchError> {
        Err(FetchError::Failed(
            "this front end does not take files".into(),
        ))
    }
    /// A "typing" indicator while a turn runs.
    async fn typing(&self, _chat: &ChatKey) {}
}
