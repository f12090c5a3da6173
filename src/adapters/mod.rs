//! Front ends: each translates its platform to [`crate::router::Inbound`] and implements
//! [`crate::router::Outbound`]. No planning logic lives here.

pub mod console;
pub mod discord;
pub mod lane;
pub mod render;
pub mod telegram;

use futures_util::{Stream, StreamExt};

use crate::chat::FetchError;
use crate::router::Router;

/// The probes a supervisor or load balancer asks: `/healthz` (the process answers) and
/// `/readyz` (with replicas: the database answers and events are listened for).
pub fn probes(router: Router) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let router = router.clone();
                async move {
                    match router.readiness().await {
                        Ok(text) => (StatusCode::OK, text),
                        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
                    }
                }
            }),
        )
}

/// Serves only [`probes`] on `addr` until `shutdown`: for replicas without the Telegram
/// webhook, whose server has them.
pub async fn serve_probes(
    addr: std::net::SocketAddr,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("PLANBOT_HTTP_ADDR {addr}: {e}"))?;
    tracing::info!(%addr, "serving /healthz and /readyz");
    axum::serve(listener, probes(router))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| format!("the probes' server failed: {e}"))
}

/// Reads a download into memory, stopping as soon as it grows past `limit` bytes (a stated size
/// can be wrong).
pub(crate) async fn read_capped<S, B, E>(body: S, limit: u64) -> Result<Vec<u8>, FetchError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FetchError::Failed(e.to_string()))?;
        bytes.extend_from_slice(chunk.as_ref());
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge { size: None });
        }
    }
    Ok(bytes)
}

/// A response body as a stream of chunks.
pub(crate) fn chunks(
    response: reqwest::Response,
) -> impl Stream<Item = Result<impl AsRef<[u8]> + use<>, reqwest::Error>> {
    futures_util::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), response)),
            Ok(None) => None,
            Err(e) => Some((Err(e.without_url()), response)),
        }
    })
}
