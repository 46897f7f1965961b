//! The user-facing specifications of the stateful operators: [`State`] (one key's state inside
//! a `map_with_state` function), [`StateSpec`] and [`UpdateStateSpec`].

use super::*;

/// The state of one key inside a `map_with_state` function (Spark's `State[S]`).
#[derive(Debug)]
pub struct State<S> {
    pub(super) value: Option<S>,
    pub(super) updated: bool,
    pub(super) removed: bool,
    pub(super) timing_out: bool,
}

impl<S> State<S> {
    pub(super) fn new(value: Option<S>, timing_out: bool) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out,
        }
    }

    /// True if the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the state. Ignored while the key is timing out (Spark throws; the key is removed
    /// after this final call either way).
    pub fn update(&mut self, value: S) {
        if self.timing_out {
            return;
        }
        self.value = Some(value);
        self.updated = true;
        self.removed = false;
    }

    /// Removes the state.
    pub fn remove(&mut self) {
        self.value = None;
        self.removed = true;
        self.updated = false;
    }

    /// True during the final call for a key whose state timed out (the value is `None` then).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

type MappingFn<K, V, S, M> =
    dyn Fn(BatchTime, &K, Option<V>, &mut State<S>) -> Option<M> + Send + Sync;

/// The options both specs share (partitions, initial state, state version), written once.
macro_rules! state_options {
    () => {
        /// Partitions of the state (default: `default_partitions`).
        #[must_use]
        pub fn num_partitions(mut self, n: usize) -> Self {
            self.partitions = Some(n);
            self
        }

        /// State loaded on a fresh start (ignored when restoring from a checkpoint).
        #[must_use]
        pub fn initial_state(mut self, state: Vec<(K, S)>) -> Self {
            self.initial = Some(state);
            self
        }

        /// The user-declared version of the state type, part of the graph description: bump it
        /// when the meaning of the state changes without its type changing, so an old checkpoint
        /// is refused. Default 1.
        #[must_use]
        pub fn state_version(mut self, version: u32) -> Self {
            self.version = version;
            self
        }
    };
}

/// The specification of a `map_with_state` operator (Spark's `StateSpec`).
pub struct StateSpec<K, V, S, M> {
    pub(super) func: Arc<MappingFn<K, V, S, M>>,
    pub(super) timeout: Option<DurationMs>,
    pub(super) partitions: Option<usize>,
    pub(super) initial: Option<Vec<(K, S)>>,
    pub(super) version: u32,
}

impl<K, V, S, M> fmt::Debug for StateSpec<K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSpec")
            .field("timeout", &self.timeout)
            .field("partitions", &self.partitions)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<K, V, S, M> StateSpec<K, V, S, M> {
    /// A spec calling `f(batch time, key, value, state)` once per record of the batch (in arrival
    /// order within a partition), and once with `value = None` and [`State::is_timing_out`] (the
    /// state still readable, not updatable) for a key whose timeout expired (Spark's
    /// `StateSpec.function`).
    /// Returned values form the output stream.
    pub fn function(
        f: impl Fn(BatchTime, &K, Option<V>, &mut State<S>) -> Option<M> + Send + Sync + 'static,
    ) -> Self {
        StateSpec {
            func: Arc::new(f),
            timeout: None,
            partitions: None,
            initial: None,
            version: 1,
        }
    }

    /// Removes the state of a key that received no record for `idle` (batch time, so the same
    /// in every replay), after one final call with [`State::is_timing_out`]. Evaluated every batch
    /// (Spark: only at checkpoint batches).
    #[must_use]
    pub fn timeout(mut self, idle: DurationMs) -> Self {
        self.timeout = Some(idle);
        self
    }

    state_options!();
}

/// Options of `update_state_by_key` ([`DStream::update_state_by_key_with`]).
#[derive(Debug)]
pub struct UpdateStateSpec<K, S> {
    pub(super) partitions: Option<usize>,
    pub(super) initial: Option<Vec<(K, S)>>,
    pub(super) version: u32,
    pub(super) coalescable: bool,
}

impl<K, S> Default for UpdateStateSpec<K, S> {
    fn default() -> Self {
        UpdateStateSpec {
            partitions: None,
            initial: None,
            version: 1,
            coalescable: false,
        }
    }
}

impl<K, S> UpdateStateSpec<K, S> {
    /// Defaults: `default_partitions`, no initial state, state version 1.
    pub fn new() -> Self {
        Self::default()
    }

    state_options!();

    /// Declares the update function a **fold**: for every key, `f(a ++ b, s) == f(b, f(a, s))`
    /// and `f(&[], s) == s` (e.g. `total + Σ new`), so consecutive batches may be merged without
    /// changing the state. This lets `missed_batches = coalesce` run a restart's missed batches as
    /// one (docs/recovery.md "Bounded catch-up"); without it the engine refuses to coalesce this
    /// graph. A function that counts batches, or expires keys by returning `None` on no values, is
    /// not a fold. The declaration is not part of the graph description (it changes no result).
    #[must_use]
    pub fn coalescable(mut self) -> Self {
        self.coalescable = true;
        self
    }
}
