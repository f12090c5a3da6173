//! A fake Telegram Bot API on 127.0.0.1, strict where the real one is: it rejects text over 4096
//! characters, HTML that does not parse, `callback_data` over 64 bytes, edits that change
//! nothing, and calls inside a `retry_after` window; it answers 429 past Telegram's flood limits
//! (see [`flood_check`]); it records callback queries never answered. Every rejection is a
//! fault; a test passes only with none.
//!
//! Errors are 4xx (teloxide waits 10 s after a 5xx). Method names are matched case-insensitively
//! (teloxide sends `SendMessage`, the docs say `sendMessage`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const TOKEN: &str = "123456:TEST-secret-token";
const BOT_ID: i64 = 999;
/// More calls than this to one chat within a second get a 429.
const CALLS_PER_SECOND: usize = 8;
/// Messages to one chat: a bucket of this many, refilled one a second ("avoid more than one
/// message per second in a chat; short bursts are allowed").
const CHAT_BURST: f64 = 5.0;
/// Messages to one group: at most this many in any minute.
const GROUP_PER_MINUTE: usize = 20;
/// Messages to all chats: a bucket of this many, refilled at this many a second.
const ALL_PER_SECOND: f64 = 30.0;
/// The methods that send a message (and count against the message limits).
const SENDS: [&str; 3] = ["sendmessage", "senddocument", "sendphoto"];

/// A message the fake holds.
#[derive(Debug, Clone)]
pub struct Stored {
    pub chat: i64,
    pub id: i64,
    pub text: String,
    pub html: bool,
    pub markup: Value,
    pub document: Option<(String, Vec<u8>)>,
    pub thread: Option<i64>,
}

