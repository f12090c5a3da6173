use super::*;

#[test]
fn commands_are_parsed_with_bot_suffixes() {
    assert_eq!(
        parse_text("/plan@PlanBot todo-app  a list "),
        InboundKind::Command {
            name: "plan".into(),
            args: "todo-app  a list".into()
        }
    );
    assert_eq!(
        parse_text("/Status"),
        InboundKind::Command {
            name: "status".into(),
            args: String::new()
        }
    );
    assert_eq!(parse_text("hello /x"), InboundKind::Text("hello /x".into()));
    assert_eq!(parse_text("/"), InboundKind::Text("/".into()));
}

#[test]
fn payloads_round_trip_within_limits() {
    let offer = Offer {
        label: "x".into(),
        action: Action::Finalize,
        revision: u64::MAX,
    };
    assert!(offer.payload().len() <= 64);
    assert_eq!(
        Offer::parse_payload(&offer.payload()),
        Some((Action::Finalize, u64::MAX))
    );
    assert_eq!(Offer::parse_payload("zzz:1"), None);
    assert_eq!(Offer::parse_payload("adv:x"), None);
}
