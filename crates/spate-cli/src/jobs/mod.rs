//! The main jobs (`spate wordcount`, `spate clicks`) and the corpus generator (`spate gen`).

// Used by the `clicks` job once the engine API lands; parse rules are tested now.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod clicks;
pub(crate) mod gen;
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod output;
mod pyrand;

use std::process::ExitCode;

/// Maps a job's result to the exit code, printing the error as one line on stderr.
pub(crate) fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spate: {e}");
            ExitCode::FAILURE
        }
    }
}
