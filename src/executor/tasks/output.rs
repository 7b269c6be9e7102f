//! What is kept of a program's output while it runs: the combined tail of stdout and stderr
//! (bounded by [`OUTPUT_LIMIT`]) and the tail of stderr alone, for a failure's error message.

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::context::OUTPUT_LIMIT;

/// How much of stderr is kept apart to quote its last line in a failed program's error.
const STDERR_TAIL: usize = 4 * 1024;

/// The longest last line of stderr quoted in an error message.
const ERROR_LINE_LIMIT: usize = 500;

/// What a program wrote: the combined tail, and the tail of stderr alone for error messages.
pub(super) struct Captured {
    pub(super) output: TailBuffer,
    pub(super) stderr: TailBuffer,
}

impl Default for Captured {
    fn default() -> Self {
        Captured {
            output: TailBuffer::new(OUTPUT_LIMIT),
            stderr: TailBuffer::new(STDERR_TAIL),
        }
    }
}

/// Copies stdout and stderr into `captured` in the order the chunks arrive, until both close.
pub(super) async fn capture_output(
    mut stdout: Option<tokio::process::ChildStdout>,
    mut stderr: Option<tokio::process::ChildStderr>,
    captured: &mut Captured,
) {
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Some(n) => captured.output.push(&out_buf[..n]),
                None => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Some(n) => {
                    captured.output.push(&err_buf[..n]);
                    captured.stderr.push(&err_buf[..n]);
                }
                None => stderr = None,
            },
        }
    }
}

/// The next chunk of a pipe, `None` at its end (or on a read error); never completes for a
/// pipe already closed.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(pipe) => match pipe.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// The last `limit` bytes written to it, and how many were dropped before them.
pub(super) struct TailBuffer {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> TailBuffer {
        TailBuffer {
            bytes: VecDeque::with_capacity(limit.min(8 * 1024)),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.limit {
            self.dropped += (chunk.len() - self.limit) as u64;
            &chunk[chunk.len() - self.limit..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(chunk);
    }

    fn contents(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.bytes.iter().copied().collect();
        if self.dropped > 0 {
            // The cut may have split a UTF-8 character: skip its continuation bytes.
            let partial = bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            bytes.drain(..partial);
        }
        bytes
    }

    /// The kept bytes as text, with a first line saying how much came before them.
    pub(super) fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.contents()).into_owned();
        if self.dropped == 0 {
            text
        } else {
            format!("[{} earlier bytes not kept]\n{text}", self.dropped)
        }
    }

    /// The last non-empty line, shortened for an error message.
    pub(super) fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.contents()).into_owned();
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        let mut line = line.to_string();
        if line.len() > ERROR_LINE_LIMIT {
            let mut cut = ERROR_LINE_LIMIT;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        Some(line)
    }
}
