//! A smoke run of `planbot-bench` at small sizes, so that the benchmarks cannot rot. It checks
//! what the harness itself checks (every reply arrives, no acknowledged update is lost) and that
//! every section reports; the figures are for BENCHMARKS.md, never asserted here.

use std::process::Command;

#[test]
fn the_benchmark_harness_runs_every_section() {
    let output = Command::new(env!("CARGO_BIN_EXE_planbot-bench"))
        .arg("--smoke")
        .arg("--fake-claude")
        .arg(env!("CARGO_BIN_EXE_planbot-fake-claude"))
        .arg("--planbot")
        .arg(env!("CARGO_BIN_EXE_planbot"))
        .output()
        .expect("planbot-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for heading in [
        "## 1. Overhead per turn",
        "## 2. Parallel chats",
        "## 3. State at scale",
        "## 4. Memory",
        "## 5. Streaming",
        "## 7. The chat's path over the Telegram Bot API",
        "## 8. Many chats at once over the Telegram Bot API",
        "## 9. A turn in the console",
        "## 10. A follow-up with the real Claude Code CLI",
    ] {
        assert!(stdout.contains(heading), "{heading} missing:\n{stdout}");
    }
    assert!(stdout.contains("| overhead / baseline |"), "{stdout}");
    assert!(
        stdout.contains("| user's message → the answer's text in the chat |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read back from disk after: 0 lost."),
        "{stdout}"
    );
    assert!(stdout.contains("| 1,000 stored sessions |"), "{stdout}");
    assert_eq!(stdout.matches(" ms into the turn |").count(), 2, "{stdout}");
}
