use super::*;

#[test]
fn slugs() {
    for ok in ["a", "todo-app", "0x", &"a".repeat(63)] {
        assert!(validate_slug(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "../x",
        "/etc",
        "a b",
        "Todo",
        "a_b",
        "a.b",
        &"a".repeat(64),
    ] {
        let err = validate_slug(bad).unwrap_err().to_string();
        assert!(err.contains("lower-case letters"), "{bad}: {err}");
    }
}
