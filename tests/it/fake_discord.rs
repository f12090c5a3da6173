//! A fake Discord on 127.0.0.1: the REST API (`/api/v10/...`) and a gateway WebSocket.
//!
//! Strict where Discord is: content over 2000 characters, `custom_id` over 100 and labels over
//! 80 characters, more than five buttons in a row, empty messages, edits of unknown messages, a
//! wrong token, an interaction acknowledged twice or after 3 s (`10062 Unknown interaction`),
//! webhook calls for an interaction never acknowledged, and calls made inside a 429's
//! `retry_after` window are refused and recorded as faults; a test passes only with none. Each
//! route of a channel (messages, edits, typing) and each interaction's follow-ups get five calls
//! per five seconds (with Discord's rate-limit headers) and a 429 beyond; interactions never
//! acknowledged are faults too.
//!
//! The gateway speaks JSON over text frames: HELLO, then IDENTIFY (token, intents and shard
//! checked), READY, heartbeat ACKs, and the events a test dispatches. As Discord does, a guild's
//! events go only to the sessions of its shard, `(guild_id >> 22) % total`, direct messages' to
//! shard 0's; each session numbers its own events, and a RESUME replays what it missed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

pub const TOKEN: &str = "MTAwMDAwMDAwMDAwMDAwMDA4.GfAkEd.discord-test-secret-token-000000000";
pub const APP_ID: u64 = 9000;
pub const BOT_ID: u64 = 8000;
pub const GUILD: u64 = 7000;
/// Heartbeats this often (Discord says ~41 s; short here so tests see them).
const HEARTBEAT_MS: u64 = 1000;
/// Messages a channel may get per window, and the window.
const BUCKET: usize = 5;
const BUCKET_WINDOW: Duration = Duration::from_secs(5);
const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

/// A gateway shard: its id and the total the connection identified with.
pub type Shard = (u64, u64);

/// The shard of `total` that gets an event of `guild` (`None`: a direct message).
pub fn shard_of(guild: Option<u64>, total: u64) -> u64 {
    guild.map_or(0, |g| (g >> 22) % total.max(1))
}

/// A message the fake holds.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u64,
    pub channel: u64,
    pub content: String,
    pub components: Value,
    pub attachments: Vec<(String, Vec<u8>)>,
    pub edits: usize,
    /// Ephemeral (seen by one person) and which interaction it answers, for webhook messages.
    pub ephemeral: bool,
    pub interaction: Option<String>,
}

impl Stored {
    /// `(label, custom_id)` of each button.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.components
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["label"].as_str().unwrap_or("").to_string(),
                    b["custom_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// A rate-limit bucket: each route of a channel (or of an interaction's webhook) has its own,
/// of [`BUCKET`] calls per [`BUCKET_WINDOW`], announced in the rate-limit headers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `POST channels/{id}/messages`.
    Messages(u64),
    /// `PATCH channels/{id}/messages/{message}`.
    Edits(u64),
    /// `POST channels/{id}/typing`.
    Typing(u64),
    /// `webhooks/{app}/{token}...`: an interaction's follow-ups and original response. To
    /// [`FakeDiscord::flood`], an empty token stands for the next such call of any interaction.
    Webhook(String),
}

/// An interaction sent through the gateway.
struct Pending {
    id: u64,
    kind: u8,
    channel: u64,
    created: Instant,
    /// The callback type it was acknowledged with.
    acked: Option<u64>,
    /// Whether its response is ephemeral (a deferral with flag 64).
    ephemeral: bool,
    /// The message its original response became, once written.
    original: Option<u64>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    messages: Vec<Stored>,
    /// Every REST call: method, path, body.
    calls: Vec<(String, String, Value)>,
    faults: Vec<String>,
    interactions: HashMap<String, Pending>,
    /// Registered commands, with the guild they were registered in.
    commands: Option<(Option<u64>, Value)>,
    recent: HashMap<Bucket, Vec<Instant>>,
    blocked_until: HashMap<Bucket, Instant>,
    /// Buckets whose next call gets a 429 (as Discord does under load), not a fault.
    flood_next: Vec<Bucket>,
    /// Channels whose next message gets a 502 from Discord's edge (not a fault).
    server_error_next: Vec<u64>,
    /// Gateway sessions by id, resumable until invalidated.
    sessions: HashMap<String, GatewaySession>,
    /// Attachments people sent, by their path under `/attachments/`.
    uploads: HashMap<String, Vec<u8>>,
    /// The attachment paths downloaded, in order.
    downloads: Vec<String>,
    identified: usize,
    /// The shard of each IDENTIFY accepted, in order.
    identified_shards: Vec<Shard>,
    /// RESUMEs accepted.
    resumes: usize,
    heartbeats: usize,
}

/// A gateway session as Discord keeps it: numbered events of its own, kept for a RESUME.
struct GatewaySession {
    shard: Shard,
    /// The number of the last event sent (READY is 1).
    sequence: u64,
    /// Every event of the session, for a RESUME to replay what it missed.
    sent: Vec<Value>,
    /// The open connection, if any.
    connection: Option<mpsc::UnboundedSender<Value>>,
}

impl GatewaySession {
    /// Numbers an event of this session, keeps it, and sends it if connected.
    fn send(&mut self, kind: &str, data: &Value) {
        self.sequence += 1;
        let event = json!({"op": 0, "t": kind, "s": self.sequence, "d": data});
        self.sent.push(event.clone());
        if let Some(connection) = &self.connection
            && connection.send(event).is_err()
        {
            self.connection = None;
        }
    }

