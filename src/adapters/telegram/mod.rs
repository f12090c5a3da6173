//! The Telegram front end (teloxide, long polling). Translation only: updates become
//! [`Inbound`] events, [`Outgoing`] messages become Bot API calls.
//!
//! Every call to a chat goes through that chat's lane ([`super::lane`]): one call at a time,
//! paced under Telegram's flood limits, and a `429 retry_after` keeps the lane shut for its window.
//! Replies are rendered from markdown to Telegram HTML, split under the message limit, and resent
//! as plain text if Telegram still rejects the entities. Update ids already handled are recorded
//! durably before they are handled, so a restart never answers a message twice.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use teloxide::net::Download;
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageReplyMarkupSetters, EditMessageTextSetters,
    SendDocumentSetters, SendMessageSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    CallbackQueryId, ChatAction, ChatId, FileId, InlineKeyboardButton, InlineKeyboardMarkup,
    InputFile, LinkPreviewOptions, MessageId, ParseMode, ThreadId,
};
use teloxide::{ApiError, Bot, RequestError};

/// Every text goes out with link previews off: Telegram would otherwise fetch any URL the agent
/// put in a reply, a way to send data out.
const NO_PREVIEW: LinkPreviewOptions = LinkPreviewOptions {
    is_disabled: true,
    url: None,
    prefer_small_media: false,
    prefer_large_media: false,
    show_above_text: false,
};

mod poller;
mod updates;
mod webhook;

pub use poller::Poller;
pub use webhook::Webhook;

mod wire;

use wire::{is_group, keyboard, message_id, parts_of, reqwest_url, target, verdict};

use super::lane::{Call, Lanes, Pace, Pacing, Recent, Retry, Verdict};
use super::render::{reply_parts, split_markdown, telegram_html, utf16_len};
use crate::chat::{
    ChatKey, FetchError, FileRef, MessageKind, MessageRef, Offer, Outbound, Outgoing, SendError,
};
use crate::config::Secret;

pub const ADAPTER: &str = "telegram";
/// Under Telegram's 4096 (counted on the HTML, which is longer than the text Telegram counts).
const MESSAGE_LIMIT: usize = 4000;
/// A reply longer than this many messages goes as a `.md` document with a summary.
const MAX_PARTS: usize = 3;
/// Telegram's limits, kept with a margin: about one message a second in a chat (short bursts
/// allowed), 20 a minute in a group, about 30 a second in all.
const PACING: Pacing = Pacing {
    calls: Pace {
        burst: 4,
        every: Duration::from_millis(300),
    },
    sends: Pace {
        burst: 3,
        every: Duration::from_secs(1),
    },
    group_sends: Some(Pace {
        burst: 3,
        every: Duration::from_millis(3_600),
    }),
    all_sends: Some(Pace {
        burst: 20,
        every: Duration::from_micros(35_715),
    }),
};
/// What is remembered about messages sent (button holders, progress texts, answered presses).
const REMEMBERED: usize = 4096;
/// "typing" lasts about 5 s in Telegram clients.
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// The long-polling timeout; teloxide's HTTP client waits 17 s.
pub(crate) const POLL_SECS: u32 = 10;

/// A message part: the HTML to send and the plain text to fall back to.
struct Part {
    html: String,
    plain: String,
}

/// Telegram's side of [`Outbound`].
pub struct TelegramOutbound {
    bot: Bot,
    token: Secret,
    lanes: Lanes<i64>,
    /// Callback queries already answered (each may be answered once).
    answered: Recent<String, ()>,
    /// For a message the router knows, the message of the same reply that carries the buttons.
    keyboards: Recent<(i64, i32), i32>,
    /// What each progress message shows, so that an edit never repeats it.
    shown: Recent<(i64, i32), String>,
}

