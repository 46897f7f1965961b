//! [`Batch<T>`]: one DStream's data for one batch time, split into partitions (Spark's RDD).

use rayon::prelude::*;
use std::fmt;
use std::sync::Arc;

/// The records of one DStream at one batch time, as an ordered list of partitions (Spark's RDD,
/// materialised). Partitions are reference-counted, so cloning a batch, windowing and union are
/// cheap; transformations take records by value when they hold the only reference and clone them
/// otherwise (for example when a window keeps the batch for later).
pub struct Batch<T> {
    parts: Vec<Arc<Vec<T>>>,
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Batch {
            parts: self.parts.clone(),
        }
    }
}

impl<T> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.len())
            .field("partitions", &self.parts.len())
            .finish()
    }
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch::empty()
    }
}

impl<T> Batch<T> {
    /// A batch with no partitions.
    pub fn empty() -> Self {
        Batch { parts: Vec::new() }
    }

    /// One partition holding `records`.
    pub fn from_vec(records: Vec<T>) -> Self {
        Batch {
            parts: vec![Arc::new(records)],
        }
    }

    /// The given partitions, in order.
    pub fn from_partitions(parts: Vec<Vec<T>>) -> Self {
        Batch {
            parts: parts.into_iter().map(Arc::new).collect(),
        }
    }

    /// `records` split into `partitions` contiguous chunks of nearly equal size (the first ones one
    /// longer), preserving order; `partitions` is clamped to at least 1.
    pub fn split(mut records: Vec<T>, partitions: usize) -> Self {
        let n = partitions.max(1);
        if n == 1 || records.len() <= 1 {
            return Batch::from_vec(records);
        }
        let len = records.len();
        let (base, extra) = (len / n, len % n);
        let mut parts = Vec::with_capacity(n);
        // Split from the back so each split_off moves only its own chunk.
        let mut ends = Vec::with_capacity(n);
        let mut start = 0;
        for i in 0..n {
            let size = base + usize::from(i < extra);
            ends.push((start, size));
            start += size;
        }
        for &(s, _) in ends.iter().rev() {
            parts.push(records.split_off(s));
        }
        parts.reverse();
        Batch::from_partitions(parts)
    }

    pub(crate) fn from_arcs(parts: Vec<Arc<Vec<T>>>) -> Self {
        Batch { parts }
    }

    pub(crate) fn arcs(&self) -> &[Arc<Vec<T>>] {
        &self.parts
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    /// Number of partitions.
    pub fn num_partitions(&self) -> usize {
        self.parts.len()
    }

    /// Partition `i` (`None` if out of range).
    pub fn partition(&self, i: usize) -> Option<&[T]> {
        self.parts.get(i).map(|p| p.as_slice())
    }

    /// The partitions in order.
    pub fn partitions(&self) -> impl Iterator<Item = &[T]> + '_ {
        self.parts.iter().map(|p| p.as_slice())
    }

    /// All records, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.parts.iter().flat_map(|p| p.iter())
    }

    /// Concatenates the partitions of several batches (union / window).
    pub fn concat(batches: impl IntoIterator<Item = Batch<T>>) -> Self {
        Batch {
            parts: batches.into_iter().flat_map(|b| b.parts).collect(),
        }
    }
}

impl<T: Clone> Batch<T> {
    /// All records cloned into one vector, partition by partition.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.len());
        for p in &self.parts {
            v.extend(p.iter().cloned());
        }
        v
    }

    /// All records in one vector, moving them out of partitions this batch holds alone.
    pub fn into_vec(self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.len());
        for p in self.parts {
            match Arc::try_unwrap(p) {
                Ok(owned) => v.extend(owned),
                Err(shared) => v.extend(shared.iter().cloned()),
            }
        }
        v
    }

    /// The partitions as owned vectors (moved when unshared, cloned otherwise).
    pub fn into_partitions(self) -> Vec<Vec<T>> {
        self.parts.into_iter().map(take_arc).collect()
    }
}

pub(crate) fn take_arc<T: Clone>(p: Arc<Vec<T>>) -> Vec<T> {
    Arc::try_unwrap(p).unwrap_or_else(|shared| shared.as_ref().clone())
}

impl<T: Clone + Send + Sync> Batch<T> {
    /// Applies `f` to every partition (owned) in parallel on the current rayon pool.
    pub(crate) fn par_map_partitions<U: Send + Sync, F>(self, f: F) -> Batch<U>
    where
        F: Fn(Vec<T>) -> Vec<U> + Sync + Send,
    {
        let parts: Vec<Arc<Vec<U>>> = if self.parts.len() == 1 {
            self.parts
                .into_iter()
                .map(|p| Arc::new(f(take_arc(p))))
                .collect()
        } else {
            self.parts
                .into_par_iter()
                .map(|p| Arc::new(f(take_arc(p))))
                .collect()
        };
        Batch { parts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_order_and_balances() {
        let b = Batch::split((0..10).collect::<Vec<_>>(), 3);
        let parts: Vec<Vec<i32>> = b.partitions().map(<[i32]>::to_vec).collect();
        assert_eq!(parts, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
        assert_eq!(Batch::split(Vec::<u8>::new(), 4).len(), 0);
        assert_eq!(Batch::split(vec![1], 0).num_partitions(), 1);
    }

    #[test]
    fn into_vec_moves_unshared_and_clones_shared() {
        let b = Batch::from_partitions(vec![vec!["a".to_owned()], vec!["b".to_owned()]]);
        let keep = b.clone();
        assert_eq!(b.into_vec(), vec!["a", "b"]);
        assert_eq!(keep.to_vec(), vec!["a", "b"]);
    }
}
