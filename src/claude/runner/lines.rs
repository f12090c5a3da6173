//! Reading the child's output: stdout in lines of any length (cancel-safe), stderr's tail.

use super::*;

pub(super) async fn next_line<R: AsyncRead + Unpin>(
    lines: &mut Option<LineReader<R>>,
) -> Option<Vec<u8>> {
    match lines {
        Some(reader) => reader.next_line().await,
        None => std::future::pending().await,
    }
}

/// Splits a byte stream at `\n` without a line-length limit short of [`MAX_LINE_BYTES`]; longer
/// lines are skipped whole. The last line may lack its newline.
///
/// Cancel-safe: the line being read lives in the reader, not in the future, so a `select!` that
/// drops [`LineReader::next_line`] mid-line loses nothing.
pub(super) struct LineReader<R> {
    reader: BufReader<R>,
    /// The line read so far.
    partial: Vec<u8>,
    /// The line being read is over the limit and is being skipped.
    oversized: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(reader: BufReader<R>) -> Self {
        LineReader {
            reader,
            partial: Vec::new(),
            oversized: false,
            done: false,
        }
    }

    /// The next line without its newline; `None` at end of stream (or on a read error).
    pub(super) async fn next_line(&mut self) -> Option<Vec<u8>> {
        while !self.done {
            let chunk = match self.reader.fill_buf().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(error = %e, "reading claude's stdout failed");
                    self.done = true;
                    break;
                }
            };
            if chunk.is_empty() {
                self.done = true;
                break;
            }
            let (part, found, used) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], true, i + 1),
                None => (chunk, false, chunk.len()),
            };
            if !self.oversized {
                if self.partial.len() + part.len() > MAX_LINE_BYTES {
                    self.oversized = true;
                    self.partial = Vec::new();
                } else {
                    self.partial.extend_from_slice(part);
                }
            }
            self.reader.consume(used);
            if found {
                if std::mem::take(&mut self.oversized) {
                    tracing::warn!("skipped a stdout line over {MAX_LINE_BYTES} bytes");
                    continue;
                }
                return Some(std::mem::take(&mut self.partial));
            }
        }
        let line = std::mem::take(&mut self.partial);
        (!line.is_empty() && !std::mem::take(&mut self.oversized)).then_some(line)
    }
}

/// Reads a stream to its end, keeping only the last [`STDERR_TAIL_BYTES`].
pub(super) async fn read_tail<R: AsyncRead + Unpin>(mut reader: R) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
    }
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
    }
    String::from_utf8_lossy(&tail).into_owned()
}
