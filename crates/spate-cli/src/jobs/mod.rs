//! The main jobs (`spate wordcount`, `spate clicks`) and the corpus generator (`spate gen`).

pub(crate) mod clicks;
pub(crate) mod gen;
pub(crate) mod output;
mod pyrand;
pub(crate) mod run;
pub(crate) mod wordcount;
pub(crate) mod words;

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