impl TelegramOutbound {
    /// `share` planbots send for this bot (replicas, `PLANBOT_REPLICAS`): Telegram's limit on
    /// messages to all chats together is divided among them.
    pub fn new(token: Secret, api_url: &str, share: u32) -> Result<Arc<TelegramOutbound>, String> {
        let url = reqwest_url(api_url)?;
        let bot = Bot::new(token.expose()).set_api_url(url);
        let mut pacing = PACING;
        pacing.all_sends = PACING.all_sends.map(|all| all.shared_by(share));
        Ok(Arc::new(TelegramOutbound {
            bot,
            token,
            lanes: Lanes::new(ADAPTER, pacing),
            answered: Recent::new(REMEMBERED),
            keyboards: Recent::new(REMEMBERED),
            shown: Recent::new(REMEMBERED),
        }))
    }

    /// An error as text with the token taken out (it is part of every request URL).
    fn redact(&self, error: &RequestError) -> String {
        error.to_string().replace(self.token.expose(), "***")
    }

    /// Makes one call in the chat's lane, obeying 429 windows and retrying network failures.
    async fn call<T, F, Fut>(
        &self,
        chat: ChatId,
        kind: Call,
        what: &str,
        make: F,
    ) -> Result<T, RequestError>
    where
        F: FnMut() -> Fut,
        Fut: IntoFuture<Output = Result<T, RequestError>>,
    {
        let result = self
            .lanes
            .call(&chat.0, is_group(chat), kind, what, make, verdict)
            .await;
        if let Err(e) = &result {
            tracing::warn!(chat = chat.0, what, error = %self.redact(e), "Telegram call failed");
        }
        result
    }

    fn send_error(&self, e: &RequestError) -> SendError {
        let text = self.redact(e);
        match e {
            RequestError::RetryAfter(_) => SendError::RateLimited(text),
            RequestError::Api(_) => SendError::Rejected(text),
            _ => SendError::Network(text),
        }
    }

    /// Sends (or, for the first part, edits into `edit`) the parts of a reply; the buttons go
    /// under the last part. Returns the first message's id.
    async fn post(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        parts: Vec<Part>,
        markup: Option<InlineKeyboardMarkup>,
        edit: Option<MessageId>,
    ) -> Result<(MessageId, MessageId), SendError> {
        let count = parts.len();
        let mut first = None;
        let mut last = None;
        for (i, part) in parts.into_iter().enumerate() {
            let buttons = if i + 1 == count { markup.clone() } else { None };
            let id = match (i, edit) {
                (0, Some(id)) => {
                    self.edit_part(chat, id, &part, buttons).await?;
                    id
                }
                _ => self.send_part(chat, thread, &part, buttons).await?,
            };
            first.get_or_insert(id);
            last = Some(id);
        }
        match (first, last) {
            (Some(first), Some(last)) => Ok((first, last)),
            _ => Err(SendError::Rejected("nothing to send".into())),
        }
    }

    /// A `sendMessage` of `text`, as HTML or plain.
    fn send_request(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        text: &str,
        html: bool,
        markup: &Option<InlineKeyboardMarkup>,
    ) -> <Bot as Requester>::SendMessage {
        let mut request = self
            .bot
            .send_message(chat, text.to_string())
            .link_preview_options(NO_PREVIEW);
        if html {
            request = request.parse_mode(ParseMode::Html);
        }
        if let Some(thread) = thread {
            request = request.message_thread_id(thread);
        }
        if let Some(markup) = markup.clone() {
            request = request.reply_markup(markup);
        }
        request
    }

    async fn send_part(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        part: &Part,
        markup: Option<InlineKeyboardMarkup>,
    ) -> Result<MessageId, SendError> {
        let mut result = self
            .call(chat, Call::Send, "sendMessage", || {
                self.send_request(chat, thread, &part.html, true, &markup)
            })
            .await;
        if let Err(RequestError::Api(ApiError::CantParseEntities(_))) = result {
            // The HTML was refused after all: the same text, plain.
            result = self
                .call(chat, Call::Send, "sendMessage", || {
                    self.send_request(chat, thread, &part.plain, false, &markup)
                })
                .await;
        }
        result.map(|m| m.id).map_err(|e| self.send_error(&e))
    }

