//! The Telegram front end (teloxide, long polling). Translation only: updates become
//! [`Inbound`] events, [`Outgoing`] messages become Bot API calls.
//!
//! Every call to a chat goes through that chat's lane ([`super::lane`]): one call at a time,
//! paced under Telegram's flood limits, and a `429 retry_after` keeps the lane shut for its window.
//! Replies are rendered from markdown to Telegram HTML, split under the message limit, and resent
//! as plain text if Telegram still rejects the entities. Update ids already handled are recorded
//! durably before they are handled, so a restart never answers a message twice.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use teloxide::net::Download;
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageReplyMarkupSetters, EditMessageTextSetters,
    GetUpdatesSetters, SendDocumentSetters, SendMessageSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQuery, CallbackQueryId, ChatAction, ChatId, FileId,
    InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, Message, MessageId,
    ParseMode, ThreadId, Update, UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

/// Every text goes out with link previews off: Telegram would otherwise fetch any URL the agent
/// put in a reply, a way to send data out.
const NO_PREVIEW: LinkPreviewOptions = LinkPreviewOptions {
    is_disabled: true,
    url: None,
    prefer_small_media: false,
    prefer_large_media: false,
    show_above_text: false,
};

use super::lane::{Call, Lanes, Pace, Pacing, Recent, Retry, Verdict};
use super::render::{reply_parts, split_markdown, telegram_html, utf16_len};
use crate::chat::{
    ChatKey, FetchError, FileRef, Inbound, InboundKind, MessageKind, MessageRef, Offer, Outbound,
    Outgoing, SendError,
};
use crate::commands::COMMANDS;
use crate::config::Secret;
use crate::durable::write_durably;
use crate::router::Router;
use crate::sync::Locked;

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
const POLL_SECS: u32 = 10;

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

/// Groups and channels have negative ids.
fn is_group(chat: ChatId) -> bool {
    chat.0 < 0
}

/// What a Bot API result asks of the lane.
fn verdict<T>(result: &Result<T, RequestError>) -> Verdict {
    match result {
        Err(RequestError::RetryAfter(wait)) => Verdict::retry(Retry::After(wait.duration())),
        // A server error arrives as a body that is not the Bot API's JSON (a proxy's error
        // page): as transient as a dropped connection, so the call is made again.
        Err(RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. }) => {
            Verdict::retry(Retry::Backoff)
        }
        _ => Verdict::done(),
    }
}

/// `telegram:<chat_id>` or `telegram:<chat_id>:<thread_id>`.
fn target(chat: &ChatKey) -> Result<(ChatId, Option<ThreadId>), SendError> {
    let mut parts = chat.channel.split(':');
    let id = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(|| SendError(format!("not a Telegram chat: {chat}")))?;
    let thread = parts
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .map(|t| ThreadId(MessageId(t)));
    Ok((ChatId(id), thread))
}

fn message_id(id: &MessageRef) -> Result<MessageId, SendError> {
    id.0.parse::<i32>()
        .map(MessageId)
        .map_err(|_| SendError(format!("not a Telegram message id: {}", id.0)))
}

fn keyboard(actions: &[Offer]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(actions.iter().map(|offer| {
        vec![InlineKeyboardButton::callback(
            offer.label.clone(),
            offer.payload(),
        )]
    }))
}

fn parts_of(markdown: &str) -> Vec<Part> {
    let fits =
        |p: &str| utf16_len(&telegram_html(p)) <= MESSAGE_LIMIT && utf16_len(p) <= MESSAGE_LIMIT;
    split_markdown(markdown, &fits)
        .into_iter()
        .map(|plain| Part {
            html: telegram_html(&plain),
            plain,
        })
        .collect()
}

