//! Per-batch result files of the jobs' `--output DIR`: `DIR/<name>-<batch ms>.txt`, one
//! `key<TAB>value` line per element sorted by key, written atomically (temp file, fsync, rename,
//! directory fsync) so a re-run of a batch overwrites cleanly and a reader never sees half a file.

use std::fmt::Display;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The file of batch `time_ms` for job `name` under `dir`.
pub(crate) fn batch_path(dir: &Path, name: &str, time_ms: u64) -> PathBuf {
    dir.join(format!("{name}-{time_ms}.txt"))
}

/// Writes `items` (sorted here by key) as `key\tvalue` lines to `DIR/<name>-<time_ms>.txt`.
///
/// # Durability
/// Once this returns `Ok`, the file is complete and durable (file and directory fsynced).
///
/// # Errors
/// The I/O error, with the path.
pub(crate) fn write_batch<K: Ord + Display, V: Display>(
    dir: &Path,
    name: &str,
    time_ms: u64,
    items: &mut [(K, V)],
) -> Result<PathBuf, String> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let path = batch_path(dir, name, time_ms);
    let tmp = dir.join(format!(".{name}-{time_ms}.txt.tmp"));
    let res = (|| -> io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        for (k, v) in items.iter() {
            writeln!(w, "{k}\t{v}")?;
        }
        let f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_tab_separated_and_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let mut items = vec![
            ("b".to_string(), 2u64),
            ("a".to_string(), 1),
            ("B".to_string(), 3),
        ];
        let p = write_batch(d.path(), "wordcount", 1000, &mut items).unwrap();
        assert_eq!(p, d.path().join("wordcount-1000.txt"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "B\t3\na\t1\nb\t2\n");
        let mut items: Vec<(String, u64)> = vec![];
        write_batch(d.path(), "wordcount", 1000, &mut items).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error_with_the_path() {
        let d = tempfile::tempdir().unwrap();
        let mut items = vec![("a".to_string(), 1u64)];
        let e = write_batch(&d.path().join("nope"), "x", 1, &mut items).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
