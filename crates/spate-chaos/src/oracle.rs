//! The exactly-once oracle: output files never change once written, no batch is missing, the
//! final result equals the expected one (no lost input, no double-counted state), and restart
//! reports say what they should.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What kind of problem the oracle found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Input missing from the final result.
    Lost,
    /// Input counted more than once (final result, or an intermediate running total above the
    /// final one).
    Duplicated,
    /// A key whose value differs in a way that is neither (e.g. a different active count).
    Mismatch,
    /// The final result differs from the crash-free reference run.
    ReferenceMismatch,
    /// An output batch file changed content or disappeared after it was written (a re-run batch
    /// must re-emit the same bytes).
    OutputChanged,
    /// A batch time of the grid has no output file.
    OutputMissing,
    /// A restart outcome that should not happen (`Fresh` after a restore, an error, ...).
    RestartOutcome,
    /// The program ended by itself, or did not print its restart line, or the final run failed.
    ProgramFailed,
    /// The restored position (the restart report's `restored through`) moved back across
    /// restarts (I-REC-6).
    RestoredBackwards,
    /// A restart rescheduled more batches than `--max-backlog` allows.
    Backlog,
}

/// One problem, with the cycle it was seen after.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Kind.
    pub kind: FindingKind,
    /// The cycle after which it was seen (`None`: at the end).
    pub cycle: Option<u32>,
    /// Details (file names, keys, values, stderr tail).
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cycle {
            Some(c) => write!(f, "[cycle {c}] {:?}: {}", self.kind, self.detail),
            None => write!(f, "[end] {:?}: {}", self.kind, self.detail),
        }
    }
}

/// A `key<TAB>value` result; a value is the unsigned integers it contains, in order (`5`, or
/// `clicks=5 active=3` → `[5, 3]`).
pub type Table = BTreeMap<String, Vec<u64>>;

pub(crate) fn parse_table(text: &str) -> Result<Table, String> {
    let mut t = Table::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.rsplit_once('\t') else {
            return Err(format!("{line:?} is not key<TAB>value"));
        };
        let nums: Vec<u64> = v
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap_or(u64::MAX))
            .collect();
        if t.insert(k.to_owned(), nums).is_some() {
            return Err(format!("key {k:?} twice"));
        }
    }
    Ok(t)
}

/// Adds `b` into `a` component-wise.
pub(crate) fn add_into(a: &mut Table, b: &Table) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_default();
        if e.len() < v.len() {
            e.resize(v.len(), 0);
        }
        for (x, y) in e.iter_mut().zip(v) {
            *x = x.saturating_add(*y);
        }
    }
}

/// (lost, duplicated, mismatch lines) of `got` against `want`: per key and component, a smaller
/// first component is lost, a larger one duplicated; other components count the same way
/// (clicks' active devices: a device counted twice, or missed).
pub(crate) fn compare(got: &Table, want: &Table) -> (u64, u64, Vec<String>) {
    let (mut lost, mut dup) = (0u64, 0u64);
    let mut lines = Vec::new();
    let empty = Vec::new();
    for k in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let w = want.get(k).unwrap_or(&empty);
        let g = got.get(k).unwrap_or(&empty);
        if w == g {
            continue;
        }
        let n = w.len().max(g.len());
        for i in 0..n {
            let (a, b) = (
                w.get(i).copied().unwrap_or(0),
                g.get(i).copied().unwrap_or(0),
            );
            if b < a {
                lost += a - b;
            } else {
                dup += b - a;
            }
        }
        if lines.len() < 10 {
            lines.push(format!("{k:?}: expected {w:?}, found {g:?}"));
        }
    }
    (lost, dup, lines)
}

/// Output batch files by name: (batch ms, bytes, inode).
pub(crate) type BatchFiles = BTreeMap<String, (u64, Vec<u8>, u64)>;

