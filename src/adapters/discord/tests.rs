use super::*;

#[test]
fn rate_limit_headers_that_are_not_numbers_are_ignored() {
    use reqwest::header::{HeaderMap, HeaderValue};
    for bad in ["NaN", "inf", "-1", "-inf", "soon", "1e400"] {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("NaN"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert(
            "x-ratelimit-reset-after",
            HeaderValue::from_str(bad).unwrap(),
        );
        assert_eq!(header_secs(&headers, "retry-after"), None);
        assert_eq!(bucket_empty_for(&headers), None, "{bad}");
    }
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    headers.insert("x-ratelimit-reset-after", HeaderValue::from_static("1.5"));
    assert_eq!(
        bucket_empty_for(&headers),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn interaction_tokens_round_trip() {
    for kind in [Deferred::Private, Deferred::Public, Deferred::Button] {
        assert_eq!(
            Deferred::parse(&kind.token("abc:def")),
            Some((kind, "abc:def"))
        );
    }
    assert_eq!(Deferred::parse("x:abc"), None);
}

#[test]
fn buttons_fit_discord_limits() {
    let offers = [Action::Advance, Action::Finalize, Action::Cancel].map(|action| Offer {
        label: "Continue to /a-very-long-phase-name ".repeat(5),
        action,
        revision: u64::MAX,
    });
    let row = components(&offers);
    let buttons = row[0]["components"].as_array().unwrap();
    assert_eq!(buttons.len(), 3);
    for b in buttons {
        assert!(b["label"].as_str().unwrap().chars().count() <= LABEL_LIMIT);
        let id = b["custom_id"].as_str().unwrap();
        assert!(id.len() <= CUSTOM_ID_LIMIT);
        assert!(Offer::parse_payload(id).is_some());
    }
    assert_eq!(components(&[]), json!([]));
}

#[test]
fn long_markdown_becomes_parts_under_the_limit() {
    let block = format!(
        "```rust\n{}\n```",
        "let x = 1; // a line of code\n".repeat(200)
    );
    let md = format!(
        "# Plan\n\n{}\n\n{block}\n\nDone.",
        "Words and more words. ".repeat(200)
    );
    let parts = parts_of(&md);
    assert!(parts.len() >= 3);
    for part in &parts {
        assert!(part.chars().count() <= MESSAGE_LIMIT);
        assert_eq!(part.matches("```").count() % 2, 0, "{part}");
    }
}
