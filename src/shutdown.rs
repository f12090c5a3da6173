//! Signals: SIGTERM and Ctrl-C become a shutdown token; in the console, Ctrl-C presses are
//! delivered one by one instead (the first cancels the running turn).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("could not install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

/// For the console: Ctrl-C presses as a stream, SIGTERM as shutdown. The handlers are installed
/// before this returns, so no early Ctrl-C kills the process.
pub fn console_signals() -> (mpsc::UnboundedReceiver<()>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("could not install signal handlers");
        return (rx, shutdown);
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { token.cancel(); return; }
                _ = int.recv() => { let _ = tx.send(()); }
            }
        }
    });
    (rx, shutdown)
}