/// The output batch files of a directory: `<anything>-<ms>.txt` → (ms, bytes, inode).
pub(crate) fn batch_files(dir: &Path) -> std::io::Result<BatchFiles> {
    use std::os::unix::fs::MetadataExt;
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ms) = name
            .strip_suffix(".txt")
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, ms)| ms.parse::<u64>().ok())
        else {
            continue;
        };
        // A file replaced between listing and reading is read on the next check.
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let ino = std::fs::metadata(e.path()).map(|m| m.ino()).unwrap_or(0);
        m.insert(name, (ms, bytes, ino));
    }
    Ok(m)
}

/// Every batch file seen so far: once written, a file never changes content or disappears.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    seen: BatchFiles,
    /// Coalesced spans `(from, batch)` the restarts reported (`missed_batches = coalesce`): the
    /// batch file at `batch` covers every grid time from `from`.
    spans: std::collections::BTreeSet<(u64, u64)>,
    /// Files replaced (new inode) with identical content: re-emitted batches compared.
    pub(crate) reemitted: usize,
}

impl Outputs {
    pub(crate) fn check(&mut self, dir: &Path, cycle: Option<u32>, findings: &mut Vec<Finding>) {
        let now = match batch_files(dir) {
            Ok(n) => n,
            Err(e) => {
                findings.push(Finding {
                    kind: FindingKind::ProgramFailed,
                    cycle,
                    detail: format!("listing the output directory {}: {e}", dir.display()),
                });
                return;
            }
        };
        for (name, (_, bytes, ino)) in &self.seen {
            match now.get(name) {
                None => findings.push(Finding {
                    kind: FindingKind::OutputChanged,
                    cycle,
                    detail: format!("batch file {name} disappeared"),
                }),
                Some((_, b2, _)) if b2 != bytes => findings.push(Finding {
                    kind: FindingKind::OutputChanged,
                    cycle,
                    detail: format!(
                        "batch file {name} changed content (a re-run batch must re-emit the same bytes): before {} bytes {:?}, after {} bytes {:?}",
                        bytes.len(),
                        head(bytes),
                        b2.len(),
                        head(b2)
                    ),
                }),
                Some((_, _, ino2)) if ino2 != ino => self.reemitted += 1,
                Some(_) => {}
            }
        }
        self.seen = now;
    }

    /// Records the coalesced spans a restart reported.
    pub(crate) fn add_spans(&mut self, spans: &[(u64, u64)]) {
        self.spans.extend(spans.iter().copied());
    }

    /// Batch times of the grid (`batch_ms` apart) between the first and the last file that have
    /// no file and are not covered by a coalesced span whose batch file exists.
    pub(crate) fn missing_batches(&self, batch_ms: u64) -> Vec<u64> {
        let times: std::collections::BTreeSet<u64> = self.seen.values().map(|v| v.0).collect();
        let (Some(&lo), Some(&hi)) = (times.first(), times.last()) else {
            return Vec::new();
        };
        let covered = |t: u64| {
            self.spans
                .iter()
                .any(|&(from, batch)| from <= t && t <= batch && times.contains(&batch))
        };
        let mut missing = Vec::new();
        let mut t = lo;
        while t <= hi && batch_ms > 0 {
            if !times.contains(&t) && !covered(t) {
                missing.push(t);
            }
            t += batch_ms;
        }
        missing
    }

    pub(crate) fn files(&self) -> usize {
        self.seen.len()
    }

    /// The newest file's table, or the sum of all files' tables.
    pub(crate) fn result(&self, per_batch: bool) -> Result<Table, String> {
        if per_batch {
            let mut t = Table::new();
            for (name, (_, b, _)) in &self.seen {
                let one =
                    parse_table(&String::from_utf8_lossy(b)).map_err(|e| format!("{name}: {e}"))?;
                add_into(&mut t, &one);
            }
            return Ok(t);
        }
        let newest = self.seen.iter().max_by_key(|(_, v)| v.0);
        match newest {
            None => Err("no output file".into()),
            Some((name, (_, b, _))) => {
                parse_table(&String::from_utf8_lossy(b)).map_err(|e| format!("{name}: {e}"))
            }
        }
    }

