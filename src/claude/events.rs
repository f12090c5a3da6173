//! The stream-json lines that `claude -p --output-format stream-json --verbose` prints.
//!
//! Every field is optional where the CLI may leave it out; a line whose `type` is not modelled
//! here, or that does not fit its model, is kept whole as [`StreamEvent::Unknown`] so a newer CLI
//! never breaks a turn.

use serde::Deserialize;
use serde_json::Value;

/// One line of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `{"type":"system",...}`: `init` first, then `api_retry`, `status` and others.
    System(SystemEvent),
    /// A complete assistant message (text and tool calls).
    Assistant(MessageEvent),
    /// A user message: in headless mode, the tool results fed back to the model.
    User(MessageEvent),
    /// A raw API streaming event, present with `--include-partial-messages`.
    PartialMessage(PartialEvent),
    /// The last line of a turn.
    Result(ResultEvent),
    /// Anything else, kept as it came.
    Unknown(Value),
}

impl StreamEvent {
    /// Parses one line. `None` for a line that is not a JSON object (the CLI may print other text).
    pub fn parse(line: &[u8]) -> Option<StreamEvent> {
        let value: Value = serde_json::from_slice(line).ok()?;
        if !value.is_object() {
            return None;
        }
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        let typed = match kind {
            "system" => SystemEvent::deserialize(&value).map(StreamEvent::System),
            "assistant" => MessageEvent::deserialize(&value).map(StreamEvent::Assistant),
            "user" => MessageEvent::deserialize(&value).map(StreamEvent::User),
            "stream_event" => PartialEvent::deserialize(&value).map(StreamEvent::PartialMessage),
            // Read field by field: one retyped field must not hide the turn's outcome.
            "result" => return Some(StreamEvent::Result(ResultEvent::from_value(&value))),
            _ => return Some(StreamEvent::Unknown(value)),
        };
        Some(typed.unwrap_or(StreamEvent::Unknown(value)))
    }

    /// The session id this line names, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            StreamEvent::System(e) => e.session_id.as_deref(),
            StreamEvent::Assistant(e) | StreamEvent::User(e) => e.session_id.as_deref(),
            StreamEvent::PartialMessage(e) => e.session_id.as_deref(),
            StreamEvent::Result(e) => e.session_id.as_deref(),
            StreamEvent::Unknown(v) => v.get("session_id").and_then(Value::as_str),
        }
    }
}

/// `type: system`. The `init` subtype describes the session before any model call.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SystemEvent {
    pub subtype: Option<String>,
    pub session_id: Option<String>,
    pub cwd: Option<String>,
    pub model: Option<String>,
    #[serde(rename = "permissionMode")]
    pub permission_mode: Option<String>,
    pub slash_commands: Option<Vec<String>>,
    pub skills: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub claude_code_version: Option<String>,
}

/// `type: assistant` or `type: user`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageEvent {
    pub message: Option<Message>,
    pub session_id: Option<String>,
    pub parent_tool_use_id: Option<String>,
    /// Set on synthetic error messages, e.g. `server_error`.
    pub error: Option<String>,
}

