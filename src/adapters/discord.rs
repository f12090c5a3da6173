//! The Discord front end (serenity 0.12: gateway, slash commands, buttons). Translation only:
//! gateway events become [`Inbound`] events, [`Outgoing`] messages become REST calls.
//!
//! Every interaction is deferred before anything else happens, so Discord never shows "This
//! interaction failed"; what a turn says afterwards goes to the channel as ordinary messages,
//! because a turn can outlive the 15-minute interaction token. Channel messages and the
//! answers to interactions go through one lane per channel ([`super::lane`]) that reads
//! Discord's rate-limit headers and waits out a 429's `retry_after` (serenity's own rate limiter
//! is off when `DISCORD_API_URL` points elsewhere, and its errors do not carry the retry window);
//! serenity makes only the gateway's calls: acknowledgements and command registration.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use serenity::all::{
    ChannelId, Command, CommandDataOptionValue, CommandInteraction, CommandOptionType,
    ComponentInteraction, Context, CreateAutocompleteResponse, CreateCommand, CreateCommandOption,
    CreateInteractionResponse, EventHandler, GatewayIntents, GuildId, Interaction, Member, Ready,
};
use serenity::http::HttpBuilder;
use tokio_util::sync::CancellationToken;

mod gateway;

pub use gateway::run;

mod wire;

pub use wire::chat_key;
use wire::{
    bucket_empty_for, channel, components, header_secs, id_of, message_id, parts_of, quiet,
    serenity_http,
};

use super::lane::{Call, Lanes, Pace, Pacing, Recent, Retry, Verdict};
use super::render::{reply_parts, split_markdown, utf16_len};
use crate::chat::{
    Action, ChatKey, FetchError, FileRef, Inbound, InboundKind, Membership, MessageKind,
    MessageRef, Offer, Outbound, Outgoing, SendError,
};
use crate::commands::{COMMANDS, Command as ChatCommand};
use crate::config::Secret;
use crate::router::Router;

pub const ADAPTER: &str = "discord";
/// Discord's limit on a message's content.
const MESSAGE_LIMIT: usize = 2000;
/// Discord's limit on a button's `custom_id`.
const CUSTOM_ID_LIMIT: usize = 100;
/// Discord's limit on a button's label.
const LABEL_LIMIT: usize = 80;
/// A reply longer than this many messages goes as a `.md` attachment with a summary.
const MAX_PARTS: usize = 5;
/// Discord's limits, kept with a margin; its rate-limit headers and 429s are obeyed on top:
/// 5 messages per 5 s in a channel, 50 requests a second in all.
const PACING: Pacing = Pacing {
    calls: Pace {
        burst: 5,
        every: Duration::from_millis(100),
    },
    sends: Pace {
        burst: 4,
        every: Duration::from_millis(1_100),
    },
    group_sends: None,
    all_sends: Some(Pace {
        burst: 20,
        every: Duration::from_millis(25),
    }),
};
/// What is remembered about messages sent (button holders, progress texts).
const REMEMBERED: usize = 4096;
/// "typing" lasts about 10 s in Discord clients.
const TYPING_EVERY: Duration = Duration::from_secs(8);
/// Where Discord's REST API lives when `DISCORD_API_URL` is not set.
pub const DEFAULT_API_URL: &str = "https://discord.com";
/// Where Discord serves attachments.
const FILE_HOSTS: [&str; 2] = ["cdn.discordapp.com", "media.discordapp.net"];
/// The longest an attachment may take to download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(240);
/// Flag of a message only its addressee sees.
const EPHEMERAL: u64 = 64;

/// The slash commands: name, description.
/// What the Discord front end needs from the configuration.
#[derive(Clone)]
pub struct DiscordSettings {
    pub token: Secret,
    /// `https://discord.com`, or a stand-in speaking its API.
    pub api_url: String,
    /// Register the commands in this guild only (they appear at once), not globally.
    pub guild_id: Option<u64>,
    /// Where plans' workspaces are, for completing `/plan`'s slug.
    pub workspace_dir: PathBuf,
    /// The gateway shards this planbot connects (`DISCORD_SHARDS`); `None`: the only one.
    pub shards: Option<crate::config::DiscordShards>,
    /// How many planbots send for this bot (`PLANBOT_REPLICAS`): Discord's limit on requests
    /// in all is divided among them.
    pub share: u32,
    /// With replicas: the leases, for shards shared among them (`DISCORD_SHARDS=shared/…`).
    pub leases: Option<Arc<dyn crate::store::Shared>>,
}

