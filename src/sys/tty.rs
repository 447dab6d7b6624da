//! Terminal control for `nebula-ctl top`: raw input mode (`tcgetattr`/`tcsetattr`) and the
//! window size (`TIOCGWINSZ`). rustix's `termios` feature is not enabled in this crate, so
//! these go through libc.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A terminal in non-canonical, no-echo, no-signal mode; the previous settings come back
/// when it is dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

/// Puts the terminal `fd` into raw input mode: no line buffering (`ICANON` off), no echo,
/// no `ISIG` (Ctrl-C arrives as byte 3, so the caller can restore the screen), reads return
/// what is there (`VMIN` 0, `VTIME` 0). Output processing (`OPOST`, `\n` to `\r\n`) stays on.
///
/// The caller must keep `fd` open while the returned guard lives.
///
/// # Errors
///
/// `tcgetattr(3)`/`tcsetattr(3)` errors; `ENOTTY` when `fd` is not a terminal.
///
/// # References
///
/// termios(3), tcsetattr(3).
pub fn raw_mode(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
    let raw_fd = fd.as_raw_fd();
    // SAFETY: termios is plain old data (integers and arrays); all-zero is a valid value
    // that tcgetattr overwrites completely.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `raw_fd` is an open descriptor (borrowed for the call) and `saved` is a valid,
    // writable termios.
    if unsafe { libc::tcgetattr(raw_fd, &mut saved) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut raw = saved;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    raw.c_iflag &= !(libc::IXON | libc::ICRNL);
    raw.c_cc[libc::VMIN] = 0;
    raw.c_cc[libc::VTIME] = 0;
    // SAFETY: `raw_fd` is open and `raw` is a valid termios derived from the current one.
    if unsafe { libc::tcsetattr(raw_fd, libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RawMode { fd: raw_fd, saved })
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `self.fd` is kept open by the caller while the guard lives (documented on
        // `raw_mode`) and `saved` is the termios tcgetattr returned for it. A failure leaves
        // the terminal raw; nothing better can be done in a destructor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// The terminal's size as `(rows, columns)` (`ioctl(TIOCGWINSZ)`).
///
/// # Errors
///
/// `ENOTTY` when `fd` is not a terminal; a size of 0 (some ptys before a resize) is
/// returned as is.
///
/// # References
///
/// ioctl_tty(2), `TIOCGWINSZ`.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // valid, writable winsize; `fd` is open for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_row, ws.ws_col))
}
