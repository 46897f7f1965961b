//! Resolve costs a bounded number of requests (issue 14 item 5; docs/recovery.md "Resolve
//! cost"): with the `latest` pointer, resolving the newest checkpoint takes the same requests for
//! 10 and for 1000 stored manifests over many generations, counted through a request-logging
//! `ObjectStore` wrapper ([`FlakyObjectStore`] injecting 0 ms of latency into every request, which
//! logs each one). Without the pointer the full walk follows and still chooses the same
//! checkpoint. Requests are counted, not timed.

use spate_checkpoint::testing::{raw_delete, raw_get, suite, FaultConfig, FlakyObjectStore};
use spate_checkpoint::{CheckpointPaths, CheckpointStore, StoreOptions};
use std::time::Duration;

/// `n` data checkpoints written by `generations` successive writers (each opening fences the
/// previous), then the requests of one resolve: `(with the pointer, without it)`, each as the
/// logged `op path` lines.
fn resolve_requests(n: u64, generations: u64) -> (Vec<String>, Vec<String>) {
    let rt = spate_tests::current_thread_rt();
    rt.block_on(async {
        let (_, logged) = FlakyObjectStore::in_memory(
            1,
            FaultConfig {
                latency: 1.0,
                max_latency: Duration::ZERO,
                ..FaultConfig::default()
            },
        );
        logged.set_enabled(false);
        let store = CheckpointStore::with_store(
            logged.clone(),
            object_store::path::Path::default(),
            "counted://",
            StoreOptions::default(),
        );
        let per = n / generations;
        let mut newest = None;
        for g in 0..generations {
            let mut c = store.open_committer().await.unwrap();
            for i in 0..per {
                let t = (g * per + i + 1) * 1_000;
                let m = c
                    .commit(suite::data_draft(t, 1, 16))
                    .await
                    .unwrap()
                    .unwrap();
                newest = Some(m.key);
            }
        }
        let count = |s: &CheckpointStore| {
            let logged = logged.clone();
            let s = s.clone();
            async move {
                let before = logged.schedule().len();
                logged.set_enabled(true);
                let r = s.resolve_latest().await.unwrap().expect("a checkpoint");
                logged.set_enabled(false);
                assert_eq!(Some(r.manifest.key), newest);
                logged.schedule()[before..]
                    .iter()
                    .map(|(req, _)| req.clone())
                    .collect::<Vec<_>>()
            }
        };
        let with = count(&store).await;
        raw_delete(&store, &CheckpointPaths::latest()).await;
        let without = count(&store).await;
        (with, without)
    })
}

#[test]
fn resolve_requests_do_not_grow_with_manifests_or_generations() {
    let (small, small_full) = resolve_requests(10, 2);
    let (large, large_full) = resolve_requests(1000, 20);
    eprintln!(
        "resolve requests: N=10: {} (full walk {}), N=1000: {} (full walk {})",
        small.len(),
        small_full.len(),
        large.len(),
        large_full.len()
    );
    // GET latest, LIST manifests/ from it, LIST generations/ from its generation, GET manifest,
    // GET its one data object; no floor is newer than the newest checkpoint's generation.
    assert_eq!(small.len(), 5, "{small:#?}");
    assert_eq!(large.len(), small.len(), "{large:#?}");
    let ops = |v: &[String]| {
        v.iter()
            .map(|r| r.split(' ').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ops(&large), ["get", "list", "list", "get", "get"]);
    // Without the pointer: one more LIST of all manifests (pages grow with N on S3), same choice.
    assert!(large_full.len() <= large.len() + 1, "{large_full:#?}");
}

/// The figure behind docs/format/checkpoint.md "Resolve cost" on s3s-fs (a measurement, not an
/// assertion on time; opt in: `bash scripts/test.sh -p spate-tests --test it
/// resolve_cost::resolve_figure_on_s3sfs -- --ignored --nocapture`). Prints the median of 5
/// resolves for 10 manifests (2 generations) and 1000 (20), each with 100 restart reports, with the pointer and
/// with the full walk.
#[test]
#[ignore = "measurement; run with --ignored against the servers of scripts/test.sh"]
fn resolve_figure_on_s3sfs() {
    let srv = spate_tests::s3::s3sfs("resolve_figure_on_s3sfs").expect("s3s-fs");
    let rt = spate_tests::current_thread_rt();
    for n in [10u64, 1000] {
        let store = srv.fresh("resolve-figure");
        let median = |store: &CheckpointStore| {
            let mut ms: Vec<u128> = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    rt.block_on(store.resolve_latest()).unwrap().unwrap();
                    t.elapsed().as_millis()
                })
                .collect();
            ms.sort_unstable();
            ms[2]
        };
        rt.block_on(async {
            let gens = if n >= 100 { 20 } else { 2 };
            for g in 0..gens {
                let mut c = store.open_committer().await.unwrap();
                for i in 0..n / gens {
                    let t = (g * (n / gens) + i + 1) * 1_000;
                    c.commit(suite::data_draft(t, 0, 0)).await.unwrap().unwrap();
                }
            }
            for r in 0..100 {
                store
                    .put_restart_report(r, spate_types::Generation(1), "{}".into())
                    .await
                    .unwrap();
            }
        });
        let with = median(&store);
        rt.block_on(raw_delete(&store, &CheckpointPaths::latest()));
        let full = median(&store);
        // What resolve did before on top of its manifest reads: list the whole location, then GET
        // every floor ever written.
        let mut old: Vec<u128> = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                rt.block_on(async {
                    let l = store.listing().await.unwrap();
                    for g in &l.floors {
                        raw_get(&store, &CheckpointPaths::floor(*g)).await;
                    }
                });
                t.elapsed().as_millis()
            })
            .collect();
        old.sort_unstable();
        eprintln!(
            "s3s-fs resolve, N={n}: {with} ms with the pointer, {full} ms full walk; the old \
             whole-location listing + every floor alone: {} ms",
            old[2]
        );
    }
}
