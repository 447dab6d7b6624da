//! `run`'s exit codes and how it reports a refusal.

use std::process::ExitCode;

/// Exit code when nebula-ctl refuses or fails to create the context.
pub const REFUSED: u8 = 125;
/// Exit code for a usage error (bad flag, bad profile).
pub const USAGE: u8 = 2;

/// Prints `e` and each of its causes once, and returns `code`.
pub fn refuse(code: u8, e: &dyn std::error::Error) -> ExitCode {
    let refused = if code == REFUSED { "refused: " } else { "" };
    eprintln!("nebula-ctl: {refused}{e}");
    let mut src = e.source();
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    ExitCode::from(code)
}
