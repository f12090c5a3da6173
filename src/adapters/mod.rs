//! Front ends: each translates its platform to [`crate::router::Inbound`] and implements
//! [`crate::router::Outbound`]. No planning logic lives here.

pub mod console;
pub mod discord;
pub mod lane;
pub mod render;
pub mod telegram;

use futures_util::{Stream, StreamExt};

use crate::chat::FetchError;

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
