//! Telegram's shapes: chats and targets, keyboards, message parts, what a call's result means for the lane.

use super::*;

/// Groups and channels have negative ids.
pub(super) fn is_group(chat: ChatId) -> bool {
    chat.0 < 0
}

/// What a Bot API result asks of the lane.
pub(super) fn verdict<T>(result: &Result<T, RequestError>) -> Verdict {
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
pub(super) fn target(chat: &ChatKey) -> Result<(ChatId, Option<ThreadId>), SendError> {
    let mut parts = chat.channel.split(':');
    let id = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(|| SendError::BadTarget(format!("not a Telegram chat: {chat}")))?;
    let thread = parts
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .map(|t| ThreadId(MessageId(t)));
    Ok((ChatId(id), thread))
}

pub(super) fn message_id(id: &MessageRef) -> Result<MessageId, SendError> {
    id.0.parse::<i32>()
        .map(MessageId)
        .map_err(|_| SendError::BadTarget(format!("not a Telegram message id: {}", id.0)))
}

pub(super) fn keyboard(actions: &[Offer]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(actions.iter().map(|offer| {
        vec![InlineKeyboardButton::callback(
            offer.label.clone(),
            offer.payload(),
        )]
    }))
}

pub(super) fn parts_of(markdown: &str) -> Vec<Part> {
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

pub(super) fn reqwest_url(url: &str) -> Result<url::Url, String> {
    url::Url::parse(url).map_err(|e| format!("TELEGRAM_API_URL {url:?}: {e}"))
}
