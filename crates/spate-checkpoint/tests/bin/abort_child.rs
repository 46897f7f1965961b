//! Child process of `return_abort_between_manifest_and_data` (`tests/failpoints.rs`): commits one
//! checkpoint (batch 2000, two objects) to the local store in `argv[1]`, arms
//! `checkpoint::data::put::before=return(abort)` and starts the next commit (batch 3000): the fail
//! point aborts the process (SIGABRT) at its first data object — in a correct build before its
//! manifest, in the `chaos-broken-manifest-first` build after it. Exits 3 if it ever gets past
//! the fail point. Built only with `--features failpoints`.

use spate_checkpoint::store::{CheckpointStore, StoreOptions};

#[path = "../common/draft.rs"]
mod draft;
use draft::draft;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: checkpoint-failpoint-abort-child <dir>");
    let store = CheckpointStore::open(&dir, StoreOptions::default()).expect("open store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async {
        let mut c = store.open_committer().await.expect("committer");
        c.commit(draft(2_000, 2))
            .await
            .expect("first commit")
            .expect("first commit published");
        fail::cfg("checkpoint::data::put::before", "return(abort)")
            .expect("arming checkpoint::data::put::before");
        c.commit(draft(3_000, 2)).await.map(|_| ())
    });
    eprintln!("the fail point did not abort the process: commit returned {r:?}");
    std::process::exit(3);
}