impl Stored {
    /// `callback_data` of each button.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.markup["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["text"].as_str().unwrap_or("").to_string(),
                    b["callback_data"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    next_update: i64,
    updates: VecDeque<Value>,
    next_message: HashMap<i64, i64>,
    messages: Vec<Stored>,
    calls: Vec<(String, Value)>,
    /// When each of `calls` arrived.
    arrived: Vec<Instant>,
    faults: Vec<String>,
    recent: HashMap<i64, VecDeque<Instant>>,
    /// Per chat: tokens left and when they were counted.
    chat_sends: HashMap<i64, (f64, Instant)>,
    group_sends: HashMap<i64, VecDeque<Instant>>,
    all_sends: Option<(f64, Instant)>,
    blocked_until: HashMap<i64, Instant>,
    /// Callback query id -> answered.
    callbacks: HashMap<String, bool>,
    /// The text each callback query was answered with.
    callback_texts: HashMap<String, String>,
    commands: Option<Value>,
    next_callback: u64,
    /// Chats whose next call gets a 429 (as Telegram does under load), not counted as a fault.
    flood_next: Vec<i64>,
    /// Chats whose next HTML message is refused as unparsable (as Telegram sometimes does with
    /// HTML it should accept), not counted as a fault.
    refuse_html_next: Vec<i64>,
    /// Chats whose next message fails with a 502 from the proxy in front of the Bot API.
    server_error_next: Vec<i64>,
    /// Chats whose next message's connection drops before the answer, the message not sent.
    drop_next: Vec<i64>,
    /// Files people sent, by file id: their bytes and where `getFile` says they are.
    files: HashMap<String, (Vec<u8>, String)>,
    /// The file ids whose bytes were downloaded, in order.
    downloads: Vec<String>,
    /// `getUpdates` calls so far; a waiting one whose number is no longer the latest ends.
    polls: u64,
    /// The webhook set (`url`, `secret_token`), if any.
    webhook: Option<(String, String)>,
}

/// A file a person sends.
pub enum Upload {
    /// A document with its name and type (and the size the message states, when it is not the
    /// real one: `None` states none).
    Document {
        name: String,
        mime: String,
        bytes: Vec<u8>,
        stated_size: Option<Option<u64>>,
    },
    /// A photo: Telegram sends it in several sizes, the largest last.
    Photo(Vec<u8>),
}

/// The most a bot may download through the Bot API.
const DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;

#[derive(Clone)]
pub struct FakeTelegram {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn bad(status: u16, description: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(json!({"ok": false, "error_code": status, "description": description})),
    )
        .into_response()
}

fn chat_json(chat: i64) -> Value {
    if chat > 0 {
        json!({"id": chat, "type": "private", "first_name": "Person"})
    } else {
        json!({"id": chat, "type": "supergroup", "title": "Team", "is_forum": true})
    }
}

fn user_json(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("User{id}")})
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let inner = Arc::new(Mutex::new(Inner {
            next_update: 1000,
            ..Inner::default()
        }));
        let notify = Arc::new(Notify::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeTelegram {
            addr,
            inner,
            notify,
        };
        let app = Router::new()
            .route("/{bot}/{method}", post(handle))
            .route("/file/{bot}/{*path}", get(download))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn push(&self, update: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.next_update += 1;
        let mut update = update;
        update["update_id"] = json!(inner.next_update);
        inner.updates.push_back(update);
        drop(inner);
        self.notify.notify_waiters();
    }

    /// A person writes in a chat (private when `chat > 0`), optionally in a forum topic.
    pub fn message(&self, chat: i64, user: i64, text: &str, thread: Option<i64>) {
        let message = self.text_message(chat, user, text, thread);
        self.push(json!({"message": message}));
    }

    /// A text message from `user` in `chat` (not yet sent), with its command entity.
    fn text_message(&self, chat: i64, user: i64, text: &str, thread: Option<i64>) -> Value {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            let next = inner.next_message.entry(chat).or_insert(0);
            *next += 1;
            *next
        };
        let mut message = json!({"message_id": id, "date": 1_700_000_000, "chat": chat_json(chat),
            "from": user_json(user), "text": text});
        if let Some(thread) = thread {
            message["message_thread_id"] = json!(thread);
            message["is_topic_message"] = json!(true);
        }
        if let Some(command) = text.strip_prefix('/') {
            let len = command
                .split_whitespace()
                .next()
                .map_or(0, |c| c.encode_utf16().count() + 1);
            message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
        }
        message
    }

    /// A person sends files in one message (several make an album, the caption on the first).
    /// Returns the file ids, in order (for a photo, its largest size's).
    pub fn send_files(
        &self,
        chat: i64,
        user: i64,
        uploads: Vec<Upload>,
        caption: &str,
    ) -> Vec<String> {
        let album = uploads.len() > 1;
        let mut ids = Vec::new();
        for (i, upload) in uploads.into_iter().enumerate() {
            let (id, message) = self.file_message(chat, user, upload);
            let mut message = message;
            if i == 0 && !caption.is_empty() {
                message["caption"] = json!(caption);
            }
            if album {
                message["media_group_id"] = json!(format!("album-{chat}-{user}"));
            }
            ids.push(id);
            self.push(json!({"message": message}));
        }
        ids
    }

    /// A message carrying `upload` (not yet sent), and the id of its file.
    pub fn file_message(&self, chat: i64, user: i64, upload: Upload) -> (String, Value) {
        let mut inner = self.inner.lock().unwrap();
        let next = inner.next_message.entry(chat).or_insert(0);
        *next += 1;
        let mut message = json!({"message_id": *next, "date": 1_700_000_000, "chat": chat_json(chat),
            "from": user_json(user)});
        let store = |inner: &mut Inner, bytes: Vec<u8>, ext: &str| {
            let n = inner.files.len() + 1;
            let id = format!("file-{n}");
            let path = format!("files/file_{n}.{ext}");
            let size = bytes.len() as u64;
            inner.files.insert(id.clone(), (bytes, path));
            (id, size)
        };
        let id = match upload {
            Upload::Document {
                name,
                mime,
                bytes,
                stated_size,
            } => {
                let ext = name.rsplit('.').next().unwrap_or("bin").to_string();
                let (id, size) = store(&mut inner, bytes, &ext);
                let mut document = json!({"file_id": id, "file_unique_id": format!("u{id}"),
                    "file_name": name, "mime_type": mime});
                if let Some(stated) = stated_size.unwrap_or(Some(size)) {
                    document["file_size"] = json!(stated);
                }
                message["document"] = document;
                id
            }
            Upload::Photo(bytes) => {
                let (small, small_size) =
                    store(&mut inner, bytes[..bytes.len().min(16)].to_vec(), "jpg");
                let (large, size) = store(&mut inner, bytes, "jpg");
                message["photo"] = json!([
                    {"file_id": small, "file_unique_id": format!("u{small}"), "width": 90, "height": 60, "file_size": small_size},
                    {"file_id": large, "file_unique_id": format!("u{large}"), "width": 1280, "height": 853, "file_size": size},
                ]);
                large
            }
        };
        (id, message)
    }

    /// Pushes a message made by [`FakeTelegram::file_message`].
    pub fn push_message(&self, message: Value) {
        self.push(json!({"message": message}));
    }

    /// The webhook set (`url`, `secret_token`), if any.
    pub fn webhook(&self) -> Option<(String, String)> {
        self.inner.lock().unwrap().webhook.clone()
    }

    /// The next update id and message id, as [`FakeTelegram::message`] would use them, for a
    /// test that delivers updates itself (to a webhook).
    pub fn update(&self, chat: i64, user: i64, text: &str) -> Value {
        let message = self.text_message(chat, user, text, None);
        let mut inner = self.inner.lock().unwrap();
        inner.next_update += 1;
        json!({"update_id": inner.next_update, "message": message})
    }

    /// The file ids whose bytes were downloaded, in order.
    pub fn downloads(&self) -> Vec<String> {
        self.inner.lock().unwrap().downloads.clone()
    }

    /// A person presses a button of a stored message.
    pub fn press(&self, user: i64, message: &Stored, data: &str) -> String {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            inner.next_callback += 1;
            let id = format!("cb{}", inner.next_callback);
            inner.callbacks.insert(id.clone(), false);
            id
        };
        let mut msg = json!({"message_id": message.id, "date": 1_700_000_000, "chat": chat_json(message.chat),
            "from": {"id": BOT_ID, "is_bot": true, "first_name": "planbot", "username": "planbot_test_bot"},
            "text": message.text});
        if !message.markup.is_null() {
            msg["reply_markup"] = message.markup.clone();
        }
        // A message in a forum topic carries it, as Telegram's does.
        if let Some(thread) = message.thread {
            msg["message_thread_id"] = json!(thread);
            msg["is_topic_message"] = json!(true);
        }
        self.push(
            json!({"callback_query": {"id": id, "from": user_json(user), "message": msg,
            "chat_instance": "ci", "data": data}}),
        );
        id
    }

    /// The next call to `chat` is answered 429 with a 2 s `retry_after`.
    pub fn flood_next(&self, chat: i64) {
        self.inner.lock().unwrap().flood_next.push(chat);
    }

    /// The next `sendMessage` to `chat` gets a 502 with an HTML body, as Telegram's front
    /// proxies answer when the Bot API is down for a moment (not a fault).
    pub fn server_error_next(&self, chat: i64) {
        self.inner.lock().unwrap().server_error_next.push(chat);
    }

    /// The connection of the next `sendMessage` to `chat` drops before an answer arrives, and
    /// the message is not sent (not a fault).
    pub fn drop_next(&self, chat: i64) {
        self.inner.lock().unwrap().drop_next.push(chat);
    }

    /// The next HTML message to `chat` is refused with "can't parse entities".
    pub fn refuse_html_next(&self, chat: i64) {
        self.inner.lock().unwrap().refuse_html_next.push(chat);
    }

    pub fn messages(&self, chat: i64) -> Vec<Stored> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.chat == chat)
            .cloned()
            .collect()
    }

    /// Every method called, in order, with its parameters.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Every call with when it arrived (planbot-bench's figures come from it).
    #[allow(dead_code)]
    pub fn timed_calls(&self) -> Vec<(Instant, String, Value)> {
        let inner = self.inner.lock().unwrap();
        let calls = inner.calls.iter().cloned();
        inner
            .arrived
            .iter()
            .copied()
            .zip(calls)
            .map(|(at, (m, p))| (at, m, p))
            .collect()
    }

    pub fn commands(&self) -> Option<Value> {
        self.inner.lock().unwrap().commands.clone()
    }

    /// Everything the fake refused, plus callback queries never answered.
    pub fn faults(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut faults = inner.faults.clone();
        for (id, answered) in &inner.callbacks {
            if !answered {
                faults.push(format!("callback query {id} was never answered"));
            }
        }
        faults
    }

    pub fn callback_answered(&self, id: &str) -> bool {
        self.inner
            .lock()
            .unwrap()
            .callbacks
            .get(id)
            .copied()
            .unwrap_or(false)
    }

    /// The text a callback query was answered with (empty for a silent acknowledgement).
    pub fn callback_text(&self, id: &str) -> Option<String> {
        self.inner.lock().unwrap().callback_texts.get(id).cloned()
    }

    /// Waits (boundedly) until `done` holds over the fake's state.
    pub async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        mut done: impl FnMut(&FakeTelegram) -> bool,
    ) {
        crate::wait::wait_until(
            what,
            secs,
            || done(self),
            || {
                format!(
                    "calls: {:#?}",
                    self.calls().iter().rev().take(12).collect::<Vec<_>>()
                )
            },
        )
        .await
    }
}

