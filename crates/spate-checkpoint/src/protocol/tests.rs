//! Table and property tests of [`super`] (protocol.rs).

use super::*;
use crate::manifest::{CheckpointKind, DataObjectRef, GraphDescriptionBlob};
use spate_types::{BatchTime, DurationMs};

fn key(t: u64, g: u64) -> CheckpointKey {
    CheckpointKey {
        time: BatchTime(t),
        generation: Generation(g),
        seq: 0,
    }
}

fn manifest(k: CheckpointKey, objs: &[&str]) -> Manifest {
    Manifest {
        key: k,
        kind: CheckpointKind::Data,
        batch_time: k.time,
        zero_time: BatchTime(0),
        batch_interval: DurationMs(1000),
        generation: k.generation,
        created_at_ms: 0,
        graph: GraphDescriptionBlob::default(),
        pending_batches: vec![],
        source_positions: BTreeMap::new(),
        wal_position: None,
        conf: BTreeMap::new(),
        objects: objs
            .iter()
            .map(|p| DataObjectRef {
                path: (*p).to_owned(),
                size: 1,
                crc32: 0,
            })
            .collect(),
    }
}

fn listed(path: String) -> ListedObject {
    ListedObject {
        path,
        size: 1,
        last_modified_ms: 0,
    }
}

fn read(m: Manifest, checks: &[(&str, ObjectCheck)]) -> ManifestFact {
    ManifestFact::Read {
        manifest: Box::new(m),
        checks: checks
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.clone()))
            .collect(),
    }
}

#[test]
fn resolve_table() {
    let (a, b, c) = (key(1000, 1), key(2000, 1), key(3000, 1));
    let listing = Listing::classify([a, b, c].map(|k| listed(CheckpointPaths::manifest(k))));
    let da = CheckpointPaths::data(a, "s");
    let dc = CheckpointPaths::data(c, "s");
    // Newest verifies: chosen, nothing rejected, two not examined.
    let mut f = Facts::default();
    f.manifests
        .insert(c, read(manifest(c, &[&dc]), &[(&dc, ObjectCheck::Ok)]));
    let r = resolve_latest(&listing, &f);
    assert_eq!(
        (r.chosen, r.rejected.len(), r.not_examined),
        (Some(c), 0, 2)
    );
    // Newest missing an object, middle unreadable, oldest fine: falls back twice with reasons.
    let mut f = Facts::default();
    f.manifests
        .insert(c, read(manifest(c, &[&dc]), &[(&dc, ObjectCheck::Missing)]));
    f.manifests
        .insert(b, ManifestFact::Unreadable("bad crc".into()));
    f.manifests
        .insert(a, read(manifest(a, &[&da]), &[(&da, ObjectCheck::Ok)]));
    let r = resolve_latest(&listing, &f);
    assert_eq!(r.chosen, Some(a));
    assert!(matches!(
        r.rejected[0].reason,
        RejectReason::MissingObject { .. }
    ));
    assert!(matches!(
        r.rejected[1].reason,
        RejectReason::ManifestUnreadable { .. }
    ));
    // Facts missing for a candidate: stop, choose nothing yet.
    let mut f = Facts::default();
    f.manifests.insert(c, ManifestFact::Unreadable("x".into()));
    let r = resolve_latest(&listing, &f);
    assert_eq!((r.chosen, r.rejected.len(), r.not_examined), (None, 1, 2));
    // Corrupt object: reason names it.
    let mut f = Facts::default();
    f.manifests.insert(
        c,
        read(
            manifest(c, &[&dc]),
            &[(&dc, ObjectCheck::Corrupt("crc".into()))],
        ),
    );
    f.manifests.insert(b, read(manifest(b, &[]), &[]));
    let r = resolve_latest(&listing, &f);
    assert_eq!(r.chosen, Some(b));
    assert!(
        matches!(&r.rejected[0].reason, RejectReason::CorruptObject { object, .. } if *object == dc)
    );
}

