//! `planbot console`: a chat with one local user on the terminal. Translation only.
//!
//! Lines starting with `/` are commands, `/1`, `/2`… pick an offered action, `/attach <path>`
//! brings a local file into the plan, anything else is a message. Each line is handled only after the previous line's turn has finished, so a piped
//! script of any length never fills the queue; at end of input planbot waits for the running turn
//! and returns. On a terminal, text streams as it is written under a "working" line with elapsed
//! time; piped, only the replies are printed.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio_util::sync::CancellationToken;

use crate::chat::{
    Action, ChatKey, FetchError, FileRef, Inbound, InboundKind, MessageKind, MessageRef, Offer,
    Outbound, Outgoing, SendError,
};
use crate::conversation::copy;
use crate::router::Router;
use crate::sync::Locked;

/// The console's adapter name and its one chat.
pub const ADAPTER: &str = "console";
pub const CHANNEL: &str = "local";
const USER: &str = "local";

pub fn chat() -> ChatKey {
    ChatKey::new(ADAPTER, CHANNEL)
}

/// Prints what the router says.
pub struct ConsoleOutbound {
    out: Mutex<Box<dyn Write + Send>>,
    /// Show progress and streamed text (a terminal).
    live: bool,
    /// The actions offered last, picked by number.
    /// The choices shown last, and the id of the message that showed them.
    offers: Mutex<(u64, Vec<Offer>)>,
    next_id: std::sync::atomic::AtomicU64,
    /// Streamed text not yet printed (held back until its line is complete).
    pending_line: Mutex<String>,
    /// This turn's text as it was shown while it streamed (empty: none was).
    streamed: Mutex<String>,
}

impl ConsoleOutbound {
    pub fn new(out: Box<dyn Write + Send>, live: bool) -> Arc<ConsoleOutbound> {
        Arc::new(ConsoleOutbound {
            out: Mutex::new(out),
            live,
            offers: Mutex::new((0, Vec::new())),
            next_id: std::sync::atomic::AtomicU64::new(1),
            pending_line: Mutex::new(String::new()),
            streamed: Mutex::new(String::new()),
        })
    }

    fn print(&self, text: &str) {
        let mut out = self.out.locked();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// The offer numbered `n` (1-based) among the last ones shown.
    pub fn pick(&self, n: usize) -> Option<Offer> {
        let offers = self.offers.locked();
        n.checked_sub(1).and_then(|i| offers.1.get(i)).cloned()
    }

    /// Shows `message` as the message `id`.
    fn show(&self, id: u64, message: &Outgoing) {
        match message.kind {
            MessageKind::Progress => {
                let streamed = !self.streamed.locked().is_empty();
                if self.live && !streamed {
                    // Rewrite the working line in place until text starts to stream.
                    let first = message.text.lines().next().unwrap_or("");
                    self.print(&format!("\r\x1b[2K{first}"));
                }
            }
            // The acknowledgement of a number typed for a button: nothing to show.
            MessageKind::Ephemeral if message.text.is_empty() => {}
            MessageKind::Reply | MessageKind::Ephemeral => {
                let shown = std::mem::take(&mut *self.streamed.locked());
                self.pending_line.locked().clear();
                let mut text = String::new();
                if self.live {
                    text.push_str("\r\x1b[2K");
                }
                let rest = unshown(message.text.trim_end(), &shown);
                if !shown.is_empty() {
                    text.push('\n');
                }
                if !rest.is_empty() {
                    text.push_str(&rest);
                    text.push('\n');
                }
                if let Some(file) = &message.attachment {
                    text.push_str(&format!(
                        "[attached {} ({} bytes)]\n",
                        file.name,
                        file.bytes.len()
                    ));
                }
                if !message.actions.is_empty() {
                    let choices: Vec<String> = message
                        .actions
                        .iter()
                        .enumerate()
                        .map(|(i, offer)| format!("/{} {}", i + 1, offer.label))
                        .collect();
                    text.push_str(&choices.join("  "));
                    text.push('\n');
                    *self.offers.locked() = (id, message.actions.clone());
                }
                text.push('\n');
                self.print(&text);
            }
        }
    }
}

#[async_trait]
impl Outbound for ConsoleOutbound {
    async fn send(&self, _chat: &ChatKey, message: Outgoing) -> Result<MessageRef, SendError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.show(id, &message);
        Ok(MessageRef(id.to_string()))
    }

