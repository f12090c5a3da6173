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