    /// For running totals that only grow: the excess of any file's value over the final
    /// expected one (state double-counted at some point, even if a later file looks right).
    pub(crate) fn excess_over(&self, want: &Table) -> (u64, Vec<String>) {
        let mut excess = 0;
        let mut lines = Vec::new();
        for (name, (_, b, _)) in &self.seen {
            let Ok(t) = parse_table(&String::from_utf8_lossy(b)) else {
                continue;
            };
            for (k, v) in &t {
                let w = want.get(k).and_then(|w| w.first()).copied().unwrap_or(0);
                let g = v.first().copied().unwrap_or(0);
                if g > w {
                    excess += g - w;
                    if lines.len() < 5 {
                        lines.push(format!("{name}: {k:?} = {g} > final {w}"));
                    }
                }
            }
        }
        (excess, lines)
    }
}

fn head(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

/// Independent counts: words (`split_whitespace`) as `word → [count]`.
pub fn count_words(text: &str) -> Table {
    let mut m: HashMap<&str, u64> = HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w).or_default() += 1;
    }
    m.into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v]))
        .collect()
}

/// Independent clicks totals: `type → [clicks, distinct devices]` over the well-formed lines
/// (`deviceId|deviceType|time|click`, first two fields non-empty, last two unsigned integers).
pub fn count_clicks(text: &str) -> Table {
    let mut clicks: HashMap<String, u64> = HashMap::new();
    let mut devices: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('|').collect();
        if f.len() != 4 || f[0].trim().is_empty() || f[1].trim().is_empty() {
            continue;
        }
        let (Ok(_), Ok(c)) = (f[2].trim().parse::<u64>(), f[3].trim().parse::<u64>()) else {
            continue;
        };
        *clicks.entry(f[1].trim().to_owned()).or_default() += c;
        devices
            .entry(f[1].trim().to_owned())
            .or_default()
            .insert(f[0].trim().to_owned());
    }
    clicks
        .into_iter()
        .map(|(t, c)| {
            let d = devices.get(&t).map_or(0, |d| d.len() as u64);
            (t, vec![c, d])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_lost_and_duplicated_per_component() {
        let want = parse_table("a\t3\nb\tclicks=5 active=2\nc\t1\n").unwrap();
        let got = parse_table("a\t2\nb\tclicks=7 active=2\nd\t4\n").unwrap();
        let (lost, dup, lines) = compare(&got, &want);
        assert_eq!(lost, 1 + 1, "a lost 1, c lost 1");
        assert_eq!(dup, 2 + 4, "b 2 clicks double counted, d 4 unexpected");
        assert_eq!(lines.len(), 4);
        assert_eq!(compare(&want, &want), (0, 0, vec![]));
        assert!(parse_table("a\t1\na\t2\n").is_err());
        assert!(parse_table("no tab\n").is_err());
    }

    #[test]
    fn outputs_catch_changed_and_missing_batch_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
        w("wc-1000.txt", "a\t1\n");
        w("wc-1200.txt", "a\t2\n");
        w("wc-1600.txt", "a\t3\n");
        let mut o = Outputs::default();
        let mut f = Vec::new();
        o.check(d.path(), Some(0), &mut f);
        assert!(f.is_empty());
        assert_eq!(o.missing_batches(200), vec![1400]);
        // A coalesced span covers its times only if its batch file exists.
        o.add_spans(&[(1400, 1800)]);
        assert_eq!(o.missing_batches(200), vec![1400]);
        o.add_spans(&[(1300, 1600)]);
        assert_eq!(o.missing_batches(200), Vec::<u64>::new());
        w("wc-1200.txt", "a\t9\n");
        o.check(d.path(), Some(1), &mut f);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::OutputChanged);
        assert_eq!(o.result(false).unwrap()["a"], vec![3]);
        assert_eq!(o.result(true).unwrap()["a"], vec![13]);
        let (excess, _) = o.excess_over(&parse_table("a\t3\n").unwrap());
        assert_eq!(excess, 6);
    }
}
