//! Replayable test sources.

use spate_sources::{ReplayableSource, Selection, SourceError};
use spate_types::BatchTime;
use std::sync::{Arc, Mutex};

/// The seconds a [`PerSecond`] source selected, in order.
pub type SelectLog = Arc<Mutex<Vec<u64>>>;

/// A replayable source making one selection per second: batch `t` selects second `t / 1000`
/// (8 little-endian bytes) and reads the items `items(second)`. Its position is the highest
/// second selected (a restore also folds in the replayed selections), so a restore that forgot it
/// would select again; [`PerSecond::strict`] panics when a second is selected twice.
pub struct PerSecond<T> {
    name: &'static str,
    items: Arc<dyn Fn(u64) -> Vec<T> + Send + Sync>,
    strict: bool,
    last: u64,
    selects: SelectLog,
}

impl<T> std::fmt::Debug for PerSecond<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerSecond")
            .field("name", &self.name)
            .field("strict", &self.strict)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<T> PerSecond<T> {
    /// A source named `name` whose second `s` holds `items(s)`.
    pub fn new(name: &'static str, items: impl Fn(u64) -> Vec<T> + Send + Sync + 'static) -> Self {
        PerSecond {
            name,
            items: Arc::new(items),
            strict: false,
            last: 0,
            selects: SelectLog::default(),
        }
    }

    /// Panics when a second is selected twice (at or below the position).
    #[must_use]
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// The log of selected seconds (shared: it keeps filling after the source moved into a
    /// context).
    #[must_use]
    pub fn selects(&self) -> SelectLog {
        Arc::clone(&self.selects)
    }
}

fn le_u64(bytes: &[u8], what: &'static str) -> Result<u64, SourceError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| SourceError::Invalid {
        what,
        reason: "not 8 bytes".into(),
    })?;
    Ok(u64::from_le_bytes(b))
}

impl<T: Send + 'static> ReplayableSource<T> for PerSecond<T> {
    fn select(&mut self, time: BatchTime) -> Result<Selection, SourceError> {
        let s = time.0 / 1000;
        if self.strict {
            assert!(
                s > self.last,
                "second {s} selected twice (last {})",
                self.last
            );
        }
        self.last = s;
        self.selects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(s);
        Ok(Selection {
            time,
            data: s.to_le_bytes().to_vec(),
            summary: format!("second {s}"),
        })
    }
    fn read(&self, sel: &Selection) -> Result<Vec<T>, SourceError> {
        Ok((self.items)(le_u64(&sel.data, "selection")?))
    }
    fn position(&self) -> Result<Vec<u8>, SourceError> {
        Ok(self.last.to_le_bytes().to_vec())
    }
    fn restore(&mut self, p: &[u8], replayed: &[Selection]) -> Result<(), SourceError> {
        self.last = le_u64(p, "position")?;
        for s in replayed {
            self.last = self.last.max(s.time.0 / 1000);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        self.name.into()
    }
}
