//! A stand-in for the Anthropic Messages API on 127.0.0.1, enough for the real Claude Code CLI:
//! `POST /v1/messages` answered with server-sent events like the real API.
//!
//! The "model" is deterministic: it echoes the latest user text as `reply N` (N counts the
//! assistant turns in the conversation, so a resumed session shows it saw the earlier turn).
//! Markers in the user's text script the hard cases: `keep digging` makes it call the Read tool
//! five times before answering (to exhaust `--max-turns`), `overload please` answers HTTP 529 the
//! first time a conversation is sent, `hang please` answers nothing for five minutes (a turn to
//! interrupt).
//!
//! It is also the red team's scripted attacker: each `ATTACK <Tool> <json input>` in the latest
//! user text (a message, or a skill's body once loaded) becomes one tool call, in order, as an
//! injected instruction would make a model do; then it answers with every tool result it got, so
//! a leak shows in the reply. `SAY: <text>` puts that line in the reply.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub body: Value,
    /// The CLI names its session in a header.
    pub session_header: Option<String>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Whether the one 529 has been served.
    overloaded_once: std::sync::atomic::AtomicBool,
}

pub struct MessagesApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

impl MessagesApi {
    pub async fn start() -> MessagesApi {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MessagesApi {
            addr,
            shared,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The conversational requests (those with tools: the CLI's own side calls have none).
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

/// The text of a message's content (string, or its text blocks).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            // The CLI adds context blocks of its own before the person's text.
            .filter(|t| !t.starts_with("<system-reminder>"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn is_tool_result(message: &Value) -> bool {
    message["content"]
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json400("body is not JSON")).into_response();
    };
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        body: request.clone(),
        session_header: headers
            .get("x-claude-code-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    // The latest thing the person said, and how many tool results came since.
    let last_user = messages
        .iter()
        .rposition(|m| m["role"] == "user" && !is_tool_result(m));
    let said = last_user
        .map(|i| text_of(&messages[i]["content"]))
        .unwrap_or_default();
    let tool_results = last_user.map_or(0, |i| {
        messages[i..].iter().filter(|m| is_tool_result(m)).count()
    });
    let replies = messages.iter().filter(|m| m["role"] == "assistant").count();

    if said.contains("overload please")
        && !shared
            .overloaded_once
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        return (StatusCode::from_u16(529).unwrap(), axum::Json(error)).into_response();
    }
    if said.contains("hang please") && request["tools"].is_array() {
        tokio::time::sleep(std::time::Duration::from_secs(300)).await;
    }
    let stream = request["stream"].as_bool().unwrap_or(false);
    let attacks = attacks_in(&said);
    if !attacks.is_empty() && request["tools"].is_array() {
        if let Some((name, input)) = attacks.get(tool_results) {
            return tool_call_reply(stream, replies, name, input);
        }
        let results: Vec<String> = last_user
            .map(|i| tool_result_texts(&messages[i..]))
            .unwrap_or_default();
        let mut text = String::from("[fake model] tool results:\n");
        for (n, result) in results.iter().enumerate() {
            let result: String = result.chars().take(2000).collect();
            text.push_str(&format!("{}. {result}\n", n + 1));
        }
        text.push_str("\nPHASE_STATUS: needs_input");
        return text_reply(stream, &text);
    }
    if said.contains("keep digging") && tool_results < 5 && request["tools"].is_array() {
        return tool_use_reply(stream, replies);
    }
    let quoted: String = said.chars().take(1000).collect();
    let say = said
        .lines()
        .find_map(|l| l.split_once("SAY: ").map(|(_, s)| format!("{s}\n\n")))
        .unwrap_or_default();
    let text = format!(
        "{say}[fake model] reply {} in this session. You said: '{}'. What else should the plan cover?\n\nPHASE_STATUS: needs_input",
        replies + 1,
        quoted
    );
    text_reply(stream, &text)
}

/// Every `ATTACK <Tool> <json>` in `text`, in order.
pub fn attacks_in(text: &str) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("ATTACK ") {
        rest = &rest[at + "ATTACK ".len()..];
        let Some((name, tail)) = rest.split_once(' ') else {
            break;
        };
        let mut values = serde_json::Deserializer::from_str(tail).into_iter::<Value>();
        if let Some(Ok(input)) = values.next() {
            found.push((name.to_string(), input));
            rest = &tail[values.byte_offset()..];
        }
    }
    found
}

/// The text of every tool result in `messages`.
pub fn tool_result_texts(messages: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for message in messages {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] == "tool_result" {
                out.push(match &block["content"] {
                    Value::String(s) => s.clone(),
                    other => text_of(other),
                });
            }
        }
    }
    out
}

struct Json400(&'static str);

impl IntoResponse for Json400 {
    fn into_response(self) -> Response {
        axum::Json(
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": self.0}}),
        )
        .into_response()
    }
}

fn message_start() -> Value {
    json!({"type": "message_start", "message": {"id": format!("msg_standin_{}", fastrand::u64(..)), "type": "message",
        "role": "assistant", "model": "claude-standin", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}})
}

fn sse(events: Vec<Value>) -> Response {
    let mut body = String::new();
    for event in events {
        let name = event["type"].as_str().unwrap_or("message").to_string();
        body.push_str(&format!("event: {name}\ndata: {event}\n\n"));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from(body))
        .unwrap()
}

fn text_reply(stream: bool, text: &str) -> Response {
    if !stream {
        return axum::Json(
            json!({"id": "msg_standin", "type": "message", "role": "assistant",
            "model": "claude-standin", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20}}),
        )
        .into_response();
    }
    let mut events = vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    let chars: Vec<char> = text.chars().collect();
    for chunk in chars.chunks(40) {
        let piece: String = chunk.iter().collect();
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 20}}));
    events.push(json!({"type": "message_stop"}));
    sse(events)
}

fn tool_use_reply(stream: bool, n: usize) -> Response {
    tool_call_reply(stream, n, "Read", &json!({"file_path": "/etc/hostname"}))
}

fn tool_call_reply(stream: bool, n: usize, name: &str, input: &Value) -> Response {
    let id = format!("toolu_standin_{n}_{}", fastrand::u32(..));
    if !stream {
        return axum::Json(json!({"id": "msg_standin", "type": "message", "role": "assistant",
            "model": "claude-standin", "content": [{"type": "tool_use", "id": id, "name": name, "input": input}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20}})).into_response();
    }
    sse(vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 20}}),
        json!({"type": "message_stop"}),
    ])
}