    async fn edit(
        &self,
        _chat: &ChatKey,
        id: &MessageRef,
        message: Outgoing,
    ) -> Result<(), SendError> {
        self.show(id.0.parse().unwrap_or(0), &message);
        Ok(())
    }

    async fn withdraw_actions(&self, _chat: &ChatKey, id: &MessageRef) -> Result<(), SendError> {
        let mut offers = self.offers.locked();
        if id.0.parse() == Ok(offers.0) {
            offers.1.clear();
        }
        Ok(())
    }

    /// A file named by `/attach`: the local user's own, read where it is.
    async fn fetch(&self, file: &FileRef, limit: u64) -> Result<Vec<u8>, FetchError> {
        use tokio::io::AsyncReadExt;
        let opened = tokio::fs::File::open(&file.id)
            .await
            .map_err(|e| FetchError::Failed(e.to_string()))?;
        let mut bytes = Vec::new();
        opened
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| FetchError::Failed(e.to_string()))?;
        if bytes.len() as u64 > limit {
            return Err(FetchError::TooLarge { size: file.size });
        }
        Ok(bytes)
    }

    async fn stream_text(&self, _chat: &ChatKey, delta: &str) {
        if !self.live {
            return;
        }
        let mut complete = String::new();
        {
            let mut pending = self.pending_line.locked();
            pending.push_str(delta);
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                // The phase marker is for planbot, not for the reader.
                if !line.trim_start().starts_with("PHASE_STATUS:") {
                    complete.push_str(&line);
                }
            }
        }
        if complete.is_empty() {
            return;
        }
        let first = {
            let mut shown = self.streamed.locked();
            let first = shown.is_empty();
            shown.push_str(&complete);
            first
        };
        if first {
            self.print("\n");
        }
        self.print(&complete);
    }
}

/// What of a reply is not on the screen yet, once `shown` streamed: everything but the streamed
/// part (notices, an unfinished last line, a note after it), or the whole reply when it is not
/// the streamed text at all (a failure, a finished plan's summary).
fn unshown(reply: &str, shown: &str) -> String {
    let shown = shown.trim();
    if shown.is_empty() {
        return reply.to_string();
    }
    match reply.find(shown) {
        Some(at) => {
            let before = reply[..at].trim_end();
            let after = reply[at + shown.len()..].trim();
            match (before.is_empty(), after.is_empty()) {
                (true, _) => after.to_string(),
                (false, true) => before.to_string(),
                (false, false) => format!("{before}\n{after}"),
            }
        }
        None => reply.to_string(),
    }
}

/// Reads lines from `input` until it ends or `shutdown` fires, feeding them to the router.
/// `interrupts` delivers Ctrl-C presses: one while a turn runs cancels it (the plan stays), one
/// while nothing runs ends the console.
pub async fn run(
    router: Router,
    outbound: Arc<ConsoleOutbound>,
    input: impl AsyncBufRead + Unpin,
    mut interrupts: tokio::sync::mpsc::UnboundedReceiver<()>,
    shutdown: CancellationToken,
) {
    let chat = chat();
    // Split on bytes, not as UTF-8: a stray invalid byte is replaced, and the session goes on.
    let mut lines = input.split(b'\n');
    // The choice typed once that would cancel the plan, waiting for its confirmation.
    let mut pending_cancel: Option<usize> = None;
    loop {
        let line = tokio::select! {
            line = lines.next_segment() => line,
            _ = shutdown.cancelled() => break,
            // Ctrl-C with no turn running leaves.
            Some(()) = interrupts.recv() => break,
        };
        let line = match line {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes)
                .trim_end_matches('\r')
                .to_string(),
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "reading the console input failed");
                break;
            }
        };
        let Some(inbound) = inbound_of(&line, &outbound, &mut pending_cancel) else {
            continue;
        };
        router.handle(inbound).await;
        if wait_for_turn(&router, &chat, &mut interrupts, &shutdown).await == Wait::Leave {
            return;
        }
    }
    wait_for_turn(&router, &chat, &mut interrupts, &shutdown).await;
}