    /// Sends a frame that is not an event (RECONNECT, INVALID_SESSION) if connected.
    fn signal(&mut self, frame: &Value) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.send(frame.clone());
        }
    }
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn fault(&mut self, fault: String) -> Response {
        self.faults.push(fault.clone());
        error(400, 50035, &fault)
    }
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub addr: SocketAddr,
    gateway: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: u16, code: u64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn user_json(id: u64, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": format!("user{id}"), "discriminator": "0",
        "global_name": null, "avatar": null, "bot": bot, "public_flags": 0})
}

fn member_json(user: u64, roles: &[u64]) -> Value {
    json!({"user": user_json(user, false), "roles": roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0,
        "pending": false, "nick": null, "avatar": null, "premium_since": null,
        "permissions": "2248473465835073", "communication_disabled_until": null})
}

impl Stored {
    /// The message as Discord's API shows it.
    fn json(&self) -> Value {
        let attachments: Vec<Value> = self
            .attachments
            .iter()
            .enumerate()
            .map(|(i, (name, bytes))| {
                json!({"id": (self.id * 10 + i as u64).to_string(), "filename": name, "size": bytes.len(),
                    "url": format!("https://cdn.example/{name}"), "proxy_url": format!("https://media.example/{name}")})
            })
            .collect();
        json!({"id": self.id.to_string(), "channel_id": self.channel.to_string(), "type": 0,
            "author": user_json(BOT_ID, true), "content": self.content,
            "timestamp": "2026-11-21T10:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": [], "pinned": false, "components": self.components,
            "flags": if self.ephemeral { 64 } else { 0 }})
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 100_000,
            ..Inner::default()
        }));
        let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeDiscord {
            addr: rest.local_addr().unwrap(),
            gateway: gateway.local_addr().unwrap(),
            inner,
        };
        let app = Router::new()
            .route("/api/v10/gateway", get(gateway_url))
            .route("/api/v10/gateway/bot", get(gateway_url))
            .route("/api/v10/applications/{app}/commands", put(register))
            .route(
                "/api/v10/applications/{app}/guilds/{guild}/commands",
                put(register),
            )
            .route(
                "/api/v10/interactions/{id}/{token}/callback",
                post(callback),
            )
            .route("/api/v10/webhooks/{app}/{token}", post(followup))
            .route(
                "/api/v10/webhooks/{app}/{token}/messages/{message}",
                any(webhook_message),
            )
            .route("/api/v10/channels/{channel}/messages", post(create_message))
            .route(
                "/api/v10/channels/{channel}/messages/{message}",
                any(edit_message),
            )
            .route("/api/v10/channels/{channel}/typing", post(typing))
            .route("/attachments/{*path}", get(attachment))
            .fallback(unknown)
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(rest, app).await;
        });
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = gateway.accept().await {
                tokio::spawn(server.clone().session(stream));
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One gateway connection.
    async fn session(self, stream: tokio::net::TcpStream) {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            self.inner
                .lock()
                .unwrap()
                .faults
                .push("gateway handshake failed".into());
            return;
        };
        let hello =
            json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": null, "t": null});
        if ws.send(Frame::Text(hello.to_string())).await.is_err() {
            return;
        }
        let (events_tx, mut events) = mpsc::unbounded_channel::<Value>();
        let mut identified = false;
        // Discord closes a connection whose heartbeats stop (a zombie): the interval, with slack.
        let deadline = Duration::from_millis(HEARTBEAT_MS * 2 + 500);
        let mut last_beat = tokio::time::Instant::now();
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let Some(Ok(frame)) = frame else { return };
                    let Frame::Text(text) = frame else { continue };
                    let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                        self.inner.lock().unwrap().faults.push(format!("gateway: not JSON: {text}"));
                        continue;
                    };
                    match payload["op"].as_u64() {
                        Some(1) => {
                            last_beat = tokio::time::Instant::now();
                            self.inner.lock().unwrap().heartbeats += 1;
                            let ack = json!({"op": 11, "d": null, "s": null, "t": null});
                            if ws.send(Frame::Text(ack.to_string())).await.is_err() { return; }
                        }
                        Some(2) => {
                            let Some(ready) = self.identify(&payload["d"], &events_tx) else { return };
                            identified = true;
                            if ws.send(Frame::Text(ready.to_string())).await.is_err() { return; }
                        }
                        Some(6) => {
                            let Some(replay) = self.resume(&payload["d"], &events_tx) else {
                                // Unknown session: Discord answers INVALID_SESSION, not resumable.
                                let invalid = json!({"op": 9, "d": false, "s": null, "t": null});
                                let _ = ws.send(Frame::Text(invalid.to_string())).await;
                                continue;
                            };
                            identified = true;
                            for event in replay {
                                if ws.send(Frame::Text(event.to_string())).await.is_err() { return; }
                            }
                        }
                        _ => {}
                    }
                }
                event = events.recv(), if identified => {
                    let Some(event) = event else { return };
                    if ws.send(Frame::Text(event.to_string())).await.is_err() { return; }
                    // After RECONNECT or INVALID_SESSION Discord ends the connection.
                    if matches!(event["op"].as_u64(), Some(7) | Some(9)) {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(last_beat + deadline) => {
                    self.inner.lock().unwrap().faults.push("gateway: heartbeats stopped; connection closed".into());
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }

    /// Checks a RESUME; the missed events and RESUMED to answer it with, or `None` when the
    /// session cannot be resumed.
    fn resume(&self, d: &Value, events: &mpsc::UnboundedSender<Value>) -> Option<Vec<Value>> {
        let mut inner = self.inner.lock().unwrap();
        let token = d["token"].as_str().unwrap_or("");
        if token != TOKEN && token != format!("Bot {TOKEN}") {
            inner
                .faults
                .push("gateway: RESUME with a wrong token".into());
            return None;
        }
        let id = d["session_id"].as_str().unwrap_or("");
        let seen = d["seq"].as_u64().unwrap_or(0);
        let session = inner.sessions.get_mut(id)?;
        let replay: Vec<Value> = session
            .sent
            .iter()
            .filter(|e| e["s"].as_u64().is_some_and(|s| s > seen))
            .cloned()
            .collect();
        // RESUMED goes through the connection's queue, after the replay the caller sends.
        session.connection = Some(events.clone());
        session.send("RESUMED", &json!({}));
        inner.resumes += 1;
        Some(replay)
    }

    /// Sends RECONNECT (op 7) to every session: each should reconnect and RESUME.
    pub fn ask_to_reconnect(&self) {
        let frame = json!({"op": 7, "d": null, "s": null, "t": null});
        for session in self.inner.lock().unwrap().sessions.values_mut() {
            session.signal(&frame);
        }
    }

    /// Sends INVALID_SESSION (op 9, not resumable) to every session: each should IDENTIFY anew.
    pub fn invalidate_sessions(&self) {
        let frame = json!({"op": 9, "d": false, "s": null, "t": null});
        let mut inner = self.inner.lock().unwrap();
        for session in inner.sessions.values_mut() {
            session.signal(&frame);
        }
        inner.sessions.clear();
    }

    /// The shard of each IDENTIFY accepted so far, in order.
    pub fn identified_shards(&self) -> Vec<Shard> {
        self.inner.lock().unwrap().identified_shards.clone()
    }

    /// (IDENTIFYs, RESUMEs) accepted so far.
    pub fn connections(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.identified, inner.resumes)
    }

    /// Checks an IDENTIFY; the READY to answer it with, or `None` to close the connection.
    fn identify(&self, d: &Value, events: &mpsc::UnboundedSender<Value>) -> Option<Value> {
        let mut inner = self.inner.lock().unwrap();
        let token = d["token"].as_str().unwrap_or("");
        if token != TOKEN && token != format!("Bot {TOKEN}") {
            inner
                .faults
                .push("gateway: IDENTIFY with a wrong token".into());
            return None;
        }
        if d["intents"].as_u64().unwrap_or(0) & INTENT_MESSAGE_CONTENT == 0 {
            inner
                .faults
                .push("gateway: IDENTIFY without the Message Content intent".into());
        }
        let shard = match d.get("shard") {
            None => (0, 1),
            Some(shard) => (
                shard[0].as_u64().unwrap_or(u64::MAX),
                shard[1].as_u64().unwrap_or(0),
            ),
        };
        if shard.0 >= shard.1 {
            // Discord closes the connection with 4010 Invalid shard.
            inner.faults.push(format!(
                "gateway: IDENTIFY with an invalid shard {}",
                d["shard"]
            ));
            return None;
        }
        inner.identified += 1;
        inner.identified_shards.push(shard);
        let session = format!("session{}", inner.identified);
        inner.sessions.insert(
            session,
            GatewaySession {
                shard,
                sequence: 1,
                sent: Vec::new(),
                connection: Some(events.clone()),
            },
        );
        Some(json!({"op": 0, "t": "READY", "s": 1, "d": {
            "shard": [shard.0, shard.1],
            "v": 10, "user": user_json(BOT_ID, true), "guilds": [{"id": GUILD.to_string(), "unavailable": true}],
            "session_id": format!("session{}", inner.identified),
            "resume_gateway_url": format!("ws://{}", self.gateway),
            "application": {"id": APP_ID.to_string(), "flags": 0}}}))
    }

    /// Sends a gateway event to every session of its shard (kept for those disconnected, until
    /// they resume), numbered in each session's own sequence.
    fn dispatch(&self, kind: &str, data: Value) {
        let guild = data["guild_id"]
            .as_str()
            .and_then(|g| g.parse::<u64>().ok());
        for session in self.inner.lock().unwrap().sessions.values_mut() {
            let (id, total) = session.shard;
            if shard_of(guild, total) == id {
                session.send(kind, &data);
            }
        }
    }

    fn interaction(&self, kind: u8, channel: u64, data: Value, extra: Value) -> String {
        let (id, token) = {
            let mut inner = self.inner.lock().unwrap();
            let id = inner.id();
            let token = format!("itoken-{id}");
            inner.interactions.insert(
                token.clone(),
                Pending {
                    id,
                    kind,
                    channel,
                    created: Instant::now(),
                    acked: None,
                    ephemeral: false,
                    original: None,
                },
            );
            (id, token)
        };
        let mut payload = json!({"id": id.to_string(), "application_id": APP_ID.to_string(), "type": kind,
            "data": data, "channel_id": channel.to_string(),
            "channel": {"id": channel.to_string(), "type": 0}, "token": token, "version": 1,
            "app_permissions": "2248473465835073", "locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD.to_string()}, "context": 0,
            "attachment_size_limit": 10_485_760});
        if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
            payload.extend(extra.clone());
        }
        self.dispatch("INTERACTION_CREATE", payload);
        token
    }

    fn sender(user: u64, guild: Option<u64>, roles: &[u64]) -> Value {
        match guild {
            Some(guild) => {
                json!({"guild_id": guild.to_string(), "member": member_json(user, roles),
                "guild_locale": "en-US"})
            }
            None => json!({"user": user_json(user, false)}),
        }
    }

    /// A person uses a slash command; returns the interaction's token.
    pub fn slash(
        &self,
        channel: u64,
        user: u64,
        guild: Option<u64>,
        name: &str,
        options: &[(&str, &str)],
    ) -> String {
        let options: Vec<Value> = options
            .iter()
            .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
            .collect();
        let data = json!({"id": "1", "name": name, "type": 1, "options": options});
        self.interaction(2, channel, data, Self::sender(user, guild, &[]))
    }

    /// A person types in `/plan`'s slug option; returns the interaction's token.
    pub fn autocomplete(&self, channel: u64, user: u64, typed: &str) -> String {
        let data = json!({"id": "1", "name": "plan", "type": 1, "options": [
            {"name": "slug", "type": 3, "value": typed, "focused": true}]});
        self.interaction(4, channel, data, Self::sender(user, Some(GUILD), &[]))
    }

    /// A person presses a button of a stored message; returns the interaction's token.
    pub fn press(&self, user: u64, message: &Stored, custom_id: &str) -> String {
        let data = json!({"custom_id": custom_id, "component_type": 2});
        let mut extra = Self::sender(user, Some(GUILD), &[]);
        extra["message"] = message.json();
        self.interaction(3, message.channel, data, extra)
    }

    /// A person (or a bot) writes in a channel of the test's guild.
    pub fn say(&self, channel: u64, user: u64, content: &str, bot: bool) {
        self.say_in(GUILD, channel, user, content, bot);
    }

    /// A person (or a bot) writes in a channel of `guild`.
    pub fn say_in(&self, guild: u64, channel: u64, user: u64, content: &str, bot: bool) {
        let id = self.inner.lock().unwrap().id();
        let mut message = json!({"id": id.to_string(), "channel_id": channel.to_string(), "type": 0,
            "author": user_json(user, bot), "content": content,
            "timestamp": "2026-11-21T10:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": false, "guild_id": guild.to_string()});
        message["member"] = member_json(user, &[]);
        if let Some(member) = message["member"].as_object_mut() {
            member.remove("user");
        }
        self.dispatch("MESSAGE_CREATE", message);
    }

    /// A person writes in a channel with files attached (`name`, `content_type`, bytes), served
    /// from this fake as Discord's CDN serves them. `elsewhere` puts them on another host.
    pub fn say_with_files(
        &self,
        channel: u64,
        user: u64,
        content: &str,
        files: Vec<(&str, &str, Vec<u8>)>,
        elsewhere: bool,
    ) {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.id();
        let host = if elsewhere {
            format!("http://localhost:{}", self.addr.port())
        } else {
            self.url()
        };
        let attachments: Vec<Value> = files
            .into_iter()
            .enumerate()
            .map(|(i, (name, content_type, bytes))| {
                let path = format!("{channel}/{id}{i}/{name}");
                let json = json!({"id": format!("{id}{i}"), "filename": name, "size": bytes.len(),
                    "content_type": content_type, "url": format!("{host}/attachments/{path}?ex=1&is=2&hm=3"),
                    "proxy_url": format!("{host}/attachments/{path}")});
                inner.uploads.insert(path, bytes);
                json
            })
            .collect();
        drop(inner);
        let mut message = json!({"id": id.to_string(), "channel_id": channel.to_string(), "type": 0,
            "author": user_json(user, false), "content": content,
            "timestamp": "2026-11-21T10:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": [], "pinned": false, "guild_id": GUILD.to_string(),
            "member": member_json(user, &[])});
        if let Some(member) = message["member"].as_object_mut() {
            member.remove("user");
        }
        self.dispatch("MESSAGE_CREATE", message);
    }

    /// The attachment paths downloaded, in order.
    pub fn downloads(&self) -> Vec<String> {
        self.inner.lock().unwrap().downloads.clone()
    }

    /// The next message to `channel` is answered 502 with an HTML page, as Discord's edge
    /// answers when the API is down for a moment.
    pub fn server_error_next(&self, channel: u64) {
        self.inner.lock().unwrap().server_error_next.push(channel);
    }

    /// The next message to `channel` is answered 429 with a 1.5 s `retry_after`.
    pub fn flood_next(&self, channel: u64) {
        self.flood(Bucket::Messages(channel));
    }

    /// The next call counted against `bucket` is answered 429 with a 1.5 s `retry_after`.
    pub fn flood(&self, bucket: Bucket) {
        self.inner.lock().unwrap().flood_next.push(bucket);
    }

    /// Channel messages (not webhook ones) of a channel, oldest first.
    pub fn messages(&self, channel: u64) -> Vec<Stored> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.channel == channel && m.interaction.is_none())
            .cloned()
            .collect()
    }

    /// Webhook messages answering the interaction `token` (its original response and followups).
    pub fn answers(&self, token: &str) -> Vec<Stored> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.interaction.as_deref() == Some(token))
            .cloned()
            .collect()
    }

    /// How the interaction was acknowledged: the callback type, and how long after it was sent.
    pub fn acknowledged(&self, token: &str) -> Option<u64> {
        self.inner
            .lock()
            .unwrap()
            .interactions
            .get(token)
            .and_then(|p| p.acked)
    }

    pub fn calls(&self) -> Vec<(String, String, Value)> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn commands(&self) -> Option<(Option<u64>, Value)> {
        self.inner.lock().unwrap().commands.clone()
    }

    pub fn heartbeats(&self) -> usize {
        self.inner.lock().unwrap().heartbeats
    }

    /// Everything the fake refused, plus interactions never acknowledged.
    pub fn faults(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut faults = inner.faults.clone();
        for (token, pending) in &inner.interactions {
            if pending.acked.is_none() {
                faults.push(format!("interaction {token} was never acknowledged"));
            }
        }
        faults
    }

    /// Waits (boundedly) until `done` holds over the fake's state.
    pub async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        mut done: impl FnMut(&FakeDiscord) -> bool,
    ) {
        crate::util::wait_until(
            what,
            secs,
            || done(self),
            || {
                format!(
                    "faults: {:?}; calls: {:#?}",
                    self.faults(),
                    self.calls().iter().rev().take(12).collect::<Vec<_>>()
                )
            },
        )
        .await
    }
}

