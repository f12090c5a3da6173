//! Waiting on a fake's state, shared by the tests and `planbot-bench` (which includes this file).

use std::time::Duration;

/// Waits (at most `secs`) until `done` holds; on timeout fails with `what` and `describe()`.
pub async fn wait_until(
    what: &str,
    secs: u64,
    mut done: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; {}", describe());
}
