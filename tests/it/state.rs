//! Stateful operators: `update_state_by_key`, `map_with_state` (timeouts, snapshots),
//! data checkpoints (snapshots + deltas) on both state backends, restore after a restart at every
//! batch, checkpoint-interval rules, state-type compatibility, damaged state objects.

use parking_lot::Mutex;
use spate::testing::{advance_and_wait, context_lock, test_config};
use spate::{
    BatchTime, DurationMs, ManualClock, RestartOutcome, StateBackendKind, StateSpec,
    StreamingConfig, StreamingContext, StreamingError,
};
use spate_tests::sources::PerSecond;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Batch `t` (second `s`) holds the words `w{(s*7+i) % 13}` for `i in 0..s%5+1`, and on every
/// 4th second nothing (so keys idle out).
fn words() -> PerSecond<String> {
    PerSecond::new("words", |s| {
        if s.is_multiple_of(4) {
            return Vec::new();
        }
        (0..s % 5 + 1)
            .map(|i| format!("w{}", (s * 7 + i) % 13))
            .collect()
    })
}

type Out = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

fn record(out: &Out, t: BatchTime, mut v: Vec<String>) {
    v.sort();
    out.lock().insert(t.0, v);
}

/// Running word counts (update_state_by_key; a word seen in no batch for 3 batches... is kept:
/// counts only grow) plus, for removal, words whose count reaches 9 are dropped.
fn totals_app(
    ctx: &StreamingContext,
    out: &Out,
    interval: Option<DurationMs>,
) -> spate::Result<()> {
    let words = ctx.replayable_stream(words())?;
    let mut totals = words
        .map(|w: String| (w, 1u64))?
        .update_state_by_key(|vals: &[u64], old: Option<u64>| {
            let n = old.unwrap_or(0) + vals.iter().sum::<u64>();
            (n < 9).then_some(n)
        })?
        .name("totals")?;
    if let Some(i) = interval {
        totals = totals.checkpoint(i)?;
    }
    let o = Arc::clone(out);
    totals.foreach_batch(move |t, b| {
        record(&o, t, b.iter().map(|(w, n)| format!("{w}={n}")).collect())
    })?;
    Ok(())
}

/// Per-word session length with a 2 s idle timeout (map_with_state), its outputs and snapshots.
fn sessions_app(ctx: &StreamingContext, out: &Out, snaps: &Out) -> spate::Result<()> {
    let words = ctx.replayable_stream(words())?;
    let spec = StateSpec::function(
        |t: BatchTime, w: &String, v: Option<u64>, st: &mut spate::State<u64>| {
            if st.is_timing_out() {
                return Some(format!(
                    "{w} closed at {} after {}",
                    t.0,
                    st.get().copied().unwrap_or(0)
                ));
            }
            let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
            st.update(n);
            Some(format!("{w}:{n}"))
        },
    )
    .timeout(DurationMs(2000));
    let sessions = words.map(|w: String| (w, 1u64))?.map_with_state(spec)?;
    let o = Arc::clone(out);
    sessions.foreach_batch(move |t, b| record(&o, t, b.to_vec()))?;
    let s = Arc::clone(snaps);
    sessions.state_snapshots()?.foreach_batch(move |t, b| {
        record(&s, t, b.iter().map(|(w, n)| format!("{w}={n}")).collect())
    })?;
    Ok(())
}

fn conf(backend: StateBackendKind) -> StreamingConfig {
    StreamingConfig {
        state_backend: backend,
        state_snapshot_every: 3,
        ..test_config(DurationMs(1000))
    }
}

fn url(dir: &tempfile::TempDir) -> String {
    dir.path().join("ckpt").display().to_string()
}

fn run(
    url: &str,
    conf: StreamingConfig,
    from_s: u64,
    to_s: u64,
    build: impl FnOnce(&StreamingContext) -> spate::Result<()>,
) -> StreamingContext {
    let clock = ManualClock::new(from_s * 1000);
    let ctx = StreamingContext::get_or_create_with_clock(url, conf, Arc::new(clock.clone()), build)
        .unwrap();
    let r = ctx.start().and_then(|()| {
        for s in from_s + 1..=to_s {
            advance_and_wait(&ctx, &clock, BatchTime(s * 1000))?;
        }
        Ok(())
    });
    // Stop before any panic so one failure does not leave the process's context active.
    ctx.stop(false).unwrap();
    r.unwrap();
    ctx
}

