//! Line decoding shared by the socket receiver and the text-file source: how bytes become `String`
//! records, and what happens to bytes that are not valid UTF-8 or lines that are too long.
//!
//! # Line rules
//! * A line ends at `\n`; one trailing `\r` is stripped (so CRLF input gives the same lines as LF
//!   input). A lone `\r` inside a line is kept (Java's `BufferedReader.readLine`, which Spark's
//!   socket receiver uses, would split there; spate does not, so `\r` is data, as in `wc -l`).
//! * A final line without a terminating `\n` (the peer closed mid-line, a file without a trailing
//!   newline) is still a line, as Spark's `readLine` and Hadoop's `LineRecordReader` deliver it.
//! * The line length limit applies to the bytes before the `\n` (a trailing `\r` included).

use std::borrow::Cow;

/// Default longest accepted line: 1 MiB (bytes, excluding the `\n`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// What to do with a line that is not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidUtf8Policy {
    /// Replace each invalid sequence with U+FFFD (`String::from_utf8_lossy`) and keep the line;
    /// the line is counted as `invalid_utf8`. The default, and what `tr`/`sort`/`uniq` users expect
    /// from a word count: no data silently disappears.
    #[default]
    Replace,
    /// Drop the whole line and count it as `invalid_utf8`.
    Skip,
    /// Treat the input as failed: the socket receiver reports the error and reconnects after the
    /// restart delay (the rest of that connection is lost); the file source fails the batch's read
    /// with [`crate::SourceError::InvalidData`].
    Error,
}

/// What to do with a line longer than the configured limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverlongPolicy {
    /// Drop the line and count it as `too_long`. The default. The socket receiver never buffers
    /// more than the limit: the rest of the line is discarded as it arrives.
    #[default]
    Skip,
    /// Treat the input as failed (as [`InvalidUtf8Policy::Error`]).
    Error,
}

/// The line policies and limit shared by the socket receiver and the file source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinePolicy {
    /// Longest accepted line in bytes (excluding the `\n`); at least 1.
    pub max_line_bytes: usize,
    /// Policy for lines that are not valid UTF-8.
    pub invalid_utf8: InvalidUtf8Policy,
    /// Policy for lines longer than `max_line_bytes`.
    pub overlong: OverlongPolicy,
}

impl Default for LinePolicy {
    fn default() -> Self {
        LinePolicy {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            invalid_utf8: InvalidUtf8Policy::default(),
            overlong: OverlongPolicy::default(),
        }
    }
}

/// The outcome of decoding one line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A record.
    Line(String),
    /// Dropped: invalid UTF-8 under [`InvalidUtf8Policy::Skip`].
    SkippedInvalid,
    /// Invalid UTF-8 under [`InvalidUtf8Policy::Error`]; `valid_up_to` is the byte offset of the
    /// first invalid byte within the line.
    InvalidError {
        /// Offset of the first invalid byte within the line.
        valid_up_to: usize,
    },
}

/// Strips one trailing `\r`.
pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// Decodes one line (without its `\n`; a trailing `\r` is stripped here). Returns the outcome and
/// whether the line contained invalid UTF-8.
pub(crate) fn decode_line(line: &[u8], policy: InvalidUtf8Policy) -> (Decoded, bool) {
    let line = strip_cr(line);
    match std::str::from_utf8(line) {
        Ok(s) => (Decoded::Line(s.to_owned()), false),
        Err(e) => match policy {
            InvalidUtf8Policy::Replace => match String::from_utf8_lossy(line) {
                Cow::Owned(s) => (Decoded::Line(s), true),
                Cow::Borrowed(s) => (Decoded::Line(s.to_owned()), true),
            },
            InvalidUtf8Policy::Skip => (Decoded::SkippedInvalid, true),
            InvalidUtf8Policy::Error => (
                Decoded::InvalidError {
                    valid_up_to: e.valid_up_to(),
                },
                true,
            ),
        },
    }
}

/// Per-input line statistics (the file source's per-read counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Lines delivered as records.
    pub lines: u64,
    /// Bytes consumed (including terminators and dropped lines).
    pub bytes: u64,
    /// Lines that were not valid UTF-8 (replaced or skipped).
    pub invalid_utf8: u64,
    /// Lines dropped because they were longer than the limit.
    pub too_long: u64,
}

