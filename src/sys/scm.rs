//! Passing file descriptors between processes over a Unix socket (`SCM_RIGHTS`): a
//! `SOCK_SEQPACKET` socket pair, sending one descriptor with a one-byte message, and receiving
//! it (close-on-exec) on the other side.
//!
//! The process level uses it to hand a context's userfaultfd to its supervisor: the kernel
//! duplicates the open file description into the receiver, so both sides then hold the same
//! userfaultfd (the registrations and the faults belong to the sender's memory).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Creates a connected `AF_UNIX`/`SOCK_SEQPACKET` pair, both ends close-on-exec.
/// Sequenced packets keep message boundaries, so one `recvmsg` gets one descriptor.
///
/// # Errors
/// `EMFILE`/`ENFILE` when out of descriptors.
///
/// # References
/// socketpair(2), unix(7).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a live array of two ints the kernel fills on success.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success both are fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for one `int` in a control message (`CMSG_SPACE(sizeof(int))`), 8-byte aligned.
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

/// Sends `fd` over the Unix socket `sock` as `SCM_RIGHTS` ancillary data with the one-byte
/// message `tag`. Blocks like `sendmsg` on a blocking socket; `MSG_NOSIGNAL`, so a closed peer
/// is `EPIPE`, not `SIGPIPE`. No allocation.
///
/// # Errors
/// `EPIPE`/`ECONNRESET` when the peer is gone; `EBADF` for a bad `fd`.
///
/// # References
/// sendmsg(2), unix(7) (`SCM_RIGHTS`), cmsg(3).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, tag: u8) -> io::Result<()> {
    let mut byte = [tag];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 32]);
    #[allow(clippy::cast_possible_truncation)] // the size of one int (4) fits a u32
    // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<i32>() as u32),
            libc::CMSG_LEN(size_of::<i32>() as u32),
        )
    };
    debug_assert!(space as usize <= buf.0.len());
    // SAFETY: msghdr is plain data; all-zero (no name, no flags) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as usize;
    // SAFETY: msg_control points at buf (aligned, at least CMSG_SPACE(int) bytes), so
    // CMSG_FIRSTHDR returns a pointer to its start, valid for one cmsghdr plus an int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = len as usize;
        libc::CMSG_DATA(c)
            .cast::<i32>()
            .write_unaligned(fd.as_raw_fd());
    }
    loop {
        // SAFETY: msg and everything it points to (iov, byte, buf) are live for the call; the
        // kernel only reads them.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message from the Unix socket `sock`: its one-byte tag and the descriptor it
/// carried (`MSG_CMSG_CLOEXEC`, so the new descriptor is close-on-exec). `Ok(None)` at
/// end-of-file (the peer closed without sending). A message without a descriptor, or with
/// truncated ancillary data (`MSG_CTRUNC`), is `EPROTO`; any extra descriptors the kernel
/// installed are closed.
///
/// # Errors
/// `EAGAIN` on a non-blocking socket with nothing pending; `EPROTO` as above.
///
/// # References
/// recvmsg(2), unix(7) (`SCM_RIGHTS`), cmsg(3).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<(u8, OwnedFd)>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 32]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = buf.0.len();
    let n = loop {
        // SAFETY: msg points at live buffers (byte, buf) of the lengths given; the kernel writes
        // at most those lengths.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut got: Option<OwnedFd> = None;
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the ancillary data the kernel
    // wrote into buf; CMSG_FIRSTHDR/NXTHDR walk within it and return NULL at its end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<i32>();
                for i in 0..count {
                    let fd = data.add(i).read_unaligned();
                    // Each is a fresh descriptor installed for us: own it (the first is kept,
                    // the rest are closed on drop).
                    let owned = OwnedFd::from_raw_fd(fd);
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 && got.is_none() {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    match got {
        Some(fd) => Ok(Some((byte[0], fd))),
        None => Err(io::Error::from_raw_os_error(libc::EPROTO)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_and_refers_to_the_same_file() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        send_fd(a.as_fd(), w.as_fd(), 7).unwrap();
        drop(w);
        let (tag, w2) = recv_fd(b.as_fd()).unwrap().unwrap();
        assert_eq!(tag, 7);
        // The received descriptor is close-on-exec and writes into the same pipe.
        let fl = rustix::io::fcntl_getfd(&w2).unwrap();
        assert!(fl.contains(rustix::io::FdFlags::CLOEXEC));
        rustix::io::write(&w2, b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(rustix::io::read(&r, &mut buf).unwrap(), 1);
        assert_eq!(&buf, b"x");
        // End of file once the peer is gone.
        drop(a);
        assert!(recv_fd(b.as_fd()).unwrap().is_none());
    }
}
