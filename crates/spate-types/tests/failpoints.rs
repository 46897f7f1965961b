//! `docs/failpoints.md` is generated from `spate_types::failpoints::ALL` (this test fails when the
//! page is stale; regenerate with `SPATE_BLESS=1 cargo test -p spate-types --test failpoints`), and
//! every listed fail point has exactly one `spate_fail!` site in the workspace sources (and every
//! site is listed).

use spate_types::failpoints::ALL;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const INTRO: &str = r#"# Fail points

<!-- Generated from `spate_types::failpoints::ALL` by `crates/spate-types/tests/failpoints.rs`.
     Do not edit by hand: change the list and run
     `SPATE_BLESS=1 cargo test -p spate-types --test failpoints`. -->

spate has a named fail point at every durable step of the WAL, the checkpoint store, the state
format and the engine's batch commit protocol (DESIGN.md §4). They are for crash testing
(`spate chaos`, docs/testing.md): kill, fail or slow the process at an exact step and check that
recovery still gives exactly-once state.

## Building with fail points

Fail points are compiled in only with a cargo feature; without it every site expands to nothing
(no code, no cost). Every crate holding sites has a `failpoints` feature:

| feature | turns on |
|---|---|
| `spate-cli/failpoints` | everything below (the `spate` binary) |
| `spate-streaming/failpoints` | the `engine::*` points, and the three storage crates' |
| `spate-wal/failpoints` | `wal::*` |
| `spate-checkpoint/failpoints` | `checkpoint::*` |
| `spate-state/failpoints` | `state::*` |
| `spate-types/failpoints` | the runtime (`spate_types::failpoints::{eval, configure, ...}`) |

```sh
cargo build -p spate-cli --features failpoints
./target/debug/spate info --failpoints        # the list below, and whether it is compiled in
```

## Arming them: `SPATE_FAILPOINTS`

The `spate` binary reads `SPATE_FAILPOINTS` at startup (before any subcommand runs). The syntax is
the `fail` crate's `FAILPOINTS` syntax: `name=actions` entries separated by `;`, where `actions` is
`action[->action...]` and an action is `[p%][cnt*]task[(arg)]`:

| task | effect |
|---|---|
| `return` / `return(arg)` | the site fails with its typed error (the message names the fail point) |
| `return(abort)` | **the process aborts** at the site (`std::process::abort`: SIGABRT, no unwinding, no destructors — a crash) |
| `return(exit)` | the process exits with status 86 at the site, without unwinding |
| `panic` / `panic(msg)` | the thread panics at the site |
| `sleep(ms)` | the thread sleeps `ms` milliseconds, then continues |
| `delay(ms)`, `pause`, `yield`, `print(msg)`, `off` | as in the `fail` crate |

Examples:

```sh
SPATE_FAILPOINTS='wal::sync::before=return' spate wordcount ...        # every WAL sync fails
SPATE_FAILPOINTS='wal::sync::after=3*off->return(abort)' spate ...      # crash after the 4th sync
SPATE_FAILPOINTS='checkpoint::manifest::put::after=return(abort)' ...   # crash right after a publish
SPATE_FAILPOINTS='engine::job::run::before=sleep(500);wal::roll::before=panic' ...
```

An unknown name is an error (exit status 2), and so is `SPATE_FAILPOINTS` in a build without fail
points: a typo must never silently arm nothing. In Rust tests, arm them with
`fail::cfg(name, actions)` or `spate_types::failpoints::configure(spec)`.