impl MessageEvent {
    /// The text blocks of the message, joined.
    pub fn text(&self) -> String {
        let Some(message) = &self.message else {
            return String::new();
        };
        message
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// Names of the tools this message calls.
    pub fn tool_calls(&self) -> impl Iterator<Item = &str> {
        self.message.iter().flat_map(|m| {
            m.content.iter().filter_map(|block| match block {
                ContentBlock::ToolUse { name } => Some(name.as_str()),
                _ => None,
            })
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Message {
    pub id: Option<String>,
    pub model: Option<String>,
    pub role: Option<String>,
    #[serde(default, deserialize_with = "content_blocks")]
    pub content: Vec<ContentBlock>,
    pub usage: Option<Usage>,
}

/// A content block; blocks of kinds not modelled here are kept as `Other`.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlock {
    Text { text: String },
    ToolUse { name: String },
    Other(Value),
}

/// Content is a list of blocks, or (in user messages) sometimes a bare string.
fn content_blocks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ContentBlock>, D::Error> {
    let value = Value::deserialize(d)?;
    let block = |v: Value| match v.get("type").and_then(Value::as_str) {
        Some("text") => match v.get("text").and_then(Value::as_str) {
            Some(text) => ContentBlock::Text {
                text: text.to_owned(),
            },
            None => ContentBlock::Other(v),
        },
        Some("tool_use") => match v.get("name").and_then(Value::as_str) {
            Some(name) => ContentBlock::ToolUse {
                name: name.to_owned(),
            },
            None => ContentBlock::Other(v),
        },
        _ => ContentBlock::Other(v),
    };
    Ok(match value {
        Value::Array(items) => items.into_iter().map(block).collect(),
        Value::String(text) => vec![ContentBlock::Text { text }],
        Value::Null => Vec::new(),
        other => vec![ContentBlock::Other(other)],
    })
}

/// `type: stream_event`: one raw Messages API event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PartialEvent {
    pub event: Option<Value>,
    pub session_id: Option<String>,
    pub parent_tool_use_id: Option<String>,
}

impl PartialEvent {
    /// The `type` of the inner API event (`message_start`, `content_block_delta`, ...).
    pub fn kind(&self) -> Option<&str> {
        self.event.as_ref()?.get("type")?.as_str()
    }

    /// The text of a `content_block_delta` carrying a `text_delta`.
    pub fn text_delta(&self) -> Option<&str> {
        let event = self.event.as_ref()?;
        if event.get("type")?.as_str()? != "content_block_delta" {
            return None;
        }
        let delta = event.get("delta")?;
        if delta.get("type")?.as_str()? != "text_delta" {
            return None;
        }
        delta.get("text")?.as_str()
    }
}

/// `type: result`: how the turn ended.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResultEvent {
    pub subtype: Option<String>,
    pub is_error: Option<bool>,
    pub api_error_status: Option<u16>,
    pub num_turns: Option<u32>,
    pub result: Option<String>,
    pub session_id: Option<String>,
    pub total_cost_usd: Option<f64>,
    pub usage: Option<Usage>,
    pub errors: Option<Vec<String>>,
    pub duration_ms: Option<u64>,
    pub stop_reason: Option<String>,
    pub terminal_reason: Option<String>,
    pub permission_denials: Option<Vec<Value>>,
    /// The tool call a `PreToolUse` hook deferred (`stop_reason: tool_deferred`).
    pub deferred_tool_use: Option<Value>,
}

impl ResultEvent {
    /// Reads each field the outcome needs on its own: a field that is missing or of another type
    /// than expected is left out (and logged), the rest still counts.
    pub fn from_value(value: &Value) -> ResultEvent {
        let mut misread: Vec<&str> = Vec::new();
        let mut take = |name: &'static str, ok: &dyn Fn(&Value) -> bool| -> Option<Value> {
            let v = value.get(name).filter(|v| !v.is_null())?;
            if ok(v) {
                Some(v.clone())
            } else {
                misread.push(name);
                None
            }
        };
        let result = ResultEvent {
            subtype: take("subtype", &Value::is_string).and_then(as_string),
            is_error: take("is_error", &Value::is_boolean).and_then(|v| v.as_bool()),
            api_error_status: take("api_error_status", &Value::is_u64)
                .and_then(|v| v.as_u64())
                .and_then(|n| u16::try_from(n).ok()),
            num_turns: take("num_turns", &Value::is_u64)
                .and_then(|v| v.as_u64())
                .and_then(|n| u32::try_from(n).ok()),
            result: take("result", &Value::is_string).and_then(as_string),
            session_id: take("session_id", &Value::is_string).and_then(as_string),
            total_cost_usd: take("total_cost_usd", &Value::is_number).and_then(|v| v.as_f64()),
            usage: take("usage", &Value::is_object).and_then(|v| Usage::deserialize(&v).ok()),
            errors: take("errors", &Value::is_array).map(|v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| match e {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            }),
            duration_ms: take("duration_ms", &Value::is_u64).and_then(|v| v.as_u64()),
            stop_reason: take("stop_reason", &Value::is_string).and_then(as_string),
            terminal_reason: take("terminal_reason", &Value::is_string).and_then(as_string),
            permission_denials: take("permission_denials", &Value::is_array)
                .and_then(|v| v.as_array().cloned()),
            deferred_tool_use: take("deferred_tool_use", &Value::is_object),
        };
        if !misread.is_empty() {
            tracing::warn!(
                fields = ?misread,
                "claude's result line has fields of an unexpected type; read without them"
            );
        }
        result
    }
}

fn as_string(v: Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Token counts as the CLI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_misfits_are_kept() {
        let e = StreamEvent::parse(br#"{"type":"rate_limit_event","x":1}"#).unwrap();
        assert!(matches!(e, StreamEvent::Unknown(v) if v["x"] == 1));
        // One retyped field of a result is left out; the others still decide the outcome.
        let e = StreamEvent::parse(
            br#"{"type":"result","num_turns":"many","subtype":"success","is_error":false,"result":"Hi","session_id":"s","total_cost_usd":"0.1","usage":[1],"errors":[{"x":1}],"extra":{"new":true}}"#,
        )
        .unwrap();
        let StreamEvent::Result(r) = e else {
            panic!("{e:?}")
        };
        assert_eq!(r.num_turns, None);
        assert_eq!(r.total_cost_usd, None);
        assert_eq!(r.usage, None);
        assert_eq!(r.result.as_deref(), Some("Hi"));
        assert_eq!(r.subtype.as_deref(), Some("success"));
        assert_eq!(r.is_error, Some(false));
        assert_eq!(r.errors, Some(vec![r#"{"x":1}"#.to_string()]));
    }

    #[test]
    fn non_objects_are_not_events() {
        assert_eq!(StreamEvent::parse(b"hello"), None);
        assert_eq!(StreamEvent::parse(b"[1,2]"), None);
        assert_eq!(StreamEvent::parse(b""), None);
    }

    #[test]
    fn content_may_be_a_string() {
        let e = StreamEvent::parse(
            br#"{"type":"user","message":{"role":"user","content":"hi"},"session_id":"s"}"#,
        )
        .unwrap();
        let StreamEvent::User(m) = e else { panic!() };
        assert_eq!(m.text(), "hi");
        assert_eq!(m.session_id.as_deref(), Some("s"));
    }
}
