//! `spate gen`: deterministic corpora for tests and benchmarks.
//!
//! * `spate gen words --lines N --seed S` — lines of 10 pseudo-words drawn uniformly from a
//!   vocabulary of 10,000 distinct lowercase words of 3–10 letters. **Byte-identical** to the Spark
//!   harness's `common.generate_lines(N, S)` + `ensure_corpus` (`../shared/bench/spark/common.py`):
//!   the same vocabulary (seed 20240601) and the same draws, because [`super::pyrand`] reproduces
//!   CPython's Mersenne Twister and the `random.py` 3.11 algorithms (`randint`, `choice`,
//!   `choices`). So `spate gen words --lines 500000 --seed 1` is `work/corpus_cyclic_500k.txt`.
//! * `spate gen clicks --lines N --seed S [--malformed F]` — `deviceId|deviceType|time|click` lines
//!   (time in ms since the epoch, click 0 or 1), with a fraction `F` of malformed lines of several
//!   kinds (missing or extra fields, non-numeric time or click, empty fields, no separator).

use super::pyrand::{vocabulary, PyRandom};
use clap::{Args, Subcommand};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Vocabulary size of the Spark harness (`common.VOCAB_SIZE`).
pub(crate) const VOCAB_SIZE: usize = 10_000;
/// Words per line (`common.WORDS_PER_LINE`).
pub(crate) const WORDS_PER_LINE: usize = 10;
/// Vocabulary seed (`common.VOCAB_SEED`).
pub(crate) const VOCAB_SEED: u64 = 20_240_601;

/// The device types of `spate gen clicks`.
pub(crate) const DEVICE_TYPES: [&str; 5] = ["phone", "tablet", "desktop", "tv", "watch"];

/// `spate gen` arguments.
#[derive(Debug, Args)]
pub(crate) struct GenArgs {
    #[command(subcommand)]
    kind: GenKind,
}

/// What every corpus kind takes.
#[derive(Debug, Args)]
struct Corpus {
    /// Number of lines.
    #[arg(long)]
    lines: u64,
    /// Seed of the line draws (for words, common.py's `generate_lines(n, seed)`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (written atomically: temp file + rename); stdout if absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum GenKind {
    /// 10-word lines of pseudo-words, byte-identical to the Spark harness corpus (common.py).
    Words(Corpus),
    /// `deviceId|deviceType|time|click` lines for `spate clicks`.
    Clicks {
        #[command(flatten)]
        corpus: Corpus,
        /// Fraction of malformed lines, 0.0–1.0.
        #[arg(long, default_value_t = 0.0)]
        malformed: f64,
        /// Number of distinct devices.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Time of the first event, ms since the epoch.
        #[arg(long, default_value_t = 1_700_000_000_000)]
        start_ms: u64,
        /// Time step between consecutive events, ms.
        #[arg(long, default_value_t = 1)]
        step_ms: u64,
    },
}