#[test]
fn fenced_publish_after_newer_floor_is_rejected() {
    let old_ok = key(1000, 1);
    let zombie = key(5000, 1);
    let newer = key(2000, 2);
    let listing =
        Listing::classify([old_ok, zombie, newer].map(|k| listed(CheckpointPaths::manifest(k))));
    let mut f = Facts::default();
    f.floors.insert(Generation(2), Some(old_ok));
    for k in [old_ok, zombie, newer] {
        f.manifests.insert(k, read(manifest(k, &[]), &[]));
    }
    let r = resolve_latest(&listing, &f);
    assert_eq!(r.chosen, Some(newer));
    assert!(matches!(
        r.rejected[0].reason,
        RejectReason::FencedPublish {
            generation: Generation(1),
            fenced_by: Generation(2),
            floor: Some(_)
        }
    ));
    // Visible to generation 2 when it opened (at or below its floor): accepted.
    assert_eq!(judge(old_ok, &f), Verdict::Accept);
    // A floor of None (saw nothing) fences every older manifest.
    f.floors.insert(Generation(2), None);
    assert!(matches!(
        judge(old_ok, &f),
        Verdict::Reject(RejectReason::FencedPublish { .. })
    ));
    // A generation without a floor (crashed before writing it) fences nothing.
    f.floors.clear();
    assert_eq!(judge(zombie, &f), Verdict::Accept);
}

/// The check-and-publish decision (DESIGN.md §3, commit step 2; docs/format/checkpoint.md
/// "Publish slots"): only a created slot publishes; a blocker of a newer generation fences; our
/// own earlier attempt moves to the next slot; anything else writes nothing.
#[test]
fn decide_publish_table() {
    let g = Generation(5);
    let k = |g: u64| key(1000, g);
    let blocked = |by: u64| SlotEntry::Blocked {
        by: Generation(by),
        last: Some(k(5)),
    };
    let cases: Vec<(SlotFact, PublishDecision)> = vec![
        (SlotFact::Created, PublishDecision::Publish),
        (
            SlotFact::Taken(blocked(6)),
            PublishDecision::Fenced { by: Generation(6) },
        ),
        (
            SlotFact::Taken(blocked(9)),
            PublishDecision::Fenced { by: Generation(9) },
        ),
        // A "blocker" that is not newer is not one this protocol writes.
        (SlotFact::Taken(blocked(5)), PublishDecision::Foreign),
        (SlotFact::Taken(blocked(4)), PublishDecision::Foreign),
        (
            SlotFact::Taken(SlotEntry::Publish(k(5))),
            PublishDecision::NextSlot,
        ),
        (
            SlotFact::Taken(SlotEntry::Publish(k(4))),
            PublishDecision::Foreign,
        ),
        (
            SlotFact::TakenUnreadable("bad crc".into()),
            PublishDecision::Foreign,
        ),
    ];
    for (fact, want) in cases {
        assert_eq!(decide_publish(g, &fact), want, "{fact:?}");
    }
}

/// Which generations a new writer blocks, and how one is blocked (open step: claim, block,
/// floor).
#[test]
fn block_tables() {
    let gs = |v: &[u64]| v.iter().map(|g| Generation(*g)).collect::<Vec<_>>();
    // (claims, floors, ours, want newest first)
    type Case<'a> = (&'a [u64], &'a [u64], u64, &'a [u64]);
    let cases: &[Case<'_>] = &[
        (&[], &[], 1, &[]),
        (&[1], &[1], 2, &[1]),
        (&[1, 2, 3], &[1, 2, 3], 4, &[3]),
        // 3 and 4 crashed before their floors: 2 may be live, and 3, 4 too.
        (&[1, 2, 3, 4], &[1, 2], 5, &[4, 3, 2]),
        // Nothing wrote a floor: everything older.
        (&[1, 2], &[], 3, &[2, 1]),
        // A racer claimed 6 above us: not ours to block.
        (&[1, 2, 3, 6], &[1, 2], 3, &[2]),
        // A floor without a listed claim (claim deleted by hand) still bounds and is blocked.
        (&[3], &[2], 4, &[3, 2]),
    ];
    for (claims, floors, ours, want) in cases {
        assert_eq!(
            generations_to_block(&gs(claims), &gs(floors), Generation(*ours)),
            gs(want),
            "claims {claims:?}, floors {floors:?}, ours {ours}"
        );
    }
    let (k1, k2) = (key(1000, 2), key(2000, 2));
    let blocked = SlotEntry::Blocked {
        by: Generation(3),
        last: Some(k1),
    };
    let cases = [
        (
            None,
            BlockStep::Create {
                slot: 1,
                last: None,
            },
        ),
        (
            Some((4, Some(SlotEntry::Publish(k2)))),
            BlockStep::Create {
                slot: 5,
                last: Some(k2),
            },
        ),
        (Some((4, Some(blocked))), BlockStep::Done { last: Some(k1) }),
        (
            Some((4, None)),
            BlockStep::Create {
                slot: 5,
                last: None,
            },
        ),
    ];
    for (newest, want) in cases {
        assert_eq!(plan_block(newest), want, "{newest:?}");
    }
}

