//! Reads newline-terminated lines with a length limit.
//!
//! A line split across reads is reassembled; a line longer than the limit is skipped up to its
//! newline and reported as [`Line::Oversize`] without ever holding more than the limit in
//! memory; `\r\n` endings are accepted. A last line without a newline is returned at EOF.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub enum Line<'a> {
    Complete(&'a [u8]),
    /// A line over the limit was skipped.
    Oversize,
}

pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    /// Inside an oversize line: drop bytes until its newline.
    discarding: bool,
    /// Bytes of the line last returned straight from the reader's buffer, consumed when the
    /// next line is asked for.
    pending: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
            discarding: false,
            pending: 0,
        }
    }

    /// The next line, or `None` at end of input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.inner.consume(std::mem::take(&mut self.pending));
        self.buf.clear();
        loop {
            let available = self.inner.fill_buf().await?;
            if let Some(i) = memchr::memchr(b'\n', available)
                && self.buf.is_empty()
                && !self.discarding
                && i <= self.max
            {
                // A whole line in the buffer is returned from there, without a copy; it is
                // consumed at the next call. (Asked again: the buffer is not empty, so this
                // reads nothing.)
                self.pending = i + 1;
                let available = self.inner.fill_buf().await?;
                return Ok(Some(Line::Complete(trim_cr(&available[..i]))));
            }
            if available.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::Oversize));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line::Complete(trim_cr(&self.buf))));
            }
            match memchr::memchr(b'\n', available) {
                Some(i) => {
                    let oversize = self.discarding || self.buf.len() + i > self.max;
                    if !oversize {
                        self.buf.extend_from_slice(&available[..i]);
                    }
                    self.inner.consume(i + 1);
                    if oversize {
                        self.discarding = false;
                        self.buf.clear();
                        return Ok(Some(Line::Oversize));
                    }
                    return Ok(Some(Line::Complete(trim_cr(&self.buf))));
                }
                None => {
                    let n = available.len();
                    if !self.discarding {
                        if self.buf.len() + n > self.max {
                            self.discarding = true;
                            self.buf.clear();
                        } else {
                            self.buf.extend_from_slice(available);
                        }
                    }
                    self.inner.consume(n);
                }
            }
        }
    }
}

impl<R: tokio::io::AsyncRead> LineReader<tokio::io::BufReader<R>> {
    /// Whether the next line is already buffered: [`LineReader::next_line`] then returns it
    /// without waiting for the peer.
    pub fn line_buffered(&self) -> bool {
        let rest = self.inner.buffer().get(self.pending..).unwrap_or_default();
        memchr::memchr(b'\n', rest).is_some()
    }
}

fn trim_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn read_all(input: &[u8], max: usize, chunk: usize) -> Vec<Option<String>> {
        // A tiny buffer forces lines to be split across reads.
        let mut r = LineReader::new(BufReader::with_capacity(chunk, input), max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(match l {
                Line::Complete(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Line::Oversize => None,
            });
        }
        out
    }

    /// What the reader must give for `input`: its lines split at `\n`, a `\r` before it
    /// dropped, those over `max` bytes (with the `\r`) as oversize, and a last line without a
    /// newline when it has bytes.
    fn model(input: &[u8], max: usize) -> Vec<Option<String>> {
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if parts.last().is_some_and(|l| l.is_empty()) {
            parts.pop();
        }
        parts
            .into_iter()
            .map(|l| (l.len() <= max).then(|| String::from_utf8_lossy(trim_cr(l)).into_owned()))
            .collect()
    }

    proptest::proptest! {
        /// Whatever the lines, the buffer size and the limit, the reader gives the model's
        /// lines, and a line it says is buffered comes without waiting.
        #[test]
        fn lines_are_what_the_model_says(
            input in proptest::collection::vec(proptest::sample::select(b"ab\r\n".to_vec()), 0..200),
            chunk in 1usize..40,
            max in 0usize..12,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let mut r = LineReader::new(BufReader::with_capacity(chunk, &input[..]), max);
                let mut out = Vec::new();
                loop {
                    let buffered = r.line_buffered();
                    let Some(l) = r.next_line().await.unwrap() else {
                        assert!(!buffered, "a buffered line was promised");
                        break;
                    };
                    out.push(match l {
                        Line::Complete(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        Line::Oversize => None,
                    });
                }
                out
            });
            proptest::prop_assert_eq!(got, model(&input, max));
        }
    }

    #[tokio::test]
    async fn splits_reassembles_and_skips_oversize() {
        let input = b"short\r\nthis line is far too long\nok\nlast-no-newline";
        for chunk in [1, 3, 7, 64] {
            let got = read_all(input, 10, chunk).await;
            assert_eq!(
                got,
                vec![Some("short".into()), None, Some("ok".into()), None],
                "chunk {chunk}"
            );
        }
        let got = read_all(b"a\n\nb\nexactly-10\n", 10, 4).await;
        assert_eq!(
            got,
            vec![
                Some("a".into()),
                Some("".into()),
                Some("b".into()),
                Some("exactly-10".into())
            ]
        );
    }
}