impl TelegramOutbound {
    pub fn new(token: Secret, api_url: &str) -> Result<Arc<TelegramOutbound>, String> {
        let url = reqwest_url(api_url)?;
        let bot = Bot::new(token.expose()).set_api_url(url);
        Ok(Arc::new(TelegramOutbound {
            bot,
            token,
            lanes: Lanes::new(ADAPTER, PACING),
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
        SendError(self.redact(e))
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
            _ => Err(SendError("nothing to send".into())),
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
        let first = first.ok_or_else(|| SendError("empty message".into()))?;
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

fn reqwest_url(url: &str) -> Result<url::Url, String> {
    url::Url::parse(url).map_err(|e| format!("TELEGRAM_API_URL {url:?}: {e}"))
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
        if let Some(e) = known_size(meta.size).and_then(too_large) {
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

/// The long-polling loop: runs until `shutdown`.
pub struct Poller {
    pub outbound: Arc<TelegramOutbound>,
    pub router: Router,
    /// Where the last handled update id is kept.
    pub offset_file: PathBuf,
}

impl Poller {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let bot = self.outbound.bot.clone();
        let me = tokio::select! {
            me = bot.get_me() => me.map_err(|e| format!("Telegram getMe failed: {}", self.outbound.redact(&e)))?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let username = me.username.clone().unwrap_or_default();
        tracing::info!(bot = %username, "Telegram front end started");
        let commands = COMMANDS
            .iter()
            .map(|spec| BotCommand::new(spec.name, spec.menu));
        if let Err(e) = bot.set_my_commands(commands).await {
            tracing::warn!(error = %self.outbound.redact(&e), "could not register the command menu");
        }
        self.router.announce_interrupted(ADAPTER).await;

        let mut last_done = read_offset(&self.offset_file);
        let offsets = Arc::new(std::sync::Mutex::new(OffsetRecord {
            path: self.offset_file.clone(),
            file: None,
        }));
        let mut failures = 0u32;
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
                    failures = 0;
                    updates
                }
                Err(e) => {
                    failures += 1;
                    let wait = match &e {
                        RequestError::RetryAfter(wait) => wait.duration(),
                        _ => Duration::from_millis(500 * 2u64.pow(failures.min(6))),
                    };
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
            let trailing = trailing_album(&fresh);
            let mut held = None;
            if let Some((album, first)) = trailing
                && waited_for.as_ref() != Some(&album)
            {
                held = Some(fresh.split_off(first));
                waited_for = Some(album);
            }
            let Some(newest) = fresh.iter().map(|u| u.id.0 as i32).max() else {
                if held.is_some() {
                    tokio::select! {
                        _ = tokio::time::sleep(ALBUM_WAIT) => {}
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                }
                continue;
            };
            // The batch is recorded before it is handled: after a crash it is skipped, never
            // answered twice.
            last_done = Some(newest);
            record_offset(&offsets, newest).await;
            for item in gather(fresh) {
                match item {
                    Item::Messages(messages) => self.on_message(&messages, &username).await,
                    Item::Callback(query) => self.on_callback(*query).await,
                }
            }
            if held.is_some() {
                tokio::select! {
                    _ = tokio::time::sleep(ALBUM_WAIT) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }

    /// One message, or the messages of one album.
    async fn on_message(&self, messages: &[Message], username: &str) {
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
            && !bot.eq_ignore_ascii_case(username)
        {
            return;
        }
        let chat = chat_key(message);
        let inbound = Inbound::from_text(
            chat,
            &from.id.0.to_string(),
            message.chat.is_private(),
            text,
        );
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
        };
        self.router.handle(inbound).await;
    }
}

/// How long an album that ends a batch is given for the rest of its files to arrive.
const ALBUM_WAIT: Duration = Duration::from_millis(700);

/// What one or more updates amount to.
enum Item {
    /// A message, or all the messages of one album in the batch.
    Messages(Vec<Message>),
    Callback(Box<CallbackQuery>),
}

/// The album (chat and media group) whose file ends the batch, and where its first file is.
fn trailing_album(updates: &[Update]) -> Option<((i64, String), usize)> {
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
fn gather(updates: Vec<Update>) -> Vec<Item> {
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
fn known_size(size: u32) -> Option<u64> {
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

fn chat_key(message: &Message) -> ChatKey {
    match message.thread_id.filter(|_| message.is_topic_message) {
        Some(thread) => ChatKey::new(ADAPTER, format!("{}:{}", message.chat.id.0, thread.0.0)),
        None => ChatKey::new(ADAPTER, message.chat.id.0.to_string()),
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

    #[test]
    fn chat_keys_and_targets() {
        let (chat, thread) = target(&ChatKey::new(ADAPTER, "-1001:42")).unwrap();
        assert_eq!(
            (chat, thread),
            (ChatId(-1001), Some(ThreadId(MessageId(42))))
        );
        assert!(target(&ChatKey::new(ADAPTER, "nope")).is_err());
    }

    #[test]
    fn long_markdown_becomes_parts_under_the_limit() {
        let block = format!(
            "```python\n{}\n```",
            "print('x' * 80)  # a line of code\n".repeat(300)
        );
        let md = format!(
            "# Plan\n\n{}\n\n{block}\n\nDone <ok> & dusted.",
            "A paragraph of words. ".repeat(150)
        );
        let parts = parts_of(&md);
        assert!(parts.len() >= 3);
        for part in &parts {
            assert!(utf16_len(&part.html) <= MESSAGE_LIMIT);
            assert_eq!(
                part.html.matches("<pre>").count(),
                part.html.matches("</pre>").count()
            );
        }
        assert!(
            parts
                .last()
                .unwrap()
                .html
                .ends_with("Done &lt;ok&gt; &amp; dusted.")
        );
    }
}
