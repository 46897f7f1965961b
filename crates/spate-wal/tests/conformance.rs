//! The WAL conformance suite (`spate_wal::testing`) on a real directory (`StdFs`) and on `SimFs`
//! (power loss drops every un-synced byte).

use spate_wal::testing::{self, SimFsFixture, StdFsFixture};

#[test]
fn std_fs_passes_the_wal_conformance_suite() {
    let tmp = tempfile::tempdir().unwrap();
    testing::run_all(&StdFsFixture::new(tmp.path()));
}

#[test]
fn sim_fs_with_power_loss_passes_the_wal_conformance_suite() {
    for seed in [1, 7, 42] {
        testing::run_all(&SimFsFixture::new(seed));
    }
}
