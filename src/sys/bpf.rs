//! cgroup v2 device control: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, built
//! from device rules, loaded and attached to a cgroup (`BPF_CGROUP_DEVICE`). cgroup v2 has
//! no `devices.allow` file; this program is its device controller (cgroup-v2.rst, "Device
//! controller").
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (`access_type` = access << 16 | type) and returns 1 to allow, 0 to deny. Rules are
//! checked last to first and the first that matches decides, which is the order cgroup v1's
//! `devices.allow`/`devices.deny` writes took effect in; no match allows, as a v1 cgroup
//! starts out allowing everything.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u32 = 4;

/// One rule: which devices (`None`: any), which accesses, allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// [`DEV_BLOCK`], [`DEV_CHAR`], or `None` for both.
    pub kind: Option<u32>,
    /// The major number, `None`: any.
    pub major: Option<u32>,
    /// The minor number, `None`: any.
    pub minor: Option<u32>,
    /// [`ACC_MKNOD`] | [`ACC_READ`] | [`ACC_WRITE`] bits the rule covers.
    pub access: u32,
    /// Allow (or deny) what matches.
    pub allow: bool,
}

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

/// Compiles `rules` (see the module docs for the order) into a program.
///
/// # Errors
/// `EINVAL` for a number that does not fit the instruction's 32-bit immediate.
pub fn compile(rules: &[DeviceRule]) -> io::Result<Vec<Insn>> {
    let imm = |v: u32| i32::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each test jumps past the block when it does not hold; the offsets are patched
        // once the block's length is known (marked with off = -1).
        if let Some(k) = r.kind {
            block.push(insn(JMP_JNE_K, 2, 0, -1, imm(k)?));
        }
        if let Some(m) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, -1, imm(m)?));
        }
        if let Some(m) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, -1, imm(m)?));
        }
        let all = ACC_MKNOD | ACC_READ | ACC_WRITE;
        if r.access & all != all {
            block.push(insn(ALU64_MOV_X, 6, 3, 0, 0));
            if r.allow {
                // An allow covers a request only when it covers all of it (an O_RDWR open
                // is one request for read and write): (access & !covered) == 0.
                block.push(insn(ALU64_AND_K, 6, 0, 0, imm(all & !r.access)?));
                block.push(insn(JMP_JNE_K, 6, 0, -1, 0));
            } else {
                // A deny refuses a request that asks for any access it names.
                block.push(insn(ALU64_AND_K, 6, 0, 0, imm(r.access & all)?));
                block.push(insn(JMP_JEQ_K, 6, 0, -1, 0));
            }
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if matches!(ins.code, JMP_JNE_K | JMP_JEQ_K) && ins.off == -1 {
                ins.off = i16::try_from(len - i - 1)
                    .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
            }
        }
        let unconditional = len == 2;
        p.extend(block);
        if unconditional {
            // It matches every access: what follows could never run, and the verifier
            // refuses unreachable instructions.
            return Ok(p);
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(p)
}

/// The fields of `union bpf_attr` that `BPF_PROG_LOAD` reads, zero-padded.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

/// The fields of `union bpf_attr` that `BPF_PROG_ATTACH` reads.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u32; 7],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, zero-initialized #[repr(C)] prefix of union bpf_attr of the
    // size passed; the kernel reads it (and for a load writes only into log_buf: NULL, or on
    // the retry a live buffer of log_size bytes owned by the caller for the call).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program and attaches it to the cgroup
/// directory `cgroup` (`BPF_CGROUP_DEVICE`, no flags: the only program of this cgroup, and
/// its descendants cannot override it). The attachment holds the program; it goes with the
/// cgroup.
///
/// # Errors
/// `EPERM` without `CAP_BPF`/`CAP_SYS_ADMIN` (or when the cgroup's program was attached
/// with other flags), `EINVAL` from the verifier. Without flags a program attached before
/// is replaced.
///
/// # References
/// bpf(2) `BPF_PROG_LOAD`, `BPF_PROG_ATTACH`; Documentation/admin-guide/cgroup-v2.rst.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: &[Insn]) -> io::Result<()> {
    let license = c"Apache-2.0";
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len()).map_err(super::overflow)?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Load it again with the verifier's log, which says why.
            let mut log = vec![0u8; 16 << 10];
            load.log_level = 1;
            load.log_size = u32::try_from(log.len()).map_err(super::overflow)?;
            load.log_buf = log.as_mut_ptr() as u64;
            let again = bpf(BPF_PROG_LOAD, &mut load);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).trim().to_owned();
            return Err(io::Error::new(
                e.kind(),
                format!("BPF_PROG_LOAD: {e}; verifier: {text} ({again:?})"),
            ));
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("BPF_PROG_LOAD: {e}"))),
    };
    // SAFETY: the kernel returned a fresh program fd that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(super::overflow)?) };
    let mut attach = ProgAttach {
        target_fd: u32::try_from(cgroup.as_raw_fd()).map_err(super::overflow)?,
        attach_bpf_fd: u32::try_from(prog_fd.as_raw_fd()).map_err(super::overflow)?,
        attach_type: BPF_CGROUP_DEVICE,
        ..ProgAttach::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_ATTACH: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a compiled program on one access, as the kernel would (the few opcodes
    /// [`compile`] emits).
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            // The immediate's bits, zero-extended: what compile() put there.
            let k = u64::from(u32::from_ne_bytes(i.imm.to_ne_bytes()));
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]),
                ALU64_AND_K => r[dst] &= k,
                ALU64_RSH_K => r[dst] >>= k,
                ALU64_MOV_K => r[dst] = k,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => {
                    if r[dst] != k {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JMP_JEQ_K => {
                    if r[dst] == k {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JMP_EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_win_and_no_match_allows() {
        let rwm = ACC_MKNOD | ACC_READ | ACC_WRITE;
        let rules = [
            DeviceRule {
                kind: None,
                major: None,
                minor: None,
                access: rwm,
                allow: false,
            },
            DeviceRule {
                kind: Some(DEV_CHAR),
                major: Some(1),
                minor: Some(3),
                access: rwm,
                allow: true,
            },
            DeviceRule {
                kind: Some(DEV_CHAR),
                major: Some(136),
                minor: None,
                access: ACC_READ | ACC_WRITE,
                allow: true,
            },
        ];
        let p = compile(&rules).unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1, "/dev/null read");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1, "/dev/null mknod");
        assert_eq!(
            run(&p, DEV_CHAR, ACC_READ, 1, 5),
            0,
            "/dev/zero is not listed"
        );
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "/dev/sda");
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 136, 7), 1, "a pty");
        assert_eq!(
            run(&p, DEV_CHAR, ACC_MKNOD, 136, 7),
            0,
            "mknod of a pty is not covered"
        );
        assert_eq!(run(&compile(&[]).unwrap(), DEV_BLOCK, ACC_READ, 8, 0), 1);
        // A deny of writes refuses a read-write request, even under an earlier allow.
        let mut with_deny = rules.to_vec();
        with_deny.push(DeviceRule {
            kind: Some(DEV_CHAR),
            major: Some(1),
            minor: Some(3),
            access: ACC_WRITE,
            allow: false,
        });
        let p = compile(&with_deny).unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        // A rule that matches everything ends the program: nothing after it is reachable.
        let deny_all = compile(&rules[..1]).unwrap();
        assert_eq!(deny_all.len(), 8);
        assert_eq!(run(&deny_all, DEV_CHAR, ACC_READ, 1, 3), 0);
    }
}
