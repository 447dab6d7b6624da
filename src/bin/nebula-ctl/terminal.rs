//! Terminal control for `nebula-ctl top`: raw input mode and the window size, through
//! rustix's termios.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::termios::{self, InputModes, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// A terminal in non-canonical, no-echo, no-signal mode; the previous settings come back
/// when it is dropped. It borrows the terminal's fd, so the fd outlives it.
#[derive(Debug)]
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

/// Puts the terminal `fd` into raw input mode: no line buffering (`ICANON` off), no echo,
/// no `ISIG` (Ctrl-C arrives as byte 3, so the caller can restore the screen), reads return
/// what is there (`VMIN` 0, `VTIME` 0). Output processing (`OPOST`, `\n` to `\r\n`) stays on.
///
/// # Errors
///
/// `tcgetattr(3)`/`tcsetattr(3)` errors; `ENOTTY` when `fd` is not a terminal.
pub fn raw_mode(fd: BorrowedFd<'_>) -> io::Result<RawMode<'_>> {
    let saved = termios::tcgetattr(fd)?;
    let mut raw = saved.clone();
    raw.local_modes -=
        LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN;
    raw.input_modes -= InputModes::IXON | InputModes::ICRNL;
    raw.special_codes[SpecialCodeIndex::VMIN] = 0;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
    Ok(RawMode { fd, saved })
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // A failure leaves the terminal raw; nothing better can be done in a destructor.
        let _ = termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

/// The terminal's size as `(rows, columns)` (`TIOCGWINSZ`); 0 (some ptys before a resize)
/// is returned as is.
///
/// # Errors
///
/// `ENOTTY` when `fd` is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let ws = termios::tcgetwinsize(fd)?;
    Ok((ws.ws_row, ws.ws_col))
}