const N: u64 = 12;

/// I-FT-1 for update_state_by_key: stop after every batch k, restart, finish; every batch's full
/// state equals the uninterrupted run's — with data checkpoints every 2 batches (deltas between
/// snapshots every 3rd), so restores go through snapshot + deltas + recomputation from the WAL.
#[test]
fn update_state_by_key_restores_exactly_after_every_batch() {
    let _g = context_lock();
    for backend in [StateBackendKind::Memory, StateBackendKind::Sled] {
        let base = tempfile::tempdir().unwrap();
        let expected = Out::default();
        run(&url(&base), conf(backend), 0, N, |c| {
            totals_app(c, &expected, Some(DurationMs(2000)))
        });
        let expected = expected.lock().clone();
        assert_eq!(expected.len() as u64, N);
        assert!(expected.values().any(|v| !v.is_empty()));
        for k in 1..N {
            let dir = tempfile::tempdir().unwrap();
            let out = Out::default();
            run(&url(&dir), conf(backend), 0, k, |c| {
                totals_app(c, &out, Some(DurationMs(2000)))
            });
            let ctx = run(&url(&dir), conf(backend), k, N, |c| {
                totals_app(c, &out, Some(DurationMs(2000)))
            });
            let r = ctx.restart_report().unwrap();
            assert_eq!(r.outcome, RestartOutcome::Restored, "{backend:?} k={k}");
            assert_eq!(r.state.len(), 1, "{r:?}");
            assert!(r.state[0].time <= k * 1000);
            assert_eq!(*out.lock(), expected, "{backend:?} restart after batch {k}");
        }
    }
}

/// I-FT-1 for map_with_state with timeouts: outputs (including the timeout calls) and state
/// snapshots of every batch equal the uninterrupted run's after a restart at every batch.
#[test]
fn map_with_state_restores_exactly_after_every_batch() {
    let _g = context_lock();
    for backend in [StateBackendKind::Memory, StateBackendKind::Sled] {
        let base = tempfile::tempdir().unwrap();
        let (eo, es) = (Out::default(), Out::default());
        run(&url(&base), conf(backend), 0, N, |c| {
            sessions_app(c, &eo, &es)
        });
        let (eo, es) = (eo.lock().clone(), es.lock().clone());
        assert!(
            eo.values().flatten().any(|l| l.contains("closed")),
            "no timeout fired: {eo:?}"
        );
        for k in 1..N {
            let dir = tempfile::tempdir().unwrap();
            let (o, s) = (Out::default(), Out::default());
            run(&url(&dir), conf(backend), 0, k, |c| sessions_app(c, &o, &s));
            run(&url(&dir), conf(backend), k, N, |c| sessions_app(c, &o, &s));
            assert_eq!(
                *o.lock(),
                eo,
                "{backend:?} outputs, restart after batch {k}"
            );
            assert_eq!(
                *s.lock(),
                es,
                "{backend:?} snapshots, restart after batch {k}"
            );
        }
    }
}