/// A request's body: JSON, or a multipart form's `payload_json` and its files.
async fn body_of(request: Request) -> (Value, Vec<(String, Vec<u8>)>) {
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let body = Bytes::from_request(request, &()).await.unwrap_or_default();
        if body.is_empty() {
            return (Value::Null, Vec::new());
        }
        return (
            serde_json::from_slice(&body).unwrap_or(json!({"unparsable": true})),
            Vec::new(),
        );
    }
    let mut payload = json!({});
    let mut files = Vec::new();
    if let Ok(mut parts) = Multipart::from_request(request, &()).await {
        while let Ok(Some(field)) = parts.next_field().await {
            let name = field.name().unwrap_or("").to_string();
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.unwrap_or_default();
            match (name.as_str(), filename) {
                ("payload_json", _) => {
                    payload = serde_json::from_slice(&bytes).unwrap_or(json!({"unparsable": true}))
                }
                (_, Some(filename)) if name.starts_with("files[") => {
                    files.push((filename, bytes.to_vec()))
                }
                _ => payload["unexpected_field"] = json!(name),
            }
        }
    }
    (payload, files)
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bot {TOKEN}"))
}

/// Checks a message body against Discord's limits; the first problem found.
fn invalid_message(body: &Value, files: usize, editing: bool) -> Option<String> {
    if body.get("unparsable").is_some() || body.get("unexpected_field").is_some() {
        return Some(format!("malformed body: {body}"));
    }
    // Stricter than Discord, which pings and embeds by default: planbot must turn both off on
    // every message it sends or edits.
    if body["allowed_mentions"] != serde_json::json!({"parse": []}) {
        return Some(format!(
            "a message without allowed_mentions {{parse: []}}: {body}"
        ));
    }
    if body["flags"].as_u64().unwrap_or(0) & 4 == 0 {
        return Some(format!(
            "a message without the SUPPRESS_EMBEDS flag: {body}"
        ));
    }
    let content = body["content"].as_str().unwrap_or("");
    let chars = content.chars().count();
    if chars > 2000 {
        return Some(format!("content of {chars} characters (limit 2000)"));
    }
    let rows = body["components"].as_array().cloned().unwrap_or_default();
    if rows.len() > 5 {
        return Some("more than 5 action rows".into());
    }
    for row in &rows {
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || buttons.is_empty() || buttons.len() > 5 {
            return Some(format!("bad action row: {row}"));
        }
        for b in buttons {
            let id = b["custom_id"].as_str().unwrap_or("");
            let label = b["label"].as_str().unwrap_or("");
            if b["type"] != 2 || id.is_empty() || id.chars().count() > 100 {
                return Some(format!("bad button custom_id: {b}"));
            }
            if label.chars().count() > 80 {
                return Some(format!("button label over 80 characters: {label}"));
            }
        }
    }
    let attachments = body["attachments"].as_array().map_or(0, Vec::len);
    if attachments != files && !(editing && files == 0) {
        return Some(format!(
            "{attachments} attachments declared, {files} files sent"
        ));
    }
    if !editing && content.is_empty() && files == 0 && rows.is_empty() {
        return Some("Cannot send an empty message".into());
    }
    None
}

