//! Word counting shared by `spate wordcount` and the end-to-end benchmark: a word is a maximal run
//! of non-whitespace characters (`str::split_whitespace`), counted case-sensitively.

/// Counts the words (`split_whitespace`) of `lines`: one `(word, count)` per distinct word, in no
/// particular order.
///
/// Words of at most [`PACKED_MAX`] bytes (all words of the benchmark corpora) are counted under a
/// packed `u128` key — the bytes, zero-padded, with the length in the top byte — so a probe is one
/// 128-bit hash and compare instead of hashing a `&str` and calling `memcmp` (which together were
/// about half of `spate wordcount`'s CPU: docs/performance.md, "Hot spots"). Longer words use a
/// `&str` map. Same words and counts as `split_whitespace`.
pub(crate) fn count_words(lines: &[String]) -> Vec<(String, u64)> {
    let mut short: rustc_hash::FxHashMap<u128, u64> = rustc_hash::FxHashMap::default();
    let mut long: rustc_hash::FxHashMap<&str, u64> = rustc_hash::FxHashMap::default();
    for l in lines {
        let b = l.as_bytes();
        if l.is_ascii() {
            // Fast path, same words: for ASCII text `char::is_whitespace` is exactly
            // `\t \n \x0B \x0C \r` and space.
            let n = b.len();
            let mut i = 0;
            loop {
                while i < n && ASCII_WS[usize::from(b[i])] {
                    i += 1;
                }
                if i == n {
                    break;
                }
                let s = i;
                // SWAR: one 16-byte load finds the word's end and is its packed key.
                if let Some((key, len)) = b.get(s..s + 16).and_then(packed_word) {
                    *short.entry(key).or_insert(0) += 1;
                    i = s + len;
                    continue;
                }
                while i < n && !ASCII_WS[usize::from(b[i])] {
                    i += 1;
                }
                if i - s <= PACKED_MAX {
                    *short.entry(pack(b, s, i - s)).or_insert(0) += 1;
                } else {
                    *long.entry(&l[s..i]).or_insert(0) += 1;
                }
            }
        } else {
            for w in l.split_whitespace() {
                if w.len() <= PACKED_MAX {
                    let s = w.as_ptr() as usize - b.as_ptr() as usize;
                    *short.entry(pack(b, s, w.len())).or_insert(0) += 1;
                } else {
                    *long.entry(w).or_insert(0) += 1;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(short.len() + long.len());
    out.extend(short.into_iter().map(|(k, c)| (unpack(k), c)));
    out.extend(long.into_iter().map(|(w, c)| (w.to_owned(), c)));
    out
}

/// Longest word counted under a packed key, bytes.
const PACKED_MAX: usize = 15;

/// `char::is_whitespace` for ASCII bytes (`\t`..=`\r` and space); false for bytes >= 0x80.
const ASCII_WS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'\t';
    while c <= b'\r' {
        t[c as usize] = true;
        c += 1;
    }
    t[b' ' as usize] = true;
    t
};

/// For 16 bytes starting at a word (first byte not whitespace) of ASCII text: the packed key and
/// length of the word if it ends within them at a whitespace byte; `None` (take the byte loop) if
/// it is longer or the first byte below 0x21 is a control character that is not whitespace.
#[inline]
fn packed_word(chunk: &[u8]) -> Option<(u128, usize)> {
    const ONES: u128 = u128::from_le_bytes([0x01; 16]);
    const HIGH: u128 = u128::from_le_bytes([0x80; 16]);
    let mut a = [0u8; 16];
    a.copy_from_slice(chunk);
    let v = u128::from_le_bytes(a);
    // Bytes < 0x21 (ASCII: v's bytes are < 0x80): the lowest flagged byte is exact.
    let below = v.wrapping_sub(ONES * 0x21) & !v & HIGH;
    if below == 0 {
        return None;
    }
    let len = (below.trailing_zeros() / 8) as usize;
    if len > PACKED_MAX || !ASCII_WS[usize::from(chunk[len])] {
        return None;
    }
    Some((
        (v & ((1u128 << (8 * len)) - 1)) | ((len as u128) << 120),
        len,
    ))
}

/// The packed key of `b[s..s + len]` (`len <= PACKED_MAX`): bytes little-endian in the low 15
/// bytes, `len` in the top byte (so `"a"` and `"a\0"` differ).
#[inline]
fn pack(b: &[u8], s: usize, len: usize) -> u128 {
    debug_assert!(len <= PACKED_MAX);
    let bytes = if let Some(chunk) = b.get(s..s + 16) {
        // One unaligned 16-byte load, masked to the word.
        let mut a = [0u8; 16];
        a.copy_from_slice(chunk);
        u128::from_le_bytes(a) & ((1u128 << (8 * len)) - 1)
    } else {
        let mut a = [0u8; 16];
        for (d, &x) in a.iter_mut().zip(&b[s..s + len]) {
            *d = x;
        }
        u128::from_le_bytes(a)
    };
    bytes | ((len as u128) << 120)
}

/// The word of a packed key (always whole UTF-8: it was a `&str` word).
fn unpack(k: u128) -> String {
    let a = k.to_le_bytes();
    let w = &a[..usize::from(a[15])];
    match std::str::from_utf8(w) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(w).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_maximal_non_whitespace_runs_case_sensitive() {
        let lines = vec![
            "The the  THE\tthe\u{a0}x".to_string(),
            String::new(),
            " caf\u{e9}, caf\u{e9}\r".to_string(),
        ];
        let mut got = super::count_words(&lines);
        got.sort();
        let want: Vec<(String, u64)> = vec![
            ("THE".into(), 1),
            ("The".into(), 1),
            ("caf\u{e9}".into(), 1),
            ("caf\u{e9},".into(), 1),
            ("the".into(), 2),
            ("x".into(), 1),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn ascii_fast_path_equals_split_whitespace() {
        let mut x = 12345u32;
        for _ in 0..20_000 {
            let line: String = (0..(x % 90))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Letters weighted up so words of 1 to 30+ bytes occur (both sides of the
                    // 15-byte packed limit and of the 16-byte load).
                    [
                        ' ', '\t', '\n', '\x0b', '\x0c', '\r', '\x1c', 'a', 'B', ',', '\u{a0}',
                        '\u{85}', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', '\0',
                    ][(x % 22) as usize]
                })
                .collect();
            let mut got = super::count_words(std::slice::from_ref(&line));
            got.sort();
            let mut want: std::collections::BTreeMap<String, u64> = Default::default();
            for w in line.split_whitespace() {
                *want.entry(w.to_owned()).or_insert(0) += 1;
            }
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{line:?}");
        }
    }

    #[test]
    fn packed_keys_keep_lengths_boundaries_and_long_words_apart() {
        let long16 = "abcdefghijklmnop"; // 16 bytes: the &str map
        let lines = vec![
            format!("a a\0 a\0\0 {long16} {long16} abcdefghijklmno abcdefghijklmno"),
            // a word ending the line, with fewer than 16 bytes after its start
            "x abcdefghijklmn".to_string(),
            // non-ASCII: packed from within the line, and a long non-ASCII word
            "caf\u{e9} \u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9} caf\u{e9}\u{a0}x"
                .to_string(),
        ];
        let mut got = super::count_words(&lines);
        got.sort();
        let mut want: std::collections::BTreeMap<String, u64> = Default::default();
        for l in &lines {
            for w in l.split_whitespace() {
                *want.entry(w.to_owned()).or_insert(0) += 1;
            }
        }
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    }
}