/// Parameters of a call: JSON, or multipart form fields (a file as its name and bytes).
async fn params(request: Request) -> (Value, Option<(String, Vec<u8>)>) {
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let body = Bytes::from_request(request, &()).await.unwrap_or_default();
        return (serde_json::from_slice(&body).unwrap_or(json!({})), None);
    }
    let mut form = json!({});
    let mut file = None;
    if let Ok(mut parts) = Multipart::from_request(request, &()).await {
        while let Ok(Some(field)) = parts.next_field().await {
            let name = field.name().unwrap_or("").to_string();
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.unwrap_or_default();
            match filename {
                Some(filename) => file = Some((filename, bytes.to_vec())),
                None => {
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    form[name] = serde_json::from_str(&text).unwrap_or(Value::String(text));
                }
            }
        }
    }
    (form, file)
}

async fn handle(
    State(fake): State<FakeTelegram>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return bad(401, "Unauthorized");
    }
    let method = method.to_ascii_lowercase();
    let (params, file) = params(request).await;
    if method == "getupdates" {
        return get_updates(&fake, &params).await;
    }
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((method.clone(), params.clone()));
    inner.arrived.push(Instant::now());
    let chat = params["chat_id"].as_i64();
    if let Some(chat) = chat
        && let Some(limited) = flood_check(&mut inner, chat, SENDS.contains(&method.as_str()))
    {
        return limited;
    }
    match method.as_str() {
        "getme" => ok(
            json!({"id": BOT_ID, "is_bot": true, "first_name": "planbot", "username": "planbot_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
            "has_main_web_app": false}),
        ),
        "setmycommands" => {
            inner.commands = Some(params["commands"].clone());
            ok(json!(true))
        }
        "sendchataction" => ok(json!(true)),
        "setwebhook" => {
            let url = params["url"].as_str().unwrap_or("").to_string();
            let secret = params["secret_token"].as_str().unwrap_or("").to_string();
            let valid = secret.len() <= 256
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return fault(
                    &mut inner,
                    400,
                    "Bad Request: secret token contains unallowed characters",
                );
            }
            inner.webhook = (!url.is_empty()).then_some((url, secret));
            ok(json!(true))
        }
        "deletewebhook" => {
            inner.webhook = None;
            ok(json!(true))
        }
        "getfile" => {
            let id = params["file_id"].as_str().unwrap_or("");
            let Some((bytes, path)) = inner.files.get(id).cloned() else {
                return fault(&mut inner, 400, "Bad Request: invalid file_id");
            };
            if bytes.len() as u64 > DOWNLOAD_LIMIT {
                return fault(&mut inner, 400, "Bad Request: file is too big");
            }
            ok(
                json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_size": bytes.len(),
                "file_path": path}),
            )
        }
        "sendmessage" => {
            let Some(chat) = chat else {
                return fault(&mut inner, 400, "Bad Request: chat_id is empty");
            };
            let html = params["parse_mode"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case("html"));
            let text = params["text"].as_str().unwrap_or("").to_string();
            if let Some(i) = inner.server_error_next.iter().position(|c| *c == chat) {
                inner.server_error_next.remove(i);
                let page = "<html><head><title>502 Bad Gateway</title></head></html>";
                return (StatusCode::BAD_GATEWAY, page).into_response();
            }
            if let Some(i) = inner.drop_next.iter().position(|c| *c == chat) {
                inner.drop_next.remove(i);
                return dropped_connection();
            }
            if html && let Some(i) = inner.refuse_html_next.iter().position(|c| *c == chat) {
                inner.refuse_html_next.remove(i);
                return bad(
                    400,
                    "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
                );
            }
            if let Err(e) = check_text(&text, html)
                .and_then(|()| check_markup(&params["reply_markup"]))
                .and_then(|()| check_no_preview(&params))
            {
                return fault(&mut inner, 400, &e);
            }
            let next = inner.next_message.entry(chat).or_insert(0);
            *next += 1;
            let stored = Stored {
                chat,
                id: *next,
                text,
                html,
                markup: params["reply_markup"].clone(),
                document: None,
                thread: params["message_thread_id"].as_i64(),
            };
            let json = message_json(&stored);
            inner.messages.push(stored);
            ok(json)
        }
        "editmessagetext" | "editmessagereplymarkup" => {
            let (Some(chat), Some(id)) = (chat, params["message_id"].as_i64()) else {
                return fault(
                    &mut inner,
                    400,
                    "Bad Request: message identifier is not specified",
                );
            };
            let html = params["parse_mode"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case("html"));
            let Some(index) = inner
                .messages
                .iter()
                .position(|m| m.chat == chat && m.id == id)
            else {
                return fault(&mut inner, 400, "Bad Request: message to edit not found");
            };
            let mut updated = inner.messages[index].clone();
            if method == "editmessagetext" {
                let text = params["text"].as_str().unwrap_or("").to_string();
                if let Err(e) = check_text(&text, html).and_then(|()| check_no_preview(&params)) {
                    return fault(&mut inner, 400, &e);
                }
                updated.text = text;
                updated.html = html;
            }
            let markup = params["reply_markup"].clone();
            if let Err(e) = check_markup(&markup) {
                return fault(&mut inner, 400, &e);
            }
            updated.markup = if markup.is_null()
                || markup["inline_keyboard"]
                    .as_array()
                    .is_some_and(|k| k.is_empty())
            {
                Value::Null
            } else {
                markup
            };
            let old = &inner.messages[index];
            if old.text == updated.text && old.markup == updated.markup && old.html == updated.html
            {
                return fault(
                    &mut inner,
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                );
            }
            let json = message_json(&updated);
            inner.messages[index] = updated;
            ok(json)
        }
        "deletemessage" => {
            let (Some(chat), Some(id)) = (chat, params["message_id"].as_i64()) else {
                return fault(
                    &mut inner,
                    400,
                    "Bad Request: message identifier is not specified",
                );
            };
            match inner
                .messages
                .iter()
                .position(|m| m.chat == chat && m.id == id)
            {
                Some(i) => {
                    inner.messages.remove(i);
                    ok(json!(true))
                }
                None => fault(&mut inner, 400, "Bad Request: message to delete not found"),
            }
        }
        "answercallbackquery" => {
            let id = params["callback_query_id"]
                .as_str()
                .unwrap_or("")
                .to_string();
            match inner.callbacks.get(&id).copied() {
                None => fault(
                    &mut inner,
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID is invalid",
                ),
                Some(true) => fault(&mut inner, 400, "Bad Request: query is already answered"),
                Some(false) => {
                    let text = params["text"].as_str().unwrap_or("").to_string();
                    inner.callback_texts.insert(id.clone(), text);
                    inner.callbacks.insert(id, true);
                    ok(json!(true))
                }
            }
        }
        "senddocument" => {
            let Some(chat) = chat else {
                return fault(&mut inner, 400, "Bad Request: chat_id is empty");
            };
            let Some(file) = file else {
                return fault(
                    &mut inner,
                    400,
                    "Bad Request: there is no document in the request",
                );
            };
            let next = inner.next_message.entry(chat).or_insert(0);
            *next += 1;
            let stored = Stored {
                chat,
                id: *next,
                text: params["caption"].as_str().unwrap_or("").to_string(),
                html: false,
                markup: params["reply_markup"].clone(),
                document: Some(file),
                thread: params["message_thread_id"].as_i64(),
            };
            let json = message_json(&stored);
            inner.messages.push(stored);
            ok(json)
        }
        other => fault(&mut inner, 404, &format!("Not Found: method {other}")),
    }
}

