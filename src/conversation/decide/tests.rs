use super::*;
use crate::chat::parse_text;

/// A plan in its first phase of two, at revision 4, having spent $1.
fn plan() -> SessionEntry {
    let mut entry = crate::conversation::sample_entry();
    (entry.turns, entry.revision, entry.total_cost_usd) = (3, 4, 1.0);
    entry
}

/// The states a chat can be in when a job comes.
fn states() -> Vec<(&'static str, Option<SessionEntry>, Limits)> {
    let none = Limits::default();
    let mut paused = plan();
    paused.paused = true;
    let mut last = plan();
    last.phase = "plan-ceo-review".into();
    let over_plan = Limits {
        plan_budget_usd: Some(1.0),
        ..none
    };
    let over_day = Limits {
        user_daily_budget_usd: Some(2.0),
        user_spent_today: 2.5,
        ..none
    };
    vec![
        ("none", None, none),
        ("planning", Some(plan()), none),
        ("last phase", Some(last), none),
        ("paused", Some(paused), none),
        ("over plan budget", Some(plan()), over_plan),
        ("over daily budget", Some(plan()), over_day),
        ("none, over daily budget", None, over_day),
    ]
}

fn kind(d: &Decision) -> String {
    match d {
        Decision::Reply(text) => format!(
            "reply:{}",
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Decision::Stale => "stale".into(),
        Decision::NotYours => "not-yours".into(),
        Decision::Ignore => "ignore".into(),
        Decision::Start { slug, .. } => format!("start:{slug}"),
        Decision::Turn(op) => format!("turn:{op:?}"),
        Decision::Receive { files, .. } => format!("receive:{}", files.len()),
        Decision::Refuse { offer_resume, .. } => format!("refuse(resume={offer_resume})"),
        Decision::AskFinalize => "ask-finalize".into(),
        Decision::Cancel => "cancel".into(),
        Decision::Resume => "resume".into(),
    }
}

/// Every command, the text and both buttons in every state: one row per input, one column
/// per state in the order of [`states`].
#[test]
fn every_input_in_every_state() {
    let table: [(&str, [&str; 7]); 12] = [
        (
            "/plan new-app an idea",
            [
                "start:new-app",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "refuse(resume=false)",
            ],
        ),
        (
            "/plan Bad_Slug",
            [
                "reply:`Bad_Slug` is not",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "reply:This chat is",
                "reply:`Bad_Slug` is not",
            ],
        ),
        (
            "/advance",
            [
                "reply:Nothing is being",
                "turn:Advance",
                "ask-finalize",
                "refuse(resume=true)",
                "refuse(resume=false)",
                "refuse(resume=false)",
                "reply:Nothing is being",
            ],
        ),
        (
            "/next",
            [
                "reply:Nothing is being",
                "turn:Advance",
                "ask-finalize",
                "refuse(resume=true)",
                "refuse(resume=false)",
                "refuse(resume=false)",
                "reply:Nothing is being",
            ],
        ),
        (
            "/finalize",
            [
                "reply:Nothing is being",
                "turn:Finalize",
                "turn:Finalize",
                "refuse(resume=true)",
                "turn:Finalize",
                "refuse(resume=false)",
                "reply:Nothing is being",
            ],
        ),
        (
            "/cancel",
            [
                "reply:Nothing is being",
                "cancel",
                "cancel",
                "cancel",
                "cancel",
                "cancel",
                "reply:Nothing is being",
            ],
        ),
        (
            "/resume",
            [
                "reply:Nothing is being",
                "reply:This plan is",
                "reply:This plan is",
                "resume",
                "reply:This plan is",
                "reply:This plan is",
                "reply:Nothing is being",
            ],
        ),
        (
            "/status",
            [
                "reply:Nothing is being",
                "reply:`todo-app`: phase",
                "reply:`todo-app`: phase",
                "reply:`todo-app`: phase",
                "reply:`todo-app`: phase",
                "reply:`todo-app`: phase",
                "reply:Nothing is being",
            ],
        ),
        ("/help", ["reply:planbot plans a"; 7]),
        ("/start", ["reply:planbot plans a"; 7]),
        ("/frobnicate", ["reply:Unknown command /frobnicate."; 7]),
        (
            "families with kids",
            [
                "reply:Nothing is being",
                "turn:Respond(\"families with kids\")",
                "turn:Respond(\"families with kids\")",
                "refuse(resume=true)",
                "refuse(resume=false)",
                "refuse(resume=false)",
                "reply:Nothing is being",
            ],
        ),
    ];
    let states = states();
    for (input, expected) in table {
        for ((name, entry, limits), want) in states.iter().zip(expected) {
            let got = decide(entry.as_ref(), true, &parse_text(input), limits);
            assert!(
                kind(&got).starts_with(want),
                "{input} in state {name}: expected {want}, got {got:?}"
            );
        }
    }
}

#[test]
fn buttons_act_only_at_the_current_revision() {
    for (name, entry, limits) in states() {
        for action in [
            Action::Advance,
            Action::Finalize,
            Action::Cancel,
            Action::Resume,
        ] {
            // (The question's buttons have a test of their own.)
            let stale = InboundKind::Button {
                action,
                revision: 3,
            };
            assert_eq!(
                decide(entry.as_ref(), true, &stale, &limits),
                Decision::Stale,
                "{name}"
            );
            let current = InboundKind::Button {
                action,
                revision: 4,
            };
            let command = format!(
                "/{}",
                match action {
                    Action::Advance => "advance",
                    Action::Finalize => "finalize",
                    Action::Cancel => "cancel",
                    Action::Resume => "resume",
                    _ => unreachable!("only the phase buttons are listed"),
                }
            );
            let by_button = decide(entry.as_ref(), true, &current, &limits);
            if entry.is_some() {
                assert_eq!(
                    by_button,
                    decide(entry.as_ref(), true, &parse_text(&command), &limits),
                    "{name} {action:?}"
                );
            } else {
                assert_eq!(by_button, Decision::Stale, "{name}");
            }
        }
    }
}

#[test]
fn group_chatter_is_ignored_when_nothing_is_planned() {
    let text = parse_text("hello all");
    assert_eq!(
        decide(None, false, &text, &Limits::default()),
        Decision::Ignore
    );
    assert!(matches!(
        decide(Some(&plan()), false, &text, &Limits::default()),
        Decision::Turn(_)
    ));
}

#[test]
fn a_question_is_answered_only_by_who_may_and_holds_other_steps() {
    let mut asking = plan();
    asking.pending_approval = Some(crate::planning::state::PendingApproval {
        call: ToolCall {
            tool: "WebFetch".into(),
            input: serde_json::json!({"url": "https://example.com/pricing"}),
        },
        asked_at: chrono::Utc::now(),
    });
    let press = |action| InboundKind::Button {
        action,
        revision: 4,
    };
    let may = Limits {
        may_answer: true,
        ..Limits::default()
    };
    let stranger = Limits::default();
    for (action, answer) in [
        (Action::AllowOnce, QuestionAnswer::AllowOnce),
        (Action::AllowForPlan, QuestionAnswer::AllowForPlan),
        (Action::Deny, QuestionAnswer::Deny),
    ] {
        assert!(matches!(
            decide(Some(&asking), true, &press(action), &may),
            Decision::Turn(Op::Answer { answer: a, .. }) if a == answer
        ));
        assert_eq!(
            decide(Some(&asking), true, &press(action), &stranger),
            Decision::NotYours
        );
        // No question open: the button's moment has passed.
        assert_eq!(
            decide(Some(&plan()), true, &press(action), &may),
            Decision::Stale
        );
    }
    for input in ["more context", "/advance", "/finalize"] {
        let got = decide(Some(&asking), true, &parse_text(input), &may);
        assert!(
            kind(&got).starts_with("reply:Claude is waiting"),
            "{input}: {got:?}"
        );
    }
    assert_eq!(
        decide(Some(&asking), true, &parse_text("/cancel"), &may),
        Decision::Cancel
    );
    let expired = |revision| InboundKind::QuestionExpired { revision };
    assert!(matches!(
        decide(Some(&asking), false, &expired(4), &stranger),
        Decision::Turn(Op::Answer {
            answer: QuestionAnswer::Expired,
            ..
        })
    ));
    assert_eq!(
        decide(Some(&asking), false, &expired(3), &stranger),
        Decision::Ignore
    );
    assert_eq!(
        decide(Some(&plan()), false, &expired(4), &stranger),
        Decision::Ignore
    );
}

#[test]
fn files_go_into_a_plan_through_its_gates_or_get_a_hint() {
    let files = InboundKind::Files {
        files: vec![FileRef {
            id: "f1".into(),
            name: Some("spec.pdf".into()),
            mime: None,
            size: Some(10),
        }],
        caption: "read this".into(),
    };
    let expected = [
        "reply:Send files once",
        "receive:1",
        "receive:1",
        "refuse(resume=true)",
        "refuse(resume=false)",
        "refuse(resume=false)",
        "reply:Send files once",
    ];
    for ((name, entry, limits), want) in states().iter().zip(expected) {
        let got = decide(entry.as_ref(), true, &files, limits);
        assert!(kind(&got).starts_with(want), "{name}: {got:?}");
    }
    assert_eq!(
        decide(None, false, &files, &Limits::default()),
        Decision::Ignore,
        "a file shared in a group where nothing is planned is not addressed to planbot"
    );
}

#[test]
fn a_plan_without_an_idea_takes_its_slug() {
    assert_eq!(
        decide(
            None,
            true,
            &parse_text("/plan todo-app"),
            &Limits::default()
        ),
        Decision::Start {
            slug: "todo-app".into(),
            idea: "todo app".into()
        }
    );
    assert_eq!(
        decide(None, true, &parse_text("/plan"), &Limits::default()),
        Decision::Reply(copy::PLAN_USAGE.into())
    );
}
