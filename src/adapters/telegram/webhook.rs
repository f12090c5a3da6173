//! Webhook mode (`TELEGRAM_WEBHOOK_URL`): Telegram posts each update to planbot's HTTP server on
//! `PLANBOT_HTTP_ADDR` (plain HTTP; TLS ends at the load balancer), so that any of several
//! planbots behind it can receive any update, where long polling allows one poller per token.
//!
//! Every request must carry `TELEGRAM_WEBHOOK_SECRET` in `X-Telegram-Bot-Api-Secret-Token`
//! (anyone can reach a public URL; only Telegram knows the secret): without it, 401 and nothing
//! happens. An update is acknowledged (200) once it is handed to the router; one delivered twice
//! (Telegram retries what it did not see acknowledged) is handled once. The files of an album,
//! which arrive as separate requests, are gathered for a moment and make one turn; each of their
//! requests is answered once the album has been handed on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use subtle::ConstantTimeEq;
use teloxide::payloads::SetWebhookSetters;
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, Message, Update, UpdateKind};
use tokio_util::sync::CancellationToken;

use super::TelegramOutbound;
use super::updates::{ALBUM_WAIT, Item, Updates};
use crate::adapters::lane::Recent;
use crate::config::Secret;
use crate::router::Router;
use crate::sync::Locked;

/// The header Telegram puts the secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Update ids remembered, to handle a redelivered update once.
const SEEN: usize = 8192;

/// The webhook server: runs until `shutdown`.
pub struct Webhook {
    pub outbound: Arc<TelegramOutbound>,
    pub router: Router,
    /// `TELEGRAM_WEBHOOK_URL`: where Telegram posts (its path is the one served).
    pub url: url::Url,
    /// `TELEGRAM_WEBHOOK_SECRET`.
    pub secret: Secret,
    /// `PLANBOT_HTTP_ADDR`.
    pub addr: SocketAddr,
}

struct Shared {
    updates: Updates,
    secret: Secret,
    seen: Recent<u32, ()>,
    /// Albums being gathered, by chat and media group.
    albums: Mutex<HashMap<(i64, String), Gathering>>,
}

/// An album's messages so far, and a count of arrivals that tells the last one.
#[derive(Default)]
struct Gathering {
    messages: Vec<Message>,
    arrivals: u64,
}

impl Webhook {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|e| format!("PLANBOT_HTTP_ADDR {}: {e}", self.addr))?;
        let Some(updates) =
            Updates::start(self.outbound.clone(), self.router.clone(), &shutdown).await?
        else {
            return Ok(());
        };
        if self.url.scheme() == "http" {
            tracing::warn!(
                "TELEGRAM_WEBHOOK_URL is http://: Telegram's own Bot API accepts only https:// (a self-hosted Bot API server accepts http)"
            );
        }
        self.outbound
            .bot
            .set_webhook(self.url.clone())
            .secret_token(self.secret.expose().to_string())
            .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .await
            .map_err(|e| format!("Telegram setWebhook failed: {}", self.outbound.redact(&e)))?;
        tracing::info!(addr = %self.addr, path = self.url.path(), "Telegram webhook serving");
        let router = self.router.clone();
        let shared = Arc::new(Shared {
            updates,
            secret: self.secret,
            seen: Recent::new(SEEN),
            albums: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new()
            .route(self.url.path(), post(receive))
            .with_state(shared)
            .merge(crate::adapters::probes(router));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| format!("the webhook server failed: {e}"))
    }
}

/// One update from Telegram.
async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // In time that does not depend on where a guess differs.
    if !bool::from(given.ct_eq(shared.secret.expose().as_bytes())) {
        tracing::warn!("a webhook request without the right secret was refused");
        return StatusCode::UNAUTHORIZED;
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            tracing::warn!(error = %e, "a webhook request that is not an update was refused");
            return StatusCode::BAD_REQUEST;
        }
    };
    if !shared.seen.insert(update.id.0, ()) {
        return StatusCode::OK;
    }
    match update.kind {
        UpdateKind::Message(message) => match message.media_group_id() {
            Some(group) => {
                let album = (message.chat.id.0, group.0.clone());
                gather(&shared, album, message).await
            }
            None => shared.updates.handle(Item::Messages(vec![message])).await,
        },
        UpdateKind::CallbackQuery(query) => {
            shared.updates.handle(Item::Callback(Box::new(query))).await
        }
        _ => {}
    }
    StatusCode::OK
}

/// Adds a file of an album; the request that brought the album's last file, once no other has
/// come for a moment, hands the whole album on.
async fn gather(shared: &Shared, album: (i64, String), message: Message) {
    let mine = {
        let mut albums = shared.albums.locked();
        let gathering = albums.entry(album.clone()).or_default();
        gathering.messages.push(message);
        gathering.arrivals += 1;
        gathering.arrivals
    };
    tokio::time::sleep(ALBUM_WAIT).await;
    let complete = {
        let mut albums = shared.albums.locked();
        match albums.get(&album) {
            Some(g) if g.arrivals == mine => albums.remove(&album).map(|g| g.messages),
            _ => None,
        }
    };
    if let Some(mut messages) = complete {
        messages.sort_by_key(|m| m.id.0);
        shared.updates.handle(Item::Messages(messages)).await;
    }
}