/// A response whose body fails at once: hyper sends the head, then closes the connection, so
/// the client sees its connection drop before an answer.
/// Posts `update` to a webhook with its secret, as Telegram does, again until it is taken (a
/// planbot starting up takes it once it serves; 30 s at most). Errs with the last refusal.
pub async fn deliver(url: &str, secret: &str, update: &Value) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..300 {
        let sent = reqwest::Client::new()
            .post(url)
            .header("X-Telegram-Bot-Api-Secret-Token", secret)
            .json(update)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => return Ok(()),
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} never took {update}: {last}"))
}

fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the connection dropped"))
    });
    Response::new(axum::body::Body::from_stream(failing))
}

fn fault(inner: &mut Inner, status: u16, description: &str) -> Response {
    let (method, params) = inner.calls.last().cloned().unwrap_or_default();
    inner
        .faults
        .push(format!("{method}: {description} (params {params})"));
    bad(status, description)
}

/// Telegram's flood control: a 429 past a few calls a second to a chat, past about a message a
/// second to a chat (bursts allowed), 20 a minute to a group, about 30 a second in all; a call
/// inside a window it set is a fault too.
fn flood_check(inner: &mut Inner, chat: i64, send: bool) -> Option<Response> {
    let now = Instant::now();
    if let Some(i) = inner.flood_next.iter().position(|c| *c == chat) {
        inner.flood_next.remove(i);
        inner
            .blocked_until
            .insert(chat, now + Duration::from_secs(2));
        return Some(too_many(Duration::from_secs(2)));
    }
    let (method, _) = inner.calls.last().cloned().unwrap_or_default();
    if let Some(until) = inner.blocked_until.get(&chat).copied()
        && now < until
    {
        return Some(limit(
            inner,
            chat,
            until - now,
            "inside a retry_after window",
        ));
    }
    if window(
        inner.recent.entry(chat).or_default(),
        now,
        Duration::from_secs(1),
    ) > CALLS_PER_SECOND
    {
        let why = format!("more than {CALLS_PER_SECOND} calls in a second ({method})");
        return Some(limit(inner, chat, Duration::from_secs(1), &why));
    }
    if !send {
        return None;
    }
    let (tokens, at) = inner.chat_sends.entry(chat).or_insert((CHAT_BURST, now));
    *tokens = (*tokens + (now - *at).as_secs_f64()).min(CHAT_BURST);
    *at = now;
    if *tokens < 1.0 {
        let wait = Duration::from_secs_f64(1.0 - *tokens);
        return Some(limit(inner, chat, wait, "more than a message a second"));
    }
    *tokens -= 1.0;
    if chat < 0
        && window(
            inner.group_sends.entry(chat).or_default(),
            now,
            Duration::from_secs(60),
        ) > GROUP_PER_MINUTE
    {
        let why = format!("more than {GROUP_PER_MINUTE} messages a minute to a group");
        return Some(limit(inner, chat, Duration::from_secs(3), &why));
    }
    let (tokens, at) = inner.all_sends.get_or_insert((ALL_PER_SECOND, now));
    *tokens = (*tokens + (now - *at).as_secs_f64() * ALL_PER_SECOND).min(ALL_PER_SECOND);
    *at = now;
    if *tokens < 1.0 {
        return Some(limit(
            inner,
            chat,
            Duration::from_secs(1),
            "more than 30 messages a second in all",
        ));
    }
    *tokens -= 1.0;
    None
}