    async fn edit_part(
        &self,
        chat: ChatId,
        id: MessageId,
        part: &Part,
        markup: Option<InlineKeyboardMarkup>,
    ) -> Result<(), SendError> {
        let request = |text: &str, html: bool| {
            let mut request = self
                .bot
                .edit_message_text(chat, id, text.to_string())
                .link_preview_options(NO_PREVIEW);
            if html {
                request = request.parse_mode(ParseMode::Html);
            }
            if let Some(markup) = markup.clone() {
                request = request.reply_markup(markup);
            }
            request
        };
        let mut result = self
            .call(chat, Call::Other, "editMessageText", || {
                request(&part.html, true)
            })
            .await;
        if let Err(RequestError::Api(ApiError::CantParseEntities(_))) = result {
            result = self
                .call(chat, Call::Other, "editMessageText", || {
                    request(&part.plain, false)
                })
                .await;
        }
        match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.send_error(&e)),
        }
    }

    async fn send_document(
        &self,
        chat: ChatId,
        thread: Option<ThreadId>,
        name: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) -> Result<MessageId, SendError> {
        self.call(chat, Call::Send, "sendDocument", || {
            let file = InputFile::memory(bytes.to_vec()).file_name(name.to_string());
            let mut request = self.bot.send_document(chat, file);
            if let Some(thread) = thread {
                request = request.message_thread_id(thread);
            }
            if let Some(caption) = caption {
                request = request.caption(caption.to_string());
            }
            request
        })
        .await
        .map(|m| m.id)
        .map_err(|e| self.send_error(&e))
    }

    /// Delivers a reply, into the message `edit` if given. Returns the id the router will know.
    async fn deliver(
        &self,
        chat: &ChatKey,
        message: &Outgoing,
        edit: Option<MessageId>,
    ) -> Result<MessageId, SendError> {
        let (chat_id, thread) = target(chat)?;
        let markup = (!message.actions.is_empty()).then(|| keyboard(&message.actions));
        let (parts, as_file) = reply_parts(&message.text, MAX_PARTS, parts_of);
        let result = if parts.is_empty() {
            None
        } else {
            Some(self.post(chat_id, thread, parts, markup, edit).await?)
        };
        if as_file {
            self.send_document(chat_id, thread, "reply.md", message.text.as_bytes(), None)
                .await?;
        }
        let mut first = result.map(|(first, _)| first);
        if let Some(file) = &message.attachment {
            let id = self
                .send_document(chat_id, thread, &file.name, &file.bytes, None)
                .await?;
            first.get_or_insert(id);
        }
        let first = first.ok_or_else(|| SendError::Rejected("empty message".into()))?;
        if let Some((_, last)) = result
            && !message.actions.is_empty()
        {
            self.keyboards.insert((chat_id.0, first.0), last.0);
        }
        Ok(first)
    }

    /// Answers a button press (once); a note for an already answered press goes to the chat.
    async fn answer(&self, chat: &ChatKey, id: &str, text: &str) -> Result<(), SendError> {
        let first = self.answered.insert(id.to_string(), ());
        let (chat_id, _) = target(chat)?;
        if first {
            let query = CallbackQueryId(id.to_string());
            self.call(chat_id, Call::Other, "answerCallbackQuery", || {
                let request = self.bot.answer_callback_query(query.clone());
                if text.is_empty() {
                    request
                } else {
                    request.text(text.to_string())
                }
            })
            .await
            .map(|_| ())
            .map_err(|e| self.send_error(&e))
        } else if !text.is_empty() {
            self.deliver(chat, &Outgoing::reply(text), None)
                .await
                .map(|_| ())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Outbound for TelegramOutbound {
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        match (message.kind, &message.interaction) {
            (MessageKind::Ephemeral, Some(id)) => {
                self.answer(chat, id, &message.text).await?;
                Ok(MessageRef(String::new()))
            }
            (MessageKind::Progress, _) => {
                let (chat_id, thread) = target(chat)?;
                // Progress is plain text: it carries raw model output, markdown half-written.
                let id = self
                    .call(chat_id, Call::Send, "sendMessage", || {
                        self.send_request(chat_id, thread, &message.text, false, &None)
                    })
                    .await
                    .map_err(|e| self.send_error(&e))?
                    .id;
                self.shown.insert((chat_id.0, id.0), message.text.clone());
                Ok(MessageRef(id.0.to_string()))
            }
            _ => {
                let id = self.deliver(chat, &message, None).await?;
                Ok(MessageRef(id.0.to_string()))
            }
        }
    }

    async fn edit(
        &self,
        chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        let (chat_id, _) = target(chat)?;
        let msg_id = message_id(id)?;
        if message.kind == MessageKind::Progress {
            let unchanged = self.shown.get(&(chat_id.0, msg_id.0)) == Some(message.text.clone());
            if unchanged {
                return Ok(());
            }
            let text = message.text.clone();
            let result = self
                .call(chat_id, Call::Other, "editMessageText", || {
                    self.bot
                        .edit_message_text(chat_id, msg_id, text.clone())
                        .link_preview_options(NO_PREVIEW)
                })
                .await;
            return match result {
                Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => {
                    self.shown.insert((chat_id.0, msg_id.0), message.text);
                    Ok(())
                }
                Err(e) => Err(self.send_error(&e)),
            };
        }
        self.shown.remove(&(chat_id.0, msg_id.0));
        self.deliver(chat, &message, Some(msg_id)).await.map(|_| ())
    }

    async fn withdraw_actions(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        let (chat_id, _) = target(chat)?;
        let msg_id = message_id(id)?;
        let holder = self.keyboards.remove(&(chat_id.0, msg_id.0));
        let Some(holder) = holder else { return Ok(()) };
        let result = self
            .call(chat_id, Call::Other, "editMessageReplyMarkup", || {
                self.bot
                    .edit_message_reply_markup(chat_id, MessageId(holder))
                    .reply_markup(InlineKeyboardMarkup::default())
            })
            .await;
        match result {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.send_error(&e)),
        }
    }

    async fn delete(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        let (chat_id, _) = target(chat)?;
        let msg_id = message_id(id)?;
        self.shown.remove(&(chat_id.0, msg_id.0));
        self.call(chat_id, Call::Other, "deleteMessage", || {
            self.bot.delete_message(chat_id, msg_id)
        })
        .await
        .map(|_| ())
        .map_err(|e| self.send_error(&e))
    }

    async fn fetch(&self, file: &FileRef, limit: u64) -> Result<Vec<u8>, FetchError> {
        let too_large =
            |size: u64| (size > limit).then_some(FetchError::TooLarge { size: Some(size) });
        if let Some(e) = file.size.and_then(too_large) {
            return Err(e);
        }
        let meta = self
            .bot
            .get_file(FileId(file.id.clone()))
            .await
            .map_err(|e| FetchError::Failed(format!("getFile: {}", self.redact(&e))))?;
        if let Some(e) = updates::known_size(meta.size).and_then(too_large) {
            return Err(e);
        }
        // The download URL holds the token: errors are read without it.
        let body = self
            .bot
            .download_file_stream(&meta.path)
            .map(|chunk| chunk.map_err(reqwest::Error::without_url));
        super::read_capped(body, limit).await
    }

    async fn typing(&self, chat: &ChatKey) {
        let Ok((chat_id, _)) = target(chat) else {
            return;
        };
        let chat = chat_id.0;
        self.lanes
            .typing(
                &chat,
                is_group(chat_id),
                TYPING_EVERY,
                || self.bot.send_chat_action(chat_id, ChatAction::Typing),
                verdict,
            )
            .await;
    }
}

#[cfg(test)]
mod tests;