/// Writes `common.generate_lines(lines, seed)` joined by `\n` plus a final `\n`, exactly as
/// `ensure_corpus` writes it (so 0 lines write a single `\n`, as Python does).
pub(crate) fn write_words(lines: u64, seed: u64, w: &mut dyn Write) -> io::Result<()> {
    let vocab = vocabulary(VOCAB_SIZE, VOCAB_SEED);
    let mut rng = PyRandom::new(seed);
    let mut line = String::with_capacity(128);
    for _ in 0..lines {
        line.clear();
        for k in 0..WORDS_PER_LINE {
            if k > 0 {
                line.push(' ');
            }
            line.push_str(&vocab[rng.choices_index(vocab.len())]);
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    if lines == 0 {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes click lines; see the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_clicks(
    lines: u64,
    seed: u64,
    malformed: f64,
    devices: u32,
    start_ms: u64,
    step_ms: u64,
    w: &mut dyn Write,
) -> io::Result<()> {
    let mut rng = PyRandom::new(seed);
    let devices = devices.max(1);
    for i in 0..lines {
        let t = start_ms.saturating_add(i.saturating_mul(step_ms));
        let dev = rng.randbelow(devices);
        let ty = DEVICE_TYPES[(dev as usize) % DEVICE_TYPES.len()];
        let click = u32::from(rng.random() < 0.3);
        if rng.random() < malformed {
            match rng.randbelow(6) {
                0 => writeln!(w, "dev-{dev}|{ty}|{t}")?,
                1 => writeln!(w, "dev-{dev}|{ty}|{t}|{click}|extra")?,
                2 => writeln!(w, "dev-{dev}|{ty}|not-a-time|{click}")?,
                3 => writeln!(w, "dev-{dev}|{ty}|{t}|yes")?,
                4 => writeln!(w, "|{ty}|{t}|{click}")?,
                _ => writeln!(w, "garbage line without separators {i}")?,
            }
        } else {
            writeln!(w, "dev-{dev}|{ty}|{t}|{click}")?;
        }
    }
    Ok(())
}

fn with_output(
    out: Option<&Path>,
    f: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), String> {
    match out {
        None => {
            let stdout = io::stdout();
            let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
            match f(&mut w).and_then(|()| w.flush()) {
                Ok(()) => Ok(()),
                // `spate gen ... | head` closes the pipe: not an error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(format!("writing to stdout: {e}")),
            }
        }
        Some(path) => {
            let name = path
                .file_name()
                .ok_or_else(|| format!("{}: not a file path", path.display()))?;
            let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
            let res = (|| {
                let file = std::fs::File::create(&tmp)?;
                let mut w = BufWriter::with_capacity(1 << 20, file);
                f(&mut w)?;
                let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)
            })();
            res.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("writing {}: {e}", path.display())
            })
        }
    }
}

/// Runs `spate gen`.
pub(crate) fn run(args: GenArgs) -> Result<(), String> {
    match args.kind {
        GenKind::Words(Corpus { lines, seed, out }) => {
            with_output(out.as_deref(), |w| write_words(lines, seed, w))
        }
        GenKind::Clicks {
            corpus: Corpus { lines, seed, out },
            malformed,
            devices,
            start_ms,
            step_ms,
        } => {
            if !(0.0..=1.0).contains(&malformed) {
                return Err(format!(
                    "--malformed must be within 0.0..=1.0, got {malformed}"
                ));
            }
            with_output(out.as_deref(), |w| {
                write_clicks(lines, seed, malformed, devices, start_ms, step_ms, w)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_matches_common_py() {
        // python3 -c "import common; v=common.vocabulary(); print(v[:3], v[-1])"
        let v = vocabulary(VOCAB_SIZE, VOCAB_SEED);
        assert_eq!(&v[..3], ["onpz", "shnkgnr", "clnjsqkbe"]);
        assert_eq!(v[VOCAB_SIZE - 1], "gablbhvqh");
    }

    #[test]
    fn lines_match_common_py() {
        // python3 -c "import common; l=common.generate_lines(1000, 1); print(l[0]); print(l[999])"
        let mut buf = Vec::new();
        write_words(1000, 1, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(
            lines[0],
            "mggzzysawi jpolvzeyuf ralpwntcv ebu mrksvop ackbeqf ekbzspetg mbmlmbzam lynacpz iojusdoajz"
        );
        assert_eq!(
            lines[999],
            "nit kfko cpcm npffjdla jchx hlxqyaxa ggegggjjw rucguvolqu pvuyjn wkgacsg"
        );
    }

    #[test]
    fn clicks_malformed_fraction_is_roughly_honoured() {
        let mut buf = Vec::new();
        write_clicks(10_000, 7, 0.1, 50, 0, 10, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let bad = text
            .lines()
            .filter(|l| super::super::clicks::parse_click(l).is_none())
            .count();
        assert!((800..1200).contains(&bad), "{bad} malformed");
        let mut again = Vec::new();
        write_clicks(10_000, 7, 0.1, 50, 0, 10, &mut again).unwrap();
        assert_eq!(text.as_bytes(), &again[..]);
    }
}