/// Counts a call at `now` among those within `span` before it.
fn window(times: &mut VecDeque<Instant>, now: Instant, span: Duration) -> usize {
    while times.front().is_some_and(|t| now - *t > span) {
        times.pop_front();
    }
    times.push_back(now);
    times.len()
}

/// A 429 for `chat`, recorded as a fault; the chat is blocked for `wait`.
fn limit(inner: &mut Inner, chat: i64, wait: Duration, why: &str) -> Response {
    let (method, _) = inner.calls.last().cloned().unwrap_or_default();
    inner
        .faults
        .push(format!("{method} to chat {chat}: {why} (429)"));
    let until = Instant::now() + wait;
    let blocked = inner.blocked_until.entry(chat).or_insert(until);
    *blocked = (*blocked).max(until);
    too_many(wait)
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let body = json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"),
        "parameters": {"retry_after": secs}});
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

fn message_json(m: &Stored) -> Value {
    let mut json = json!({"message_id": m.id, "date": 1_700_000_000, "chat": chat_json(m.chat),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "planbot", "username": "planbot_test_bot"}});
    match &m.document {
        Some((name, bytes)) => {
            json["document"] = json!({"file_id": format!("file{}", m.id), "file_unique_id": format!("u{}", m.id),
                "file_name": name, "file_size": bytes.len()});
            if !m.text.is_empty() {
                json["caption"] = json!(m.text);
            }
        }
        None => json["text"] = json!(visible_text(&m.text, m.html).unwrap_or_default()),
    }
    if !m.markup.is_null() {
        json["reply_markup"] = m.markup.clone();
    }
    if let Some(thread) = m.thread {
        json["message_thread_id"] = json!(thread);
        json["is_topic_message"] = json!(true);
    }
    json
}