/// How an interaction was acknowledged, which decides how an ephemeral answer is delivered.
/// Carried in [`Inbound::interaction`] as `<kind>:<token>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferred {
    /// A command deferred ephemerally: its answer replaces the "thinking" placeholder.
    Private,
    /// A command deferred in public and already answered with its echo: answers follow up.
    Public,
    /// A button press acknowledged without a visible change: answers follow up.
    Button,
}

impl Deferred {
    fn token(self, token: &str) -> String {
        let kind = match self {
            Deferred::Private => "e",
            Deferred::Public => "p",
            Deferred::Button => "b",
        };
        format!("{kind}:{token}")
    }

    fn parse(interaction: &str) -> Option<(Deferred, &str)> {
        let (kind, token) = interaction.split_once(':')?;
        let kind = match kind {
            "e" => Deferred::Private,
            "p" => Deferred::Public,
            "b" => Deferred::Button,
            _ => return None,
        };
        Some((kind, token))
    }
}

/// Discord's side of [`Outbound`].
pub struct DiscordOutbound {
    client: reqwest::Client,
    /// `<api_url>/api/v10`.
    api: String,
    /// Where attachments may be downloaded from: Discord's CDN, or `DISCORD_API_URL`'s host.
    file_hosts: Vec<String>,
    token: Secret,
    /// The application's id, from READY: interaction answers are sent to its webhook.
    application: std::sync::OnceLock<u64>,
    lanes: Lanes<u64>,
    /// For a message the router knows, the message of the same reply that carries the buttons.
    buttons: Recent<(u64, u64), u64>,
    /// What each progress message shows, so that an edit never repeats it.
    shown: Recent<(u64, u64), String>,
}

/// A REST response, read.
struct Answer {
    status: reqwest::StatusCode,
    body: Value,
    /// A 429's window, from its body or its `Retry-After`.
    retry_after: Option<Duration>,
    /// How long the route's bucket stays empty.
    bucket_empty: Option<Duration>,
}

impl DiscordOutbound {
    pub fn new(settings: &DiscordSettings) -> Result<Arc<DiscordOutbound>, String> {
        let base = settings.api_url.trim_end_matches('/').to_string();
        let parsed =
            url::Url::parse(&base).map_err(|e| format!("DISCORD_API_URL {base:?}: {e}"))?;
        let mut file_hosts: Vec<String> = FILE_HOSTS.iter().map(|h| h.to_string()).collect();
        file_hosts.extend(parsed.host_str().map(str::to_string));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "DiscordBot (https://github.com/planbot, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| format!("could not build the HTTP client: {e}"))?;
        Ok(Arc::new(DiscordOutbound {
            client,
            api: format!("{base}/api/v10"),
            file_hosts,
            token: settings.token.clone(),
            application: std::sync::OnceLock::new(),
            lanes: Lanes::new(
                ADAPTER,
                Pacing {
                    all_sends: PACING.all_sends.map(|all| all.shared_by(settings.share)),
                    ..PACING
                },
            ),
            buttons: Recent::new(REMEMBERED),
            shown: Recent::new(REMEMBERED),
        }))
    }

