//! What Telegram's updates mean: messages (an album's together) and button presses become
//! [`Inbound`] events for the router. Shared by long polling and the webhook.

use std::sync::Arc;
use std::time::Duration;

use teloxide::prelude::Requester;
use teloxide::types::{BotCommand, CallbackQuery, Message, Update, UpdateKind};
use tokio_util::sync::CancellationToken;

use super::{ADAPTER, TelegramOutbound};
use crate::chat::{ChatKey, FileRef, Inbound, InboundKind, Offer};
use crate::commands::COMMANDS;
use crate::router::Router;

/// Turns updates into the router's events.
pub struct Updates {
    pub(super) outbound: Arc<TelegramOutbound>,
    router: Router,
    /// The bot's username, to tell a command meant for another bot.
    username: String,
}

impl Updates {
    /// Introduces planbot to Telegram (who it is, its command menu) and tells the chats whose
    /// turn a stop cut off; `None` when `shutdown` came first.
    pub async fn start(
        outbound: Arc<TelegramOutbound>,
        router: Router,
        shutdown: &CancellationToken,
    ) -> Result<Option<Updates>, String> {
        let bot = outbound.bot.clone();
        let me = tokio::select! {
            me = bot.get_me() => me.map_err(|e| format!("Telegram getMe failed: {}", outbound.redact(&e)))?,
            _ = shutdown.cancelled() => return Ok(None),
        };
        let username = me.username.clone().unwrap_or_default();
        tracing::info!(bot = %username, "Telegram front end started");
        let commands = COMMANDS
            .iter()
            .map(|spec| BotCommand::new(spec.name, spec.menu));
        if let Err(e) = bot.set_my_commands(commands).await {
            tracing::warn!(error = %outbound.redact(&e), "could not register the command menu");
        }
        router.announce_interrupted(ADAPTER).await;
        router.handle_kept(ADAPTER).await;
        Ok(Some(Updates {
            outbound,
            router,
            username,
        }))
    }

    /// Hands one item to the router.
    pub async fn handle(&self, item: Item) {
        match item {
            Item::Messages(messages) => self.on_message(&messages).await,
            Item::Callback(query) => self.on_callback(*query).await,
        }
    }

    /// One message, or the messages of one album.
    async fn on_message(&self, messages: &[Message]) {
        let Some(message) = messages.first() else {
            return;
        };
        let Some(from) = message.from.as_ref() else {
            return;
        };
        if from.is_bot {
            return;
        }
        let files: Vec<FileRef> = messages.iter().filter_map(file_of).collect();
        if !files.is_empty() {
            let caption = messages
                .iter()
                .find_map(|m| m.caption().filter(|c| !c.trim().is_empty()))
                .unwrap_or("")
                .to_string();
            let inbound = Inbound {
                kind: InboundKind::Files { files, caption },
                event: Some(message_event(message)),
                ..Inbound::from_text(
                    chat_key(message),
                    &from.id.0.to_string(),
                    message.chat.is_private(),
                    "",
                )
            };
            self.router.handle(inbound).await;
            return;
        }
        let Some(text) = message.text().or_else(|| message.caption()) else {
            return;
        };
        // A command addressed to another bot in a group is not ours.
        if let Some(head) = text
            .strip_prefix('/')
            .and_then(|t| t.split_whitespace().next())
            && let Some((_, bot)) = head.split_once('@')
            && !bot.eq_ignore_ascii_case(&self.username)
        {
            return;
        }
        let chat = chat_key(message);
        let inbound = Inbound {
            event: Some(message_event(message)),
            ..Inbound::from_text(
                chat,
                &from.id.0.to_string(),
                message.chat.is_private(),
                text,
            )
        };
        self.router.handle(inbound).await;
    }

