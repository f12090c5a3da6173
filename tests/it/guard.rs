//! `planbot hook path-guard` through the real binary, as the CLI runs it: a tool call as JSON on
//! stdin, a deny decision (or nothing) on stdout.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

/// The hook's answer for `input` with the workspace `ws` and `extra` arguments (`None`: it said
/// nothing, so the CLI's rules decide).
fn hook(ws: &Path, extra: &[&str], input: &[u8]) -> Option<Value> {
    let mut child = crate::console::planbot()
        .args(["hook", "path-guard", "--workspace"])
        .arg(ws)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    (!stdout.trim().is_empty()).then(|| serde_json::from_str(&stdout).unwrap())
}

/// The guard's decision for `input` with the workspace `ws`: `Some(reason)` when denied.
fn guard(ws: &Path, input: &[u8]) -> Option<String> {
    let answer = hook(ws, &[], input)?;
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    Some(answer["hookSpecificOutput"]["permissionDecisionReason"].to_string())
}

fn call(tool: &str, input: Value) -> Vec<u8> {
    json!({"hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input})
        .to_string()
        .into_bytes()
}

#[test]
fn paths_inside_pass_and_everything_else_is_denied() {
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("app");
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    std::fs::create_dir_all(root.path().join("other")).unwrap();
    std::os::unix::fs::symlink(root.path().join("other"), ws.join("escape")).unwrap();
    std::os::unix::fs::symlink("docs", ws.join("inner")).unwrap();
    let passes = [
        call("Read", json!({"file_path": "notes.md"})),
        call("Read", json!({"file_path": ws.join("docs/spec.md")})),
        call(
            "Write",
            json!({"file_path": "new/dir/file.md", "content": "x"}),
        ),
        call("Read", json!({"file_path": "inner/spec.md"})),
        call("Read", json!({"file_path": "docs/../notes.md"})),
        call("Read", json!({"file_path": "ünïcødé/ファイル.md"})),
        call("Glob", json!({"pattern": "**/*.md"})),
        call(
            "Grep",
            json!({"pattern": "x", "path": "docs", "glob": "*.md"}),
        ),
        call("WebSearch", json!({"query": "pricing"})),
        call("Skill", json!({"skill": "office-hours"})),
    ];
    for input in passes {
        assert_eq!(
            guard(&ws, &input),
            None,
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
    let denied = [
        call("Read", json!({"file_path": "/etc/passwd"})),
        call("Read", json!({"file_path": "../other/notes.md"})),
        call("Read", json!({"file_path": "docs/../../other/x"})),
        call("Read", json!({"file_path": "escape/secret"})),
        call("Read", json!({"file_path": "~/.ssh/id_rsa"})),
        call("Read", json!({"file_path": "~root/.ssh/id_rsa"})),
        call("Read", json!({"file_path": "/proc/1/environ"})),
        call("Write", json!({"file_path": "CLAUDE.md", "content": "x"})),
        call(
            "Write",
            json!({"file_path": "docs/claude.local.md", "content": "x"}),
        ),
        call(
            "Write",
            json!({"file_path": ".claude/settings.json", "content": "x"}),
        ),
        call("Edit", json!({"file_path": ".mcp.json"})),
        call("Glob", json!({"pattern": "/proc/*/environ"})),
        call("Glob", json!({"pattern": "../**"})),
        call("Glob", json!({"pattern": "*", "path": "/"})),
        call("Grep", json!({"pattern": "x", "path": ".."})),
        call("Grep", json!({"pattern": "x", "glob": "../../**"})),
        call("Bash", json!({"command": "ls"})),
        call("NotebookEdit", json!({"notebook_path": "/tmp/x.ipynb"})),
        call("mcp__files__read", json!({"target": "/etc/shadow"})),
        call("Read", json!({"file_path": 42})),
        call("Read", json!({})),
        call("Read", json!({"file_path": "a\u{0}b"})),
        b"not json".to_vec(),
        b"{\"tool_input\": {}}".to_vec(),
        Vec::new(),
    ];
    for input in denied {
        assert!(
            guard(&ws, &input).is_some(),
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
}

/// The guard's decision word for `input` with approvals on its command line (`pass` for none).
fn decision(ws: &Path, extra: &[&str], input: &[u8]) -> String {
    hook(ws, extra, input).map_or("pass".into(), |answer| {
        answer["hookSpecificOutput"]["permissionDecision"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

#[test]
fn approvable_calls_are_deferred_unless_answered_and_nothing_else_can_be_approved() {
    let ws = tempfile::tempdir().unwrap();
    let fetch = |url: &str| call("WebFetch", json!({"url": url, "prompt": "Prices?"}));
    let pricing = json!({"tool": "WebFetch", "input": {"prompt": "Prices?", "url": "https://example.com/pricing"}}).to_string();
    let approvable = ["--approvable", "WebFetch"];
    assert_eq!(
        decision(
            ws.path(),
            &approvable,
            &fetch("https://example.com/pricing")
        ),
        "defer"
    );
    let once = [&approvable[..], &["--allow-call", &pricing]].concat();
    assert_eq!(
        decision(ws.path(), &once, &fetch("https://example.com/pricing")),
        "allow"
    );
    assert_eq!(
        decision(ws.path(), &once, &fetch("https://example.com/other")),
        "defer"
    );
    let denied = [&approvable[..], &["--deny-call", &pricing]].concat();
    assert_eq!(
        decision(ws.path(), &denied, &fetch("https://example.com/pricing")),
        "deny"
    );
    let plan = [
        &approvable[..],
        &["--allow", "WebFetch(domain:example.com)"],
    ]
    .concat();
    assert_eq!(
        decision(ws.path(), &plan, &fetch("https://example.com/any")),
        "allow"
    );
    assert_eq!(
        decision(ws.path(), &plan, &fetch("https://evil.example.net/")),
        "defer"
    );
    // Not approvable: the guard's own rules, as before.
    assert_eq!(
        decision(ws.path(), &[], &fetch("https://example.com/pricing")),
        "pass"
    );
    // Naming a tool that touches paths or runs commands approvable changes nothing.
    let bash = call("Bash", json!({"command": "cat /etc/passwd"}));
    let wide = [
        "--approvable",
        "Bash",
        "--allow",
        "Bash",
        "--approvable",
        "Read",
        "--allow",
        "Read",
    ];
    assert_eq!(decision(ws.path(), &wide, &bash), "deny");
    let outside = call("Read", json!({"file_path": "/etc/passwd"}));
    assert_eq!(decision(ws.path(), &wide, &outside), "deny");
}