#[test]
fn gc_table() {
    let ks: Vec<_> = (1..=5).map(|t| key(t * 1000, 1)).collect();
    let mut objs: Vec<ListedObject> = ks
        .iter()
        .map(|k| listed(CheckpointPaths::manifest(*k)))
        .collect();
    let data: Vec<String> = ks.iter().map(|k| CheckpointPaths::data(*k, "s")).collect();
    objs.extend(data.iter().cloned().map(listed));
    let inflight = CheckpointPaths::data(key(9000, 1), "s");
    objs.push(listed(inflight.clone()));
    objs.push(listed("junk".into()));
    let report = CheckpointPaths::restart_report(1, Generation(1));
    let archived = CheckpointPaths::archived("old", &CheckpointPaths::manifest(ks[0]));
    let archived_data = CheckpointPaths::archived("old", &data[1]);
    for p in [&report, &archived, &archived_data] {
        objs.push(listed(p.clone()));
    }
    // Publish slots: 1..=3 of generation 1 and the lone blocker 1 of generation 0.
    let slots: Vec<String> = (1..=3)
        .map(|n| CheckpointPaths::fence_slot(Generation(1), n))
        .chain([CheckpointPaths::fence_slot(Generation(0), 1)])
        .collect();
    objs.extend(slots.iter().cloned().map(listed));
    let listing = Listing::classify(objs);
    assert_eq!(listing.fence_slots.len(), 4);
    assert_eq!(listing.unknown.len(), 1, "{:?}", listing.unknown);
    assert_eq!(listing.restart_reports.len(), 1);
    assert_eq!(listing.archived.len(), 2);
    assert_eq!(listing.manifests.len(), 5, "archived manifest counted");
    let mut refs = BTreeMap::new();
    for (i, k) in ks.iter().enumerate() {
        // checkpoint 5 carries checkpoint 1's object
        let mut r = vec![data[i].clone()];
        if i == 4 {
            r.push(data[0].clone());
        }
        refs.insert(*k, r);
    }
    // ks[4] invalid (damaged): keep 2 valid → ks[3], ks[2]; ks[4] kept (newer than horizon).
    let valid: BTreeSet<_> = ks[..4].iter().copied().collect();
    let plan = plan_gc(
        &listing,
        &valid,
        &refs,
        &Retention {
            keep: 2,
            pinned: BTreeSet::new(),
        },
    );
    assert_eq!(plan.horizon, Some(ks[2]));
    let dels: BTreeSet<&str> = plan.deletions().collect();
    let want: BTreeSet<String> = [
        CheckpointPaths::manifest(ks[0]),
        CheckpointPaths::manifest(ks[1]),
        data[1].clone(),
        slots[0].clone(),
        slots[1].clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(dels, want.iter().map(String::as_str).collect());
    assert!(!dels.contains(inflight.as_str()));
    assert!(!dels.contains(data[0].as_str()), "carried object deleted");
    for p in [&report, &archived, &archived_data, &slots[2], &slots[3]] {
        assert!(
            plan.objects.contains(&(p.clone(), GcClass::Kept)),
            "{p} not kept: {:?}",
            plan.objects
        );
    }
    // Nothing valid: nothing deleted.
    let plan = plan_gc(&listing, &BTreeSet::new(), &refs, &Retention::default());
    assert_eq!(plan.deletions().count(), 0);
    // Pinned survives with its objects.
    let pinned: BTreeSet<_> = [ks[1]].into_iter().collect();
    let plan = plan_gc(&listing, &valid, &refs, &Retention { keep: 2, pinned });
    assert!(!plan
        .deletions()
        .any(|p| p == data[1] || p == CheckpointPaths::manifest(ks[1])));
}