fn check_text(text: &str, html: bool) -> Result<(), String> {
    let visible = visible_text(text, html)?;
    if visible.trim().is_empty() {
        return Err("Bad Request: message text is empty".into());
    }
    if visible.encode_utf16().count() > 4096 {
        return Err("Bad Request: message is too long".into());
    }
    Ok(())
}

/// planbot must send every text with link previews off (Telegram would fetch any URL in it):
/// stricter than Telegram, which only defaults to showing them.
fn check_no_preview(params: &Value) -> Result<(), String> {
    if params["link_preview_options"]["is_disabled"] == json!(true) {
        Ok(())
    } else {
        Err("Bad Request: planbot sent a text without link_preview_options.is_disabled".into())
    }
}

fn check_markup(markup: &Value) -> Result<(), String> {
    for row in markup["inline_keyboard"].as_array().into_iter().flatten() {
        for button in row.as_array().into_iter().flatten() {
            let data = button["callback_data"].as_str().unwrap_or("");
            if data.is_empty() || data.len() > 64 {
                return Err("Bad Request: BUTTON_DATA_INVALID".into());
            }
        }
    }
    Ok(())
}

const TAGS: [&str; 14] = [
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
];

/// The text Telegram would show: for HTML, tags checked for balance and kind and entities
/// decoded, as strictly as Telegram's parser.
pub fn visible_text(text: &str, html: bool) -> Result<String, String> {
    if !html {
        return Ok(text.to_string());
    }
    let err = |what: String| Err(format!("Bad Request: can't parse entities: {what}"));
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let Some(end) = rest.find('>') else {
                    return err("unclosed start tag".into());
                };
                let tag = &rest[1..end];
                if let Some(name) = tag.strip_prefix('/') {
                    match stack.pop() {
                        Some(open) if open == name.trim() => {}
                        _ => return err(format!("unmatched end tag {name}")),
                    }
                } else {
                    let name = tag.split_whitespace().next().unwrap_or("").to_string();
                    if !TAGS.contains(&name.as_str()) {
                        return err(format!("unsupported start tag \"{name}\""));
                    }
                    let attrs = tag[name.len()..].trim();
                    let allowed = attrs.is_empty()
                        || (name == "a" && attrs.starts_with("href=\"") && attrs.ends_with('"'))
                        || (name == "code"
                            && attrs.starts_with("class=\"language-")
                            && attrs.ends_with('"'));
                    if !allowed {
                        return err(format!("unsupported attributes in <{tag}>"));
                    }
                    stack.push(name);
                }
                rest = &rest[end + 1..];
            }
            '&' => {
                let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
                    return err("unterminated entity".into());
                };
                match &rest[..=end] {
                    "&lt;" => out.push('<'),
                    "&gt;" => out.push('>'),
                    "&amp;" => out.push('&'),
                    "&quot;" => out.push('"'),
                    other => return err(format!("unsupported entity {other}")),
                }
                rest = &rest[end + 1..];
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if let Some(open) = stack.pop() {
        return err(format!("unclosed tag {open}"));
    }
    Ok(out)
}