async fn gateway_url(State(fake): State<FakeDiscord>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return error(401, 0, "401: Unauthorized");
    }
    axum::Json(json!({"url": format!("ws://{}", fake.gateway), "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}))
        .into_response()
}

async fn register(
    State(fake): State<FakeDiscord>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner
        .calls
        .push(("PUT".into(), "commands".into(), body.clone()));
    if !authorized(&headers) || params.get("app").map(String::as_str) != Some(&APP_ID.to_string()) {
        return inner.fault("command registration with a wrong token or application".into());
    }
    let Some(commands) = body.as_array() else {
        return inner.fault(format!("commands are not a list: {body}"));
    };
    let mut registered = Vec::new();
    for command in commands {
        let name = command["name"].as_str().unwrap_or("");
        let description = command["description"].as_str().unwrap_or("");
        let valid_name = (1..=32).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name || !(1..=100).contains(&description.chars().count()) {
            return inner.fault(format!("invalid command: {command}"));
        }
        let mut full = command.clone();
        full["id"] = json!(inner.id().to_string());
        full["application_id"] = json!(APP_ID.to_string());
        full["version"] = json!("1");
        full["type"] = json!(1);
        full["default_member_permissions"] = Value::Null;
        if let Some(guild) = params.get("guild") {
            full["guild_id"] = json!(guild);
        }
        registered.push(full);
    }
    let guild = params.get("guild").and_then(|g| g.parse().ok());
    inner.commands = Some((guild, body));
    axum::Json(Value::Array(registered)).into_response()
}

async fn callback(
    State(fake): State<FakeDiscord>,
    Path((id, token)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((
        "POST".into(),
        format!("interactions/{id}/callback"),
        body.clone(),
    ));
    let Some(pending) = inner.interactions.get(&token) else {
        return inner.fault(format!("callback for an unknown interaction {token}"));
    };
    let late = pending.created.elapsed() > Duration::from_secs(3);
    let (kind, acked, real_id) = (pending.kind, pending.acked, pending.id);
    if real_id.to_string() != id {
        return inner.fault(format!("callback with the wrong interaction id {id}"));
    }
    if late {
        inner
            .faults
            .push(format!("interaction {token} acknowledged after 3 s"));
        return error(404, 10062, "Unknown interaction");
    }
    if acked.is_some() {
        inner
            .faults
            .push(format!("interaction {token} acknowledged twice"));
        return error(400, 40060, "Interaction has already been acknowledged.");
    }
    let response = body["type"].as_u64().unwrap_or(0);
    let fits = match kind {
        2 => matches!(response, 4 | 5 | 9),
        3 => matches!(response, 4 | 5 | 6 | 7 | 9),
        4 => response == 8,
        _ => false,
    };
    if !fits {
        return inner.fault(format!(
            "callback type {response} for an interaction of type {kind}"
        ));
    }
    if response == 8 {
        let choices = body["data"]["choices"].as_array().map_or(0, Vec::len);
        if choices > 25 {
            return inner.fault(format!("{choices} autocomplete choices (limit 25)"));
        }
    }
    if let Some(pending) = inner.interactions.get_mut(&token) {
        pending.acked = Some(response);
        pending.ephemeral = body["data"]["flags"].as_u64().unwrap_or(0) & 64 != 0;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The interaction behind a webhook call, if it may be answered.
fn answerable(inner: &mut Inner, app: &str, token: &str) -> Result<u64, Box<Response>> {
    if app != APP_ID.to_string() {
        return Err(Box::new(
            inner.fault(format!("webhook of a wrong application {app}")),
        ));
    }
    match inner.interactions.get(token) {
        Some(p) if p.acked.is_some() && p.created.elapsed() < Duration::from_secs(900) => {
            Ok(p.channel)
        }
        Some(_) => Err(Box::new(inner.fault(format!(
            "webhook for interaction {token} before its acknowledgement"
        )))),
        None => {
            inner.faults.push(format!("webhook for unknown {token}"));
            Err(Box::new(error(404, 10015, "Unknown Webhook")))
        }
    }
}

async fn followup(
    State(fake): State<FakeDiscord>,
    Path((app, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (body, files) = body_of(request).await;
    let mut inner = fake.inner.lock().unwrap();
    inner
        .calls
        .push(("POST".into(), format!("webhooks/{token}"), body.clone()));
    let channel = match answerable(&mut inner, &app, &token) {
        Ok(channel) => channel,
        Err(response) => return *response,
    };
    let headers = match take_from_bucket(&mut inner, Bucket::Webhook(token.clone())) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let ephemeral = body["flags"].as_u64().unwrap_or(0) & 64 != 0;
    match new_message(&mut inner, channel, &body, files, ephemeral, Some(token)) {
        Ok(json) => with_headers(headers, axum::Json(json).into_response()),
        Err(response) => *response,
    }
}

/// Checks and keeps a new message; its JSON as Discord answers it.
fn new_message(
    inner: &mut Inner,
    channel: u64,
    body: &Value,
    files: Vec<(String, Vec<u8>)>,
    ephemeral: bool,
    interaction: Option<String>,
) -> Result<Value, Box<Response>> {
    if let Some(problem) = invalid_message(body, files.len(), false) {
        return Err(Box::new(inner.fault(problem)));
    }
    let stored = Stored {
        id: inner.id(),
        channel,
        content: body["content"].as_str().unwrap_or("").to_string(),
        components: body["components"].clone(),
        attachments: files,
        edits: 0,
        ephemeral,
        interaction,
    };
    let json = stored.json();
    inner.messages.push(stored);
    Ok(json)
}

async fn webhook_message(
    State(fake): State<FakeDiscord>,
    Path((app, token, message)): Path<(String, String, String)>,
    method: Method,
    request: Request,
) -> Response {
    let (body, files) = body_of(request).await;
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((
        method.to_string(),
        format!("webhooks/{token}/messages/{message}"),
        body.clone(),
    ));
    let channel = match answerable(&mut inner, &app, &token) {
        Ok(channel) => channel,
        Err(response) => return *response,
    };
    if method != Method::PATCH || message != "@original" {
        return inner.fault(format!("unexpected {method} of webhook message {message}"));
    }
    if let Some(problem) = invalid_message(&body, files.len(), true) {
        return inner.fault(problem);
    }
    let headers = match take_from_bucket(&mut inner, Bucket::Webhook(token.clone())) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let (ephemeral, original) = inner
        .interactions
        .get(&token)
        .map_or((false, None), |p| (p.ephemeral, p.original));
    let content = body["content"].as_str().unwrap_or("").to_string();
    if let Some(stored) = original.and_then(|id| inner.messages.iter_mut().find(|m| m.id == id)) {
        stored.content = content;
        stored.edits += 1;
        return with_headers(headers, axum::Json(stored.json()).into_response());
    }
    let stored = Stored {
        id: inner.id(),
        channel,
        content,
        components: body["components"].clone(),
        attachments: files,
        edits: 0,
        ephemeral,
        interaction: Some(token.clone()),
    };
    if let Some(pending) = inner.interactions.get_mut(&token) {
        pending.original = Some(stored.id);
    }
    let json = stored.json();
    inner.messages.push(stored);
    with_headers(headers, axum::Json(json).into_response())
}

/// Counts a call against its bucket: the rate-limit headers, or a 429.
fn take_from_bucket(
    inner: &mut Inner,
    bucket: Bucket,
) -> Result<[(String, String); 3], Box<Response>> {
    let now = Instant::now();
    if let Some(until) = inner.blocked_until.get(&bucket).copied()
        && now < until
    {
        inner.faults.push(format!(
            "call to {bucket:?} {} ms inside its retry_after window",
            (until - now).as_millis()
        ));
        return Err(Box::new(error(429, 0, "You are being rate limited.")));
    }
    let flooded = inner.flood_next.iter().position(|b| {
        *b == bucket
            || matches!((b, &bucket), (Bucket::Webhook(any), Bucket::Webhook(_)) if any.is_empty())
    });
    let recent = inner.recent.entry(bucket.clone()).or_default();
    recent.retain(|t| now.duration_since(*t) < BUCKET_WINDOW);
    if let Some(i) = flooded.or((recent.len() >= BUCKET).then_some(usize::MAX)) {
        let retry_after = match recent.first() {
            _ if i != usize::MAX => 1.5,
            Some(oldest) => (BUCKET_WINDOW - now.duration_since(*oldest)).as_secs_f64(),
            None => 1.0,
        };
        if i != usize::MAX {
            inner.flood_next.remove(i);
        } else {
            inner.faults.push(format!(
                "{bucket:?} took more than {BUCKET} calls in {BUCKET_WINDOW:?} despite the headers"
            ));
        }
        inner
            .blocked_until
            .insert(bucket, now + Duration::from_secs_f64(retry_after));
        let body = json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false});
        let retry_header = [("retry-after", format!("{}", retry_after.ceil() as u64))];
        let response = (
            StatusCode::TOO_MANY_REQUESTS,
            retry_header,
            axum::Json(body),
        );
        return Err(Box::new(response.into_response()));
    }
    recent.push(now);
    let remaining = BUCKET - recent.len();
    let reset = recent
        .first()
        .map(|oldest| (BUCKET_WINDOW - now.duration_since(*oldest)).as_secs_f64())
        .unwrap_or(0.0);
    Ok([
        ("x-ratelimit-limit".into(), BUCKET.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset-after".into(), format!("{reset:.3}")),
    ])
}

fn with_headers(headers: [(String, String); 3], mut response: Response) -> Response {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn create_message(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<u64>,
    request: Request,
) -> Response {
    let ok = authorized(request.headers());
    let (body, files) = body_of(request).await;
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((
        "POST".into(),
        format!("channels/{channel}/messages"),
        body.clone(),
    ));
    if !ok {
        return inner.fault("message with a wrong token".into());
    }
    if let Some(i) = inner.server_error_next.iter().position(|c| *c == channel) {
        inner.server_error_next.remove(i);
        let page = "<html><head><title>502 Bad Gateway</title></head></html>";
        return (StatusCode::BAD_GATEWAY, page).into_response();
    }
    let headers = match take_from_bucket(&mut inner, Bucket::Messages(channel)) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    match new_message(&mut inner, channel, &body, files, false, None) {
        Ok(json) => with_headers(headers, axum::Json(json).into_response()),
        Err(response) => *response,
    }
}

async fn edit_message(
    State(fake): State<FakeDiscord>,
    Path((channel, message)): Path<(u64, u64)>,
    method: Method,
    request: Request,
) -> Response {
    let ok = authorized(request.headers());
    let (body, files) = body_of(request).await;
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((
        method.to_string(),
        format!("channels/{channel}/messages/{message}"),
        body.clone(),
    ));
    if ok && method == Method::DELETE {
        let found = inner
            .messages
            .iter()
            .position(|m| m.id == message && m.channel == channel && m.interaction.is_none());
        return match found {
            Some(i) => {
                inner.messages.remove(i);
                StatusCode::NO_CONTENT.into_response()
            }
            None => {
                inner
                    .faults
                    .push(format!("delete of unknown message {message}"));
                error(404, 10008, "Unknown Message")
            }
        };
    }
    if !ok || method != Method::PATCH {
        return inner.fault(format!("{method} of a message (token ok: {ok})"));
    }
    if let Some(problem) = invalid_message(&body, files.len(), true) {
        return inner.fault(problem);
    }
    let headers = match take_from_bucket(&mut inner, Bucket::Edits(channel)) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let Some(stored) = inner
        .messages
        .iter_mut()
        .find(|m| m.id == message && m.channel == channel && m.interaction.is_none())
    else {
        inner
            .faults
            .push(format!("edit of unknown message {message}"));
        return error(404, 10008, "Unknown Message");
    };
    if let Some(content) = body["content"].as_str() {
        stored.content = content.to_string();
    }
    if body.get("components").is_some() {
        stored.components = body["components"].clone();
    }
    stored.edits += 1;
    let json = stored.json();
    with_headers(headers, axum::Json(json).into_response())
}

async fn typing(
    State(fake): State<FakeDiscord>,
    Path(channel): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    inner.calls.push((
        "POST".into(),
        format!("channels/{channel}/typing"),
        Value::Null,
    ));
    if !authorized(&headers) {
        return inner.fault("typing with a wrong token".into());
    }
    match take_from_bucket(&mut inner, Bucket::Typing(channel)) {
        Ok(limits) => with_headers(limits, StatusCode::NO_CONTENT.into_response()),
        Err(response) => *response,
    }
}

/// `GET /attachments/<path>`: what Discord's CDN serves. The bot's token must not come along.
async fn attachment(
    State(fake): State<FakeDiscord>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    if headers.contains_key("authorization") {
        inner
            .faults
            .push(format!("the bot's token was sent to the CDN for {path}"));
    }
    match inner.uploads.get(&path).cloned() {
        Some(bytes) => {
            inner.downloads.push(path);
            bytes.into_response()
        }
        None => error(404, 0, "404: Not Found"),
    }
}

async fn unknown(
    State(fake): State<FakeDiscord>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    inner.faults.push(format!("unknown route {method} {uri}"));
    error(404, 0, "404: Not Found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serenity::all::{Interaction, Message};

    #[tokio::test]
    async fn the_fakes_payloads_are_what_serenity_reads() {
        let fake = FakeDiscord::start().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        fake.inner.lock().unwrap().sessions.insert(
            "test".into(),
            GatewaySession {
                shard: (0, 1),
                sequence: 1,
                sent: Vec::new(),
                connection: Some(tx),
            },
        );
        fake.slash(
            5,
            101,
            Some(GUILD),
            "plan",
            &[("slug", "a"), ("description", "b")],
        );
        fake.autocomplete(5, 101, "a");
        let stored = Stored {
            id: 1,
            channel: 5,
            content: "hi".into(),
            components: json!([{"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "adv:1"}]}]),
            attachments: vec![("final-plan.md".into(), b"# Plan".to_vec())],
            edits: 0,
            ephemeral: false,
            interaction: None,
        };
        fake.press(101, &stored, "adv:1");
        fake.say(5, 101, "hello", false);
        for _ in 0..3 {
            let event = rx.recv().await.unwrap();
            let parsed = serde_json::from_value::<Interaction>(event["d"].clone());
            assert!(parsed.is_ok(), "{parsed:?}: {event}");
        }
        let event = rx.recv().await.unwrap();
        let parsed = serde_json::from_value::<Message>(event["d"].clone());
        assert!(parsed.is_ok(), "{parsed:?}");
        assert!(serde_json::from_value::<Message>(stored.json()).is_ok());
        fake.inner.lock().unwrap().interactions.clear();
    }
}