/// What a line typed means, or `None` when the console answered it itself (an empty line, a
/// choice that is not offered, a cancel to confirm, an `/attach` that cannot be read).
fn inbound_of(
    line: &str,
    outbound: &ConsoleOutbound,
    pending_cancel: &mut Option<usize>,
) -> Option<Inbound> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return None;
    }
    // A choice is typed as `/1`, `/2`…: a bare number is a message (Claude may have asked
    // "1, 2 or 3?"). Cancelling asks once more.
    let choice = trimmed
        .strip_prefix('/')
        .and_then(|n| n.parse::<usize>().ok());
    let inbound = match choice {
        Some(n) => {
            let Some(offer) = outbound.pick(n) else {
                outbound.print(&format!("{}\n\n", copy::no_such_choice(n)));
                *pending_cancel = None;
                return None;
            };
            if offer.action == Action::Cancel && *pending_cancel != Some(n) {
                outbound.print(&format!("{}\n\n", copy::confirm_cancel(n)));
                *pending_cancel = Some(n);
                return None;
            }
            Inbound {
                chat: chat(),
                user: USER.into(),
                private: true,
                kind: InboundKind::Button {
                    action: offer.action,
                    revision: offer.revision,
                },
                interaction: None,
                membership: None,
                event: None,
            }
        }
        None => match trimmed.strip_prefix("/attach") {
            Some(args) if args.is_empty() || args.starts_with(char::is_whitespace) => {
                match attachment(args.trim()) {
                    Ok(kind) => Inbound {
                        kind,
                        ..Inbound::from_text(chat(), USER, true, "")
                    },
                    Err(why) => {
                        outbound.print(&format!("{why}\n\n"));
                        return None;
                    }
                }
            }
            _ => Inbound::from_text(chat(), USER, true, line),
        },
    };
    *pending_cancel = None;
    Some(inbound)
}

/// `/attach <path> [caption]`: a local file to bring into the plan.
fn attachment(args: &str) -> Result<InboundKind, String> {
    if args.is_empty() {
        return Err(copy::ATTACH_USAGE.into());
    }
    let expand = |p: &str| match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(p),
    };
    // The longest run of words that names a file is the path (it may hold spaces); the rest is
    // the caption.
    let ends = args
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .chain([args.len()]);
    let mut ends: Vec<usize> = ends.collect();
    ends.reverse();
    let split = ends
        .iter()
        .copied()
        .find(|&end| expand(&args[..end]).is_file())
        .or_else(|| ends.last().copied())
        .unwrap_or(args.len());
    let (path, caption) = (expand(&args[..split]), args[split..].trim());
    let meta = std::fs::metadata(&path).map_err(|e| copy::no_file_at(&path.display(), &e))?;
    if !meta.is_file() {
        return Err(copy::no_file_at(&path.display(), &"not a file"));
    }
    let path = path.canonicalize().unwrap_or(path);
    Ok(InboundKind::Files {
        files: vec![FileRef {
            id: path.display().to_string(),
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
            mime: None,
            size: Some(meta.len()),
        }],
        caption: caption.to_string(),
    })
}

#[derive(PartialEq)]
enum Wait {
    Done,
    Leave,
}

/// Waits until the chat has nothing running or waiting. The first Ctrl-C meanwhile cancels the
/// turn; a second one leaves.
async fn wait_for_turn(
    router: &Router,
    chat: &ChatKey,
    interrupts: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    shutdown: &CancellationToken,
) -> Wait {
    let mut cancelled = false;
    loop {
        tokio::select! {
            _ = router.until_idle(Some(chat)) => return Wait::Done,
            Some(()) = interrupts.recv() => {
                if cancelled {
                    return Wait::Leave;
                }
                router.cancel_running(chat);
                cancelled = true;
            }
            _ = shutdown.cancelled() => return Wait::Leave,
        }
    }
}
