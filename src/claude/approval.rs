//! Tools the user approves by button. An approvable tool (`PLANBOT_APPROVABLE_TOOLS`) exists for
//! the agent but is never allowed by the CLI's own rules: the path guard answers each call of it
//! from what the plan's state says, passed on its command line for that turn alone:
//! `allow` for a call the user allowed once or a domain allowed for the plan, `deny` for a call
//! the user denied, and otherwise `defer`, which ends the turn with the call for planbot to ask
//! about. Only path-free tools can be approvable, so no answer can reach outside the workspace.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tools that may be made approvable: they touch no local path.
pub const APPROVABLE: [&str; 2] = ["WebFetch", "WebSearch"];

/// One tool call, as the CLI reports it to the hook (`tool_name`, `tool_input`) and in a deferred
/// result (`deferred_tool_use.name`, `.input`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub tool: String,
    pub input: Value,
}

impl ToolCall {
    /// The call as one canonical string (`serde_json` orders object keys), to match a call by
    /// its tool and input, never by its order.
    pub fn key(&self) -> String {
        serde_json::json!({"tool": self.tool, "input": self.input}).to_string()
    }

    /// The URL of a `WebFetch`.
    pub fn url(&self) -> Option<&str> {
        (self.tool == "WebFetch")
            .then(|| self.input.get("url").and_then(Value::as_str))
            .flatten()
    }

    /// The host a `WebFetch` would reach, lower-cased.
    pub fn domain(&self) -> Option<String> {
        let url = url::Url::parse(self.url()?).ok()?;
        url.host_str().map(str::to_ascii_lowercase)
    }

    /// What a plan-wide allowance of this call would be: `WebFetch(domain:<host>)`, or the tool.
    pub fn plan_rule(&self) -> Option<String> {
        match self.tool.as_str() {
            "WebFetch" => self.domain().map(|d| format!("WebFetch(domain:{d})")),
            other => Some(other.to_string()),
        }
    }

    /// A short account of the input, for the question and the audit log.
    pub fn summary(&self) -> String {
        let text = match (self.url(), self.input.get("query").and_then(Value::as_str)) {
            (Some(url), _) => url.to_string(),
            (None, Some(query)) => query.to_string(),
            _ => self.input.to_string(),
        };
        let clean: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
        clean
    }
}

/// What the path guard is told about approvals for one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Approvals {
    /// The tools whose calls are asked about.
    pub approvable: Vec<String>,
    /// Rules allowed without asking: `WebFetch(domain:example.com)` or a tool's name (the plan's
    /// allowances and `PLANBOT_WEBFETCH_DOMAINS`).
    pub allowed: Vec<String>,
    /// The one call the user allowed once, for the turn that resumes it.
    pub allow_call: Option<ToolCall>,
    /// The one call the user denied, for the turn that resumes it.
    pub deny_call: Option<ToolCall>,
}

/// The guard's answer about an approvable call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Allow,
    Deny(String),
    /// End the turn and ask the user.
    Defer,
}

impl Approvals {
    /// The answer for `call`, or `None` when its tool is not approvable (the guard's other
    /// checks decide).
    pub fn answer(&self, call: &ToolCall) -> Option<Answer> {
        // Only path-free tools, whatever the command line says.
        if !APPROVABLE.contains(&call.tool.as_str()) || !self.approvable.contains(&call.tool) {
            return None;
        }
        let key = call.key();
        if self.deny_call.as_ref().is_some_and(|c| c.key() == key) {
            return Some(Answer::Deny(format!(
                "The user declined this {} call. Do not retry it; carry on without it.",
                call.tool
            )));
        }
        if self.allow_call.as_ref().is_some_and(|c| c.key() == key) {
            return Some(Answer::Allow);
        }
        let rule = call.plan_rule();
        if self
            .allowed
            .iter()
            .any(|a| *a == call.tool || Some(a) == rule.as_ref())
        {
            return Some(Answer::Allow);
        }
        Some(Answer::Defer)
    }