Sites use one macro, `spate_types::spate_fail!("name")` (no error path: only `abort`/`exit`, `panic`,
`sleep`, ... act) or `spate_types::spate_fail!("name", |arg| error)` (on `return(arg)` the enclosing
function returns the site's typed error built from `spate_types::failpoints::io_error`). The
`abort`/`exit` arguments are handled by that macro, so they work at every site.

## Deliberately broken builds (test-only)

Two cargo features build a spate that **violates its durability contract on purpose**, so that the
chaos harness can show its oracle catches real bugs (the oracle self-test). They are never on by
default, never part of a release, and the `spate` binary prints a warning on every start when built
with one of them:

| feature (spate-cli) | crate feature | the bug | what catches it |
|---|---|---|---|
| `chaos-broken-skip-sync` | `spate-wal/chaos-broken-skip-sync` | WAL group commit skips `fdatasync` but reports success | losing un-synced data (power loss, `SimFs::crash`, a dropped page cache): acknowledged records are missing after recovery. `spate chaos run --simfs` (the WAL on a `SimFs` crashed every cycle, docs/chaos.md) fails with `lost` findings (`crates/spate-cli/tests/chaos_simfs.rs`; also `spate-wal`'s `power_loss` test). A plain SIGKILL does **not** lose the page cache, so the process mode cannot catch this bug. |
| `chaos-broken-manifest-first` | `spate-checkpoint/chaos-broken-manifest-first` | a commit publishes the manifest before writing its data objects | a crash between the two (e.g. `checkpoint::manifest::put::after=return(abort)`): the newest manifest names missing objects. Recovery rejects it (`missing object`) and falls back, which a correct build never needs: the oracle treats such a rejection in a restart report as a protocol violation. |

`spate_wal::CHAOS_BROKEN_SKIP_SYNC` and `spate_checkpoint::CHAOS_BROKEN_MANIFEST_FIRST` say whether
the build is broken.

## All fail points
"#;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/spate-types has a workspace root")
        .to_owned()
}

fn render() -> String {
    let mut s = String::from(INTRO);
    s.push_str(&format!(
        "\n{} fail points, in protocol order within each crate.\n",
        ALL.len()
    ));
    let mut krate = "";
    for p in ALL {
        if p.krate != krate {
            krate = p.krate;
            s.push_str(&format!(
                "\n### {krate}\n\n| name | where, and what `return` does |\n|---|---|\n"
            ));
        }
        s.push_str(&format!("| `{}` | {} |\n", p.name, p.description));
    }
    s
}

#[test]
fn docs_page_is_generated_from_the_list() {
    let path = workspace_root().join("docs/failpoints.md");
    let want = render();
    if std::env::var_os("SPATE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: run `SPATE_BLESS=1 cargo test -p spate-types --test failpoints`",
        path.display()
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `name -> [file]` for every `spate_fail!("name"` in the crates' `src` directories (the macro's
/// own documentation excluded).
fn sites() -> BTreeMap<String, Vec<String>> {
    let root = workspace_root();
    let mut files = Vec::new();
    for e in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        rust_files(&e.path().join("src"), &mut files);
    }
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        if f.ends_with("spate-types/src/failpoints.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("spate_fail!(") {
            rest = &rest[i + "spate_fail!(".len()..];
            let t = rest.trim_start();
            let name = t
                .strip_prefix('"')
                .and_then(|t| t.split_once('"'))
                .map(|(n, _)| n.to_owned())
                .unwrap_or_else(|| panic!("{}: spate_fail! without a literal name", f.display()));
            found
                .entry(name)
                .or_default()
                .push(f.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    found
}

#[test]
fn every_listed_point_has_exactly_one_site_and_every_site_is_listed() {
    let found = sites();
    for p in ALL {
        let files = found.get(p.name).cloned().unwrap_or_default();
        assert_eq!(
            files.len(),
            1,
            "fail point {} must have exactly one spate_fail! site, found {files:?}",
            p.name
        );
        let dir = format!("crates/{}/", p.krate);
        assert!(
            files[0].starts_with(&dir),
            "{} is listed in {} but sits in {}",
            p.name,
            p.krate,
            files[0]
        );
    }
    for name in found.keys() {
        assert!(
            spate_types::failpoints::find(name).is_some(),
            "spate_fail!({name:?}) is not in spate_types::failpoints::ALL"
        );
    }
}
