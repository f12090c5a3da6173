use super::*;

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

#[test]
fn failures_are_told_apart_and_never_carry_the_token() {
    let token = "123456:secret-token-value";
    let outbound = TelegramOutbound::new(Secret::new(token), "http://127.0.0.1:9", 1).unwrap();
    let limited = RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(3));
    assert!(matches!(
        outbound.send_error(&limited),
        SendError::RateLimited(_)
    ));
    let refused = RequestError::Api(ApiError::BotBlocked);
    assert!(matches!(
        outbound.send_error(&refused),
        SendError::Rejected(_)
    ));
    assert!(matches!(
        target(&ChatKey::new(ADAPTER, "x")),
        Err(SendError::BadTarget(_))
    ));
    let io = RequestError::Io(std::sync::Arc::new(std::io::Error::other(format!(
        "connect to https://api.telegram.org/bot{token}/sendMessage failed"
    ))));
    let network = outbound.send_error(&io);
    assert!(matches!(network, SendError::Network(_)), "{network}");
    assert!(
        !network.to_string().contains("secret-token-value"),
        "{network}"
    );
}