    /// The path guard's arguments that carry these approvals.
    pub fn hook_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for tool in &self.approvable {
            args.extend(["--approvable".to_string(), tool.clone()]);
        }
        for rule in &self.allowed {
            args.extend(["--allow".to_string(), rule.clone()]);
        }
        if let Some(call) = &self.allow_call {
            args.extend(["--allow-call".to_string(), call.key()]);
        }
        if let Some(call) = &self.deny_call {
            args.extend(["--deny-call".to_string(), call.key()]);
        }
        args
    }

    /// Reads back what [`Approvals::hook_args`] wrote (a call that does not parse is dropped,
    /// which leaves it to be asked about again).
    pub fn from_hook_args(
        approvable: Vec<String>,
        allowed: Vec<String>,
        allow_call: Option<&str>,
        deny_call: Option<&str>,
    ) -> Approvals {
        let call = |key: Option<&str>| {
            let value: Value = serde_json::from_str(key?).ok()?;
            Some(ToolCall {
                tool: value.get("tool")?.as_str()?.to_string(),
                input: value.get("input")?.clone(),
            })
        };
        Approvals {
            approvable,
            allowed,
            allow_call: call(allow_call),
            deny_call: call(deny_call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fetch(url: &str) -> ToolCall {
        ToolCall {
            tool: "WebFetch".into(),
            input: json!({"url": url, "prompt": "What does Pro cost?"}),
        }
    }

    #[test]
    fn calls_are_answered_by_tool_and_input_not_by_order() {
        let pricing = fetch("https://Example.com/pricing");
        let mut approvals = Approvals {
            approvable: vec!["WebFetch".into()],
            ..Approvals::default()
        };
        assert_eq!(approvals.answer(&pricing), Some(Answer::Defer));
        assert_eq!(
            approvals.answer(&ToolCall {
                tool: "Read".into(),
                input: json!({})
            }),
            None
        );
        approvals.allow_call = Some(pricing.clone());
        assert_eq!(approvals.answer(&pricing), Some(Answer::Allow));
        // The same input with its keys in another order is the same call; another URL is not.
        let reordered: Value = serde_json::from_str(
            r#"{"prompt":"What does Pro cost?","url":"https://Example.com/pricing"}"#,
        )
        .unwrap();
        assert_eq!(
            approvals.answer(&ToolCall {
                tool: "WebFetch".into(),
                input: reordered
            }),
            Some(Answer::Allow)
        );
        assert_eq!(
            approvals.answer(&fetch("https://example.com/other")),
            Some(Answer::Defer)
        );
        approvals.allowed = vec!["WebFetch(domain:example.com)".into()];
        assert_eq!(
            approvals.answer(&fetch("https://example.com/other")),
            Some(Answer::Allow)
        );
        assert_eq!(
            approvals.answer(&fetch("https://example.com.evil.net/")),
            Some(Answer::Defer)
        );
        approvals.deny_call = Some(fetch("https://example.com/other"));
        assert!(matches!(
            approvals.answer(&fetch("https://example.com/other")),
            Some(Answer::Deny(_))
        ));
    }

    #[test]
    fn approvals_survive_the_hooks_command_line() {
        let approvals = Approvals {
            approvable: vec!["WebFetch".into(), "WebSearch".into()],
            allowed: vec!["WebFetch(domain:example.com)".into()],
            allow_call: Some(fetch("https://a.example/x?y='\"")),
            deny_call: None,
        };
        let args = approvals.hook_args();
        let value = |flag: &str| -> Vec<String> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].clone())
                .collect()
        };
        let back = Approvals::from_hook_args(
            value("--approvable"),
            value("--allow"),
            value("--allow-call").first().map(String::as_str),
            None,
        );
        assert_eq!(back, approvals);
    }

    #[test]
    fn a_plan_rule_names_the_host() {
        assert_eq!(
            fetch("https://Docs.Example.com:8443/a")
                .plan_rule()
                .as_deref(),
            Some("WebFetch(domain:docs.example.com)")
        );
        assert_eq!(fetch("not a url").plan_rule(), None);
        let search = ToolCall {
            tool: "WebSearch".into(),
            input: json!({"query": "todo apps\u{7}"}),
        };
        assert_eq!(search.plan_rule().as_deref(), Some("WebSearch"));
        assert_eq!(search.summary(), "todo apps");
    }
}