/// `GET /file/bot<token>/<file_path>`: a file's bytes, as `getFile` located them.
async fn download(
    State(fake): State<FakeTelegram>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return bad(401, "Unauthorized");
    }
    let mut inner = fake.inner.lock().unwrap();
    let found = inner
        .files
        .iter()
        .find(|(_, (_, p))| *p == path)
        .map(|(id, (bytes, _))| (id.clone(), bytes.clone()));
    match found {
        Some((id, bytes)) => {
            inner.downloads.push(id);
            bytes.into_response()
        }
        None => bad(404, "Not Found"),
    }
}

async fn get_updates(fake: &FakeTelegram, params: &Value) -> Response {
    let offset = params["offset"].as_i64().unwrap_or(0);
    let timeout = params["timeout"].as_u64().unwrap_or(0).min(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    // A new poll ends the one still waiting (Telegram allows one poller per token).
    let generation = {
        let mut inner = fake.inner.lock().unwrap();
        if inner.webhook.is_some() {
            return bad(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            );
        }
        inner.polls += 1;
        inner.polls
    };
    fake.notify.notify_waiters();
    loop {
        let notified = fake.notify.notified();
        {
            let mut inner = fake.inner.lock().unwrap();
            if inner.polls != generation {
                return bad(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                );
            }
            // Updates below the offset are confirmed and forgotten, as on Telegram.
            inner
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            if !inner.updates.is_empty() {
                let updates: Vec<Value> = inner.updates.iter().cloned().collect();
                return ok(Value::Array(updates));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

#[test]
fn the_html_check_is_strict() {
    assert!(visible_text("<b>a</b> &lt; <a href=\"x\">y</a>", true).is_ok());
    assert!(visible_text("<b>a", true).is_err());
    assert!(visible_text("<b>a</i>", true).is_err());
    assert!(visible_text("a < b", true).is_err());
    assert!(visible_text("<h1>x</h1>", true).is_err());
    assert!(visible_text("AT&T", true).is_err());
    assert_eq!(
        visible_text("<code class=\"language-rust\">1 &amp; 2</code>", true).unwrap(),
        "1 & 2"
    );
}