/// Spark's interval rules, checked at start with clear errors.
#[test]
fn stateful_operators_need_a_checkpoint_and_a_valid_interval() {
    let _g = context_lock();
    let out = Out::default();
    let ctx =
        StreamingContext::with_clock(test_config(DurationMs(1000)), Arc::new(ManualClock::new(0)))
            .unwrap();
    totals_app(&ctx, &out, None).unwrap();
    let e = ctx.start().unwrap_err();
    assert!(e.to_string().contains("checkpoint location"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let ctx = StreamingContext::get_or_create_with_clock(
        &url(&dir),
        conf(StateBackendKind::Memory),
        Arc::new(ManualClock::new(0)),
        |c| totals_app(c, &out, Some(DurationMs(1500))),
    )
    .unwrap();
    let e = ctx.start().unwrap_err();
    assert!(
        e.to_string().contains("positive multiple of its slide"),
        "{e}"
    );
    // Not a stateful stream.
    let ctx =
        StreamingContext::with_clock(test_config(DurationMs(1000)), Arc::new(ManualClock::new(0)))
            .unwrap();
    let s = ctx.replayable_stream(words()).unwrap();
    assert!(matches!(
        s.checkpoint(DurationMs(1000)),
        Err(StreamingError::InvalidArgument { .. })
    ));
}

/// A changed state type or a bumped state version is an incompatible build, not a decode error.
#[test]
fn state_type_and_version_changes_are_incompatible() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = Out::default();
    run(&url(&dir), conf(StateBackendKind::Memory), 0, 3, |c| {
        totals_app(c, &out, None)
    });
    let attempt = |build: &dyn Fn(&StreamingContext) -> spate::Result<()>| {
        match StreamingContext::get_or_create_with_clock(
            &url(&dir),
            conf(StateBackendKind::Memory),
            Arc::new(ManualClock::new(3000)),
            build,
        ) {
            Err(StreamingError::IncompatibleCheckpoint { diff, .. }) => diff.lines(),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("restored an incompatible build"),
        }
    };
    let d = attempt(&|c| {
        let words = c.replayable_stream(words())?;
        words
            .map(|w: String| (w, 1u64))?
            .update_state_by_key(|vals: &[u64], old: Option<u32>| {
                Some(old.unwrap_or(0) + vals.len() as u32)
            })?
            .name("totals")?
            .foreach_batch(|_, _| {})?;
        Ok(())
    });
    assert!(d.iter().any(|l| l.contains("state type")), "{d:?}");
    let d = attempt(&|c| {
        let words = c.replayable_stream(words())?;
        words
            .map(|w: String| (w, 1u64))?
            .update_state_by_key_with(
                spate::UpdateStateSpec::new().state_version(2),
                |vals: &[u64], old: Option<u64>| Some(old.unwrap_or(0) + vals.iter().sum::<u64>()),
            )?
            .name("totals")?
            .foreach_batch(|_, _| {})?;
        Ok(())
    });
    assert!(d.iter().any(|l| l.contains("state version 1 → 2")), "{d:?}");
}

/// A damaged state object (a delta of the newest data checkpoint): the manifests referencing it
/// are rejected, recovery falls back to the previous data checkpoint and recomputes from the WAL —
/// the state is still exact; never wrong state.
#[test]
fn damaged_state_object_falls_back_to_exact_state() {
    let _g = context_lock();
    let base = tempfile::tempdir().unwrap();
    let expected = Out::default();
    run(&url(&base), conf(StateBackendKind::Memory), 0, N, |c| {
        totals_app(c, &expected, Some(DurationMs(2000)))
    });
    let dir = tempfile::tempdir().unwrap();
    let out = Out::default();
    run(&url(&dir), conf(StateBackendKind::Memory), 0, 7, |c| {
        totals_app(c, &out, Some(DurationMs(2000)))
    });
    // The newest state object written.
    let mut objs: Vec<std::path::PathBuf> = walk(&dir.path().join("ckpt/data"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("state-")
        })
        .collect();
    objs.sort();
    let victim = objs.pop().unwrap();
    let mut b = std::fs::read(&victim).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x01;
    std::fs::write(&victim, &b).unwrap();
    let ctx = run(&url(&dir), conf(StateBackendKind::Memory), 7, N, |c| {
        totals_app(c, &out, Some(DurationMs(2000)))
    });
    let r = ctx.restart_report().unwrap();
    assert!(!r.rejected.is_empty(), "{r:?}");
    assert_eq!(*out.lock(), *expected.lock());
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

/// Regression (found by the clicks crash test): two chained stateful operators with different
/// data-checkpoint intervals. A restart used to restore them at different times, and the
/// downstream one, recomputing from its older checkpoint, asked the upstream one for a batch it had
/// already passed. Data checkpoints now cover every stateful operator at once.
#[test]
fn chained_stateful_operators_restore_consistently() {
    let _g = context_lock();
    fn chain_app(ctx: &StreamingContext, out: &Out) -> spate::Result<()> {
        let words = ctx.replayable_stream(words())?;
        let spec = StateSpec::function(
            |_t: BatchTime, w: &String, v: Option<u64>, st: &mut spate::State<u64>| {
                if st.is_timing_out() {
                    return None;
                }
                let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
                st.update(n);
                Some((w.len() as u64, n))
            },
        );
        let per_word = words
            .map(|w: String| (w, 1u64))?
            .map_with_state(spec)?
            .checkpoint(DurationMs(2000))?;
        let o = Arc::clone(out);
        per_word
            .stream()
            .update_state_by_key(|vals: &[u64], old: Option<u64>| {
                Some(old.unwrap_or(0) + vals.iter().sum::<u64>())
            })?
            .checkpoint(DurationMs(5000))?
            .foreach_batch(move |t, b| {
                record(&o, t, b.iter().map(|(k, n)| format!("{k}={n}")).collect())
            })?;
        Ok(())
    }
    let base = tempfile::tempdir().unwrap();
    let expected = Out::default();
    run(&url(&base), conf(StateBackendKind::Memory), 0, N, |c| {
        chain_app(c, &expected)
    });
    for k in 1..N {
        let dir = tempfile::tempdir().unwrap();
        let out = Out::default();
        run(&url(&dir), conf(StateBackendKind::Memory), 0, k, |c| {
            chain_app(c, &out)
        });
        run(&url(&dir), conf(StateBackendKind::Memory), k, N, |c| {
            chain_app(c, &out)
        });
        assert_eq!(*out.lock(), *expected.lock(), "restart after batch {k}");
    }
}

/// Exactly-once outputs: `save_as_text_files` re-emits byte-identical files for re-run batches,
/// and a `TransactionalSink` (the file implementation, whose ledger is its committed directories)
/// commits every batch exactly once across restarts — a re-run of a committed batch is skipped.
#[test]
fn outputs_are_identical_or_exactly_once_across_restarts() {
    let _g = context_lock();
    fn out_app(ctx: &StreamingContext, dir: &std::path::Path) -> spate::Result<()> {
        let words = ctx.replayable_stream(words())?;
        let totals = words
            .map(|w: String| (w, 1u64))?
            .update_state_by_key(|vals: &[u64], old: Option<u64>| {
                Some(old.unwrap_or(0) + vals.iter().sum::<u64>())
            })?
            .checkpoint(DurationMs(3000))?
            .map(|(w, n)| format!("{w} {n}"))?;
        totals.save_as_text_files(dir.join("text/totals").display().to_string(), "txt")?;
        totals.transactional_output(spate::FileTransactionalSink::new(dir.join("tx"), "totals"))?;
        Ok(())
    }
    let base = tempfile::tempdir().unwrap();
    run(&url(&base), conf(StateBackendKind::Memory), 0, N, |c| {
        out_app(c, base.path())
    });
    let listing = |d: &std::path::Path| -> BTreeMap<String, Vec<u8>> {
        walk(d)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(d).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    let want_text = listing(&base.path().join("text"));
    let want_tx = listing(&base.path().join("tx"));
    assert_eq!(want_text.len() as u64, N);
    for k in [2u64, 5, 9] {
        let dir = tempfile::tempdir().unwrap();
        run(&url(&dir), conf(StateBackendKind::Memory), 0, k, |c| {
            out_app(c, dir.path())
        });
        let sink = spate::FileTransactionalSink::new(dir.path().join("tx"), "totals");
        let committed_before = sink.committed_batches().unwrap();
        let ctx = run(&url(&dir), conf(StateBackendKind::Memory), k, N, |c| {
            out_app(c, dir.path())
        });
        // The checkpoint batch was completed and committed: since I-REC-6 it does not run again
        // (its state is recomputed from its recorded inputs), and nothing is committed twice.
        let r = ctx.restart_report().unwrap();
        assert!(!r.batches_rescheduled.contains(&(k * 1000)), "{r:?}");
        assert!(committed_before.contains(&BatchTime(k * 1000)));
        assert_eq!(
            listing(&dir.path().join("text")),
            want_text,
            "text files, restart after {k}"
        );
        let mut got_tx = listing(&dir.path().join("tx"));
        got_tx.retain(|name, _| !name.starts_with("_staging"));
        assert_eq!(got_tx, want_tx, "transactional output, restart after {k}");
    }
}