    /// Makes one call in the channel's lane ([`super::lane`]): the buckets, a 429's window and
    /// an emptied route bucket hold it, network failures are retried. Returns the response's JSON.
    async fn call(
        &self,
        channel: u64,
        kind: Call,
        what: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, SendError> {
        let auth = format!("Bot {}", self.token.expose());
        let result = self
            .lanes
            .call(
                &channel,
                false,
                kind,
                what,
                || {
                    let request = make().header("Authorization", &auth);
                    async move {
                        let response = request.send().await?;
                        let headers = response.headers();
                        let (status, bucket_empty) = (response.status(), bucket_empty_for(headers));
                        let retry_header = header_secs(headers, "retry-after");
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        let retry_after = (status.as_u16() == 429).then(|| {
                            let secs = body["retry_after"].as_f64().or(retry_header);
                            Duration::from_secs_f64(secs.unwrap_or(1.0).clamp(0.0, 600.0))
                        });
                        Ok::<_, reqwest::Error>(Answer {
                            status,
                            body,
                            retry_after,
                            bucket_empty,
                        })
                    }
                },
                |result| match result {
                    // A dropped connection, or Discord's edge failing for a moment: again.
                    Err(_) => Verdict::retry(Retry::Backoff),
                    Ok(answer) if answer.status.is_server_error() => Verdict {
                        retry: Retry::Backoff,
                        hold: answer.bucket_empty,
                    },
                    Ok(answer) => Verdict {
                        retry: answer.retry_after.map_or(Retry::Done, Retry::After),
                        hold: answer.bucket_empty,
                    },
                },
            )
            .await;
        let answer = result
            .map_err(|e| SendError::Network(format!("Discord {what}: {}", e.without_url())))?;
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        let (status, body) = (answer.status, answer.body);
        let message = body["message"].as_str().unwrap_or("no message");
        let code = body["code"].as_i64().unwrap_or(0);
        tracing::warn!(channel, what, %status, code, message, "Discord refused a call");
        let text = format!("Discord {what}: {status} {message} ({code})");
        Err(match status.as_u16() {
            429 => SendError::RateLimited(text),
            500.. => SendError::Network(text),
            _ => SendError::Rejected(text),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    async fn post_message(&self, channel: u64, body: Value) -> Result<u64, SendError> {
        let body = quiet(body);
        let url = self.url(&format!("/channels/{channel}/messages"));
        let reply = self
            .call(channel, Call::Send, "create message", || {
                self.client.post(&url).json(&body)
            })
            .await?;
        id_of(&reply)
    }

    async fn patch_message(&self, channel: u64, id: u64, body: Value) -> Result<(), SendError> {
        let body = quiet(body);
        let url = self.url(&format!("/channels/{channel}/messages/{id}"));
        self.call(channel, Call::Other, "edit message", || {
            self.client.patch(&url).json(&body)
        })
        .await
        .map(|_| ())
    }

    async fn post_file(
        &self,
        channel: u64,
        name: &str,
        bytes: &[u8],
        content: &str,
    ) -> Result<u64, SendError> {
        let url = self.url(&format!("/channels/{channel}/messages"));
        let payload = quiet(json!({
            "content": content,
            "attachments": [{"id": 0, "filename": name}],
        }));
        let reply = self
            .call(channel, Call::Send, "upload file", || {
                let file = reqwest::multipart::Part::bytes(bytes.to_vec())
                    .file_name(name.to_string())
                    .mime_str("text/markdown")
                    .unwrap_or_else(|_| reqwest::multipart::Part::bytes(bytes.to_vec()));
                let form = reqwest::multipart::Form::new()
                    .text("payload_json", payload.to_string())
                    .part("files[0]", file);
                self.client.post(&url).multipart(form)
            })
            .await?;
        id_of(&reply)
    }

    /// Delivers a reply, into the message `edit` if given; the buttons go under the last part.
    /// Returns the id the router will know.
    async fn deliver(
        &self,
        chat: &ChatKey,
        message: &Outgoing,
        edit: Option<u64>,
    ) -> Result<u64, SendError> {
        let channel = channel(chat)?;
        let (parts, as_file) = reply_parts(&message.text, MAX_PARTS, parts_of);
        let count = parts.len();
        let (mut first, mut last) = (None, None);
        for (i, part) in parts.into_iter().enumerate() {
            let buttons = if i + 1 == count {
                components(&message.actions)
            } else {
                json!([])
            };
            let body = json!({"content": part, "components": buttons});
            let id = match (i, edit) {
                (0, Some(id)) => {
                    self.patch_message(channel, id, body).await?;
                    id
                }
                _ => self.post_message(channel, body).await?,
            };
            first.get_or_insert(id);
            last = Some(id);
        }
        if as_file {
            self.post_file(channel, "reply.md", message.text.as_bytes(), "")
                .await?;
        }
        if let Some(file) = &message.attachment {
            let id = self.post_file(channel, &file.name, &file.bytes, "").await?;
            first.get_or_insert(id);
        }
        let first = first.ok_or_else(|| SendError::Rejected("empty message".into()))?;
        if let Some(last) = last
            && !message.actions.is_empty()
        {
            self.buttons.insert((channel, first), last);
        }
        Ok(first)
    }

    pub(super) fn set_application(&self, id: u64) {
        // The same bot has the same id on every READY.
        let _ = self.application.set(id);
    }

    /// Replaces an acknowledged interaction's placeholder (its "original response") with
    /// `content`, in the channel's lane like every call: a 429 is waited out and sent again.
    pub(super) async fn edit_original(
        &self,
        channel: u64,
        token: &str,
        content: &str,
    ) -> Result<(), SendError> {
        let url = self.webhook_url(token, "/messages/@original")?;
        let body = quiet(json!({"content": content}));
        self.call(channel, Call::Other, "interaction response", || {
            self.client.patch(&url).json(&body)
        })
        .await
        .map(|_| ())
    }

    fn webhook_url(&self, token: &str, rest: &str) -> Result<String, SendError> {
        let application = self.application.get().ok_or_else(|| {
            SendError::Network("an interaction answered before Discord's READY".into())
        })?;
        Ok(self.url(&format!("/webhooks/{application}/{token}{rest}")))
    }

    /// An ephemeral answer to an interaction that was already acknowledged.
    pub(super) async fn answer(
        &self,
        channel: u64,
        interaction: &str,
        text: &str,
    ) -> Result<(), SendError> {
        if text.is_empty() {
            // The deferral was the acknowledgement.
            return Ok(());
        }
        let Some((deferred, token)) = Deferred::parse(interaction) else {
            return Err(SendError::BadTarget(format!(
                "not a Discord interaction: {interaction}"
            )));
        };
        let content: String = text.chars().take(MESSAGE_LIMIT).collect();
        if let Deferred::Private = deferred {
            return self.edit_original(channel, token, &content).await;
        }
        let url = self.webhook_url(token, "")?;
        let body = quiet(json!({"content": content, "flags": EPHEMERAL}));
        self.call(channel, Call::Other, "interaction follow-up", || {
            self.client.post(&url).json(&body)
        })
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Outbound for DiscordOutbound {
    async fn send(&self, chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        match (message.kind, &message.interaction) {
            (MessageKind::Ephemeral, Some(interaction)) => {
                self.answer(channel(chat)?, interaction, &message.text)
                    .await?;
                Ok(MessageRef(String::new()))
            }
            (MessageKind::Progress, _) => {
                let channel = channel(chat)?;
                let text = message.text.clone();
                let body = json!({"content": text});
                let id = self.post_message(channel, body).await?;
                self.shown.insert((channel, id), text);
                Ok(MessageRef(id.to_string()))
            }
            _ => Ok(MessageRef(
                self.deliver(chat, &message, None).await?.to_string(),
            )),
        }
    }

    async fn edit(
        &self,
        chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        let channel = channel(chat)?;
        let id = message_id(id)?;
        if message.kind == MessageKind::Progress {
            let text = message.text.clone();
            let unchanged = self.shown.get(&(channel, id)) == Some(text.clone());
            if unchanged {
                return Ok(());
            }
            self.patch_message(channel, id, json!({"content": text}))
                .await?;
            self.shown.insert((channel, id), text);
            return Ok(());
        }
        self.shown.remove(&(channel, id));
        self.deliver(chat, &message, Some(id)).await.map(|_| ())
    }

    async fn withdraw_actions(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        let channel = channel(chat)?;
        let id = message_id(id)?;
        let holder = self.buttons.remove(&(channel, id));
        match holder {
            Some(holder) => {
                self.patch_message(channel, holder, json!({"components": []}))
                    .await
            }
            None => Ok(()),
        }
    }

    async fn delete(&self, chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        let channel = channel(chat)?;
        let id = message_id(id)?;
        self.shown.remove(&(channel, id));
        let url = self.url(&format!("/channels/{channel}/messages/{id}"));
        self.call(channel, Call::Other, "delete message", || {
            self.client.delete(&url)
        })
        .await
        .map(|_| ())
    }

    async fn fetch(&self, file: &FileRef, limit: u64) -> Result<Vec<u8>, FetchError> {
        if let Some(size) = file.size.filter(|s| *s > limit) {
            return Err(FetchError::TooLarge { size: Some(size) });
        }
        // Only from where Discord keeps attachments, and without the bot's token.
        let url = url::Url::parse(&file.id).map_err(|e| FetchError::Failed(e.to_string()))?;
        if !url
            .host_str()
            .is_some_and(|h| self.file_hosts.iter().any(|allowed| allowed == h))
        {
            return Err(FetchError::Failed(format!(
                "attachment not on Discord's CDN: {:?}",
                url.host_str()
            )));
        }
        let response = self
            .client
            .get(url)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| FetchError::Failed(e.without_url().to_string()))?;
        super::read_capped(super::chunks(response), limit).await
    }

    async fn typing(&self, chat: &ChatKey) {
        let Ok(channel) = channel(chat) else {
            return;
        };
        let url = self.url(&format!("/channels/{channel}/typing"));
        let auth = format!("Bot {}", self.token.expose());
        self.lanes
            .typing(
                &channel,
                false,
                TYPING_EVERY,
                || self.client.post(&url).header("Authorization", auth).send(),
                |result| match result {
                    Ok(response) => Verdict {
                        retry: Retry::Done,
                        hold: bucket_empty_for(response.headers()),
                    },
                    Err(_) => Verdict::done(),
                },
            )
            .await;
    }
}

#[cfg(test)]
mod tests;