/// Why [`split_lines`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// Invalid UTF-8 under the `Error` policy, at this byte offset of the input.
    InvalidUtf8 {
        /// Byte offset of the first invalid byte in the whole input.
        offset: u64,
        /// 1-based line number.
        line: u64,
    },
    /// An overlong line under the `Error` policy, starting at this byte offset.
    TooLong {
        /// Byte offset of the line start.
        offset: u64,
        /// 1-based line number.
        line: u64,
        /// The line's length in bytes.
        len: usize,
    },
}

/// Splits a whole buffer (a file's content) into records under `policy`, appending to `out`.
pub(crate) fn split_lines(
    data: &[u8],
    policy: &LinePolicy,
    out: &mut Vec<String>,
    counts: &mut LineCounts,
) -> Result<(), SplitError> {
    let mut start = 0usize;
    let mut line_no = 0u64;
    counts.bytes += data.len() as u64;
    while start < data.len() {
        line_no += 1;
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let line = &data[start..end];
        if line.len() > policy.max_line_bytes {
            match policy.overlong {
                OverlongPolicy::Skip => counts.too_long += 1,
                OverlongPolicy::Error => {
                    return Err(SplitError::TooLong {
                        offset: start as u64,
                        line: line_no,
                        len: line.len(),
                    })
                }
            }
        } else {
            let (decoded, invalid) = decode_line(line, policy.invalid_utf8);
            if invalid {
                counts.invalid_utf8 += 1;
            }
            match decoded {
                Decoded::Line(s) => {
                    counts.lines += 1;
                    out.push(s);
                }
                Decoded::SkippedInvalid => {}
                Decoded::InvalidError { valid_up_to } => {
                    return Err(SplitError::InvalidUtf8 {
                        offset: (start + valid_up_to) as u64,
                        line: line_no,
                    })
                }
            }
        }
        start = end + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8], policy: LinePolicy) -> (Result<(), SplitError>, Vec<String>, LineCounts) {
        let mut out = Vec::new();
        let mut c = LineCounts::default();
        let r = split_lines(data, &policy, &mut out, &mut c);
        (r, out, c)
    }

    #[test]
    fn lf_crlf_and_final_partial_line() {
        let (r, out, c) = split(b"a b\r\nc\n\nlast", LinePolicy::default());
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec!["a b", "c", "", "last"]);
        assert_eq!(c.lines, 4);
        assert_eq!(c.bytes, 12);
    }

    #[test]
    fn lone_cr_is_data() {
        let (_, out, _) = split(b"a\rb\n", LinePolicy::default());
        assert_eq!(out, vec!["a\rb"]);
    }

    #[test]
    fn invalid_utf8_policies() {
        let data = b"ok\nbad \xff\xfe x\nok2\n";
        let (r, out, c) = split(data, LinePolicy::default());
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec!["ok", "bad \u{fffd}\u{fffd} x", "ok2"]);
        assert_eq!(c.invalid_utf8, 1);

        let p = LinePolicy {
            invalid_utf8: InvalidUtf8Policy::Skip,
            ..LinePolicy::default()
        };
        let (_, out, c) = split(data, p);
        assert_eq!(out, vec!["ok", "ok2"]);
        assert_eq!((c.lines, c.invalid_utf8), (2, 1));

        let p = LinePolicy {
            invalid_utf8: InvalidUtf8Policy::Error,
            ..LinePolicy::default()
        };
        let (r, _, _) = split(data, p);
        assert_eq!(r, Err(SplitError::InvalidUtf8 { offset: 7, line: 2 }));
    }

    #[test]
    fn overlong_policies() {
        let data = b"short\n0123456789\nx\n";
        let p = LinePolicy {
            max_line_bytes: 5,
            ..LinePolicy::default()
        };
        let (_, out, c) = split(data, p);
        assert_eq!(out, vec!["short", "x"]);
        assert_eq!(c.too_long, 1);
        let p = LinePolicy {
            max_line_bytes: 5,
            overlong: OverlongPolicy::Error,
            ..LinePolicy::default()
        };
        let (r, _, _) = split(data, p);
        assert_eq!(
            r,
            Err(SplitError::TooLong {
                offset: 6,
                line: 2,
                len: 10
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect();
            for p in [
                InvalidUtf8Policy::Replace,
                InvalidUtf8Policy::Skip,
                InvalidUtf8Policy::Error,
            ] {
                let policy = LinePolicy {
                    max_line_bytes: 17,
                    invalid_utf8: p,
                    overlong: OverlongPolicy::Skip,
                };
                let _ = split(&data, policy);
            }
        }
    }
}
