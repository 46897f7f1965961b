//! Word counting shared by `spate wordcount` and the end-to-end benchmark: a word is a maximal run
//! of non-whitespace characters (`str::split_whitespace`), counted case-sensitively.

/// Counts the words (`split_whitespace`) of `lines`.
pub(crate) fn count_words(lines: &[String]) -> Vec<(String, u64)> {
    let mut m: rustc_hash::FxHashMap<&str, u64> = rustc_hash::FxHashMap::default();
    for l in lines {
        if l.is_ascii() {
            // Fast path, same words: for ASCII text `char::is_whitespace` is exactly
            // `\t \n \x0B \x0C \r` and space.
            let b = l.as_bytes();
            let mut start = None;
            for (i, &c) in b.iter().enumerate() {
                let ws = c == b' ' || (b'\t'..=b'\r').contains(&c);
                match (ws, start) {
                    (true, Some(s)) => {
                        *m.entry(&l[s..i]).or_insert(0) += 1;
                        start = None;
                    }
                    (false, None) => start = Some(i),
                    _ => {}
                }
            }
            if let Some(s) = start {
                *m.entry(&l[s..]).or_insert(0) += 1;
            }
        } else {
            for w in l.split_whitespace() {
                *m.entry(w).or_insert(0) += 1;
            }
        }
    }
    m.into_iter().map(|(w, c)| (w.to_owned(), c)).collect()
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
        for _ in 0..2000 {
            let line: String = (0..(x % 40))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    [
                        ' ', '\t', '\n', '\x0b', '\x0c', '\r', '\x1c', 'a', 'B', ',', '\u{a0}',
                        '\u{85}',
                    ][(x % 12) as usize]
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
}