    async fn on_callback(&self, query: CallbackQuery) {
        let Some(message) = query.message.as_ref() else {
            let _ = self
                .outbound
                .bot
                .answer_callback_query(query.id.clone())
                .await;
            return;
        };
        let chat = match message {
            teloxide::types::MaybeInaccessibleMessage::Regular(m) => chat_key(m),
            other => ChatKey::new(ADAPTER, other.chat().id.0.to_string()),
        };
        let parsed = query.data.as_deref().and_then(Offer::parse_payload);
        let Some((action, revision)) = parsed else {
            let _ = self
                .outbound
                .answer(
                    &chat,
                    &query.id.0,
                    crate::conversation::copy::FOREIGN_BUTTON,
                )
                .await;
            return;
        };
        let inbound = Inbound {
            chat,
            user: query.from.id.0.to_string(),
            private: message.chat().is_private(),
            kind: InboundKind::Button { action, revision },
            interaction: Some(query.id.0.clone()),
            membership: None,
            event: Some(format!("telegram-callback:{}", query.id.0)),
        };
        self.router.handle(inbound).await;
    }
}

/// How long an album that ends a batch is given for the rest of its files to arrive.
pub(super) const ALBUM_WAIT: Duration = Duration::from_millis(700);

/// What one or more updates amount to.
pub(super) enum Item {
    /// A message, or all the messages of one album in the batch.
    Messages(Vec<Message>),
    Callback(Box<CallbackQuery>),
}

/// The album (chat and media group) whose file ends the batch, and where its first file is.
pub(super) fn trailing_album(updates: &[Update]) -> Option<((i64, String), usize)> {
    let album = |u: &Update| match &u.kind {
        UpdateKind::Message(m) => m.media_group_id().map(|g| (m.chat.id.0, g.0.clone())),
        _ => None,
    };
    let last = album(updates.last()?)?;
    let first = updates
        .iter()
        .position(|u| album(u).as_ref() == Some(&last))?;
    Some((last, first))
}

/// The batch's updates in order, each album's messages together where its first one was.
pub(super) fn gather(updates: Vec<Update>) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut albums: std::collections::HashMap<(i64, String), usize> = Default::default();
    for update in updates {
        match update.kind {
            UpdateKind::Message(message) => {
                let album = message
                    .media_group_id()
                    .map(|g| (message.chat.id.0, g.0.clone()));
                if let Some(album) = album {
                    if let Some(&i) = albums.get(&album)
                        && let Some(Item::Messages(messages)) = items.get_mut(i)
                    {
                        messages.push(message);
                        continue;
                    }
                    albums.insert(album, items.len());
                }
                items.push(Item::Messages(vec![message]));
            }
            UpdateKind::CallbackQuery(query) => items.push(Item::Callback(Box::new(query))),
            _ => {}
        }
    }
    items
}

/// A file's size as Telegram stated it (teloxide reads an absent one as `u32::MAX`).
pub(super) fn known_size(size: u32) -> Option<u64> {
    (size != u32::MAX).then_some(u64::from(size))
}

/// The file a message carries: a document, or a photo's largest size.
fn file_of(message: &Message) -> Option<FileRef> {
    let size = known_size;
    if let Some(doc) = message.document() {
        return Some(FileRef {
            id: doc.file.id.0.clone(),
            name: doc.file_name.clone(),
            mime: doc.mime_type.as_ref().map(|m| m.essence_str().to_string()),
            size: size(doc.file.size),
        });
    }
    let largest = message
        .photo()?
        .iter()
        .max_by_key(|p| u64::from(p.width) * u64::from(p.height))?;
    Some(FileRef {
        id: largest.file.id.0.clone(),
        name: None,
        mime: Some("image/jpeg".into()),
        size: size(largest.file.size),
    })
}

/// A message's id as an event: message ids are unique within a chat (an album's first file
/// stands for the album).
fn message_event(message: &Message) -> String {
    format!("telegram-message:{}:{}", message.chat.id.0, message.id.0)
}

fn chat_key(message: &Message) -> ChatKey {
    match message.thread_id.filter(|_| message.is_topic_message) {
        Some(thread) => ChatKey::new(ADAPTER, format!("{}:{}", message.chat.id.0, thread.0.0)),
        None => ChatKey::new(ADAPTER, message.chat.id.0.to_string()),
    }
}
