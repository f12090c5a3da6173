//! Discord's shapes: ids and targets, message components, parts, quiet bodies, rate-limit headers.

use super::*;

/// The channel of a `discord:<channel_id>` chat.
pub(super) fn channel(chat: &ChatKey) -> Result<u64, SendError> {
    chat.channel
        .parse::<u64>()
        .map_err(|_| SendError::BadTarget(format!("not a Discord channel: {chat}")))
}

pub(super) fn message_id(id: &MessageRef) -> Result<u64, SendError> {
    id.0.parse::<u64>()
        .map_err(|_| SendError::BadTarget(format!("not a Discord message id: {}", id.0)))
}

pub fn chat_key(channel: ChannelId) -> ChatKey {
    ChatKey::new(ADAPTER, channel.get().to_string())
}

/// Buttons as one action row (the router offers at most four).
pub(super) fn components(actions: &[Offer]) -> Value {
    if actions.is_empty() {
        return json!([]);
    }
    let buttons: Vec<Value> = actions
        .iter()
        .take(5)
        .map(|offer| {
            let style = match offer.action {
                Action::Finalize | Action::AllowOnce | Action::AllowForPlan => 3,
                Action::Cancel | Action::Deny => 4,
                Action::Advance | Action::Resume => 1,
            };
            let label: String = offer.label.chars().take(LABEL_LIMIT).collect();
            let mut custom_id = offer.payload();
            custom_id.truncate(CUSTOM_ID_LIMIT);
            json!({"type": 2, "style": style, "label": label, "custom_id": custom_id})
        })
        .collect();
    json!([{"type": 1, "components": buttons}])
}

/// Markdown split into messages under Discord's limit, code blocks re-opened across parts.
pub(super) fn parts_of(markdown: &str) -> Vec<String> {
    split_markdown(markdown, &|p: &str| utf16_len(p) <= MESSAGE_LIMIT)
}

/// Discord's `SUPPRESS_EMBEDS` message flag.
pub(super) const SUPPRESS_EMBEDS: u64 = 4;

/// Every message planbot sends or edits: no mention in it pings anyone (an idea holding
/// `@everyone` included), and no link in it is fetched for an embed (a way to send data out).
pub(super) fn quiet(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.insert("allowed_mentions".into(), json!({"parse": []}));
        let flags = map.get("flags").and_then(Value::as_u64).unwrap_or(0);
        map.insert("flags".into(), json!(flags | SUPPRESS_EMBEDS));
    }
    body
}

/// serenity's REST client, sent to `base` when that is not Discord itself.
pub(super) fn serenity_http(token: &Secret, base: &str) -> serenity::http::Http {
    let http = HttpBuilder::new(token.expose());
    if base == DEFAULT_API_URL {
        return http.build();
    }
    // serenity sends to a proxy only with its own rate limiter off; the lanes of
    // [`DiscordOutbound`] honour Discord's limits instead.
    http.proxy(base).ratelimiter_disabled(true).build()
}

pub(super) fn id_of(message: &Value) -> Result<u64, SendError> {
    message["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| SendError::Rejected("Discord answered without a message id".into()))
}

/// A number of seconds from a header; `NaN`, infinities and negatives are not (a
/// `Duration` of one would panic).
pub(super) fn header_secs(headers: &reqwest::header::HeaderMap, name: &str) -> Option<f64> {
    let secs: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// How long a route's bucket stays empty, from `X-RateLimit-Remaining: 0` and its reset.
pub(super) fn bucket_empty_for(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let remaining = header_secs(headers, "x-ratelimit-remaining")?;
    let reset = header_secs(headers, "x-ratelimit-reset-after")?;
    (remaining < 1.0).then(|| Duration::from_secs_f64(reset.clamp(0.0, 600.0)))
}
