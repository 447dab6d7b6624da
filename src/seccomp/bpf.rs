//! A classic-BPF interpreter for seccomp programs, written from the kernel's rules and
//! independent of the code generator.
//!
//! [`check`] applies the checks `seccomp_check_filter` and `bpf_check_classic` apply before
//! the kernel accepts a program (length 1 to 4096, known opcodes only, `BPF_ABS` loads aligned
//! and inside `struct seccomp_data`, scratch slots 0 to 15, jumps inside the program, a
//! return at the end, no division by a zero constant); [`run`] executes a checked program
//! on a [`SeccompData`] exactly like the kernel would, returning the 32-bit filter result.
//! The oracle test replays every compiled profile through it; the supervisor can use it to
//! explain a verdict without installing anything.

use std::fmt;

/// The input of a seccomp filter (`struct seccomp_data`, 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeccompData {
    /// The system call number (`int nr`).
    pub nr: i32,
    /// The `AUDIT_ARCH_*` value of the calling convention.
    pub arch: u32,
    /// The instruction pointer at the system call.
    pub instruction_pointer: u64,
    /// The six arguments, as 64-bit registers.
    pub args: [u64; 6],
}

impl SeccompData {
    /// A native x86_64 call of `nr` with `args`.
    pub fn x86_64(nr: i32, args: [u64; 6]) -> Self {
        SeccompData {
            nr,
            arch: super::table::AUDIT_ARCH_X86_64,
            instruction_pointer: 0,
            args,
        }
    }

    /// The 32-bit word at byte offset `off` (what `ld [off]` loads; little-endian, as on
    /// x86_64, where the low half of an argument comes first).
    // The kernel's view: the bits of `nr` and the halves of the 64-bit fields.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn word(&self, off: u32) -> u32 {
        match off {
            0 => self.nr as u32,
            4 => self.arch,
            8 => self.instruction_pointer as u32,
            12 => (self.instruction_pointer >> 32) as u32,
            16..=60 => {
                let i = ((off - 16) / 8) as usize;
                let v = self.args[i];
                if (off - 16) % 8 == 0 {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
            _ => unreachable!("check() admits only aligned offsets below 64"),
        }
    }
}

/// `sizeof(struct seccomp_data)`.
pub const SECCOMP_DATA_LEN: u32 = 64;
/// The longest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

// Classic BPF encoding (linux/bpf_common.h, linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// Why a program would be refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// Empty or longer than [`MAX_INSNS`].
    #[error("program length {0} is outside 1..=4096")]
    Length(usize),
    /// An opcode seccomp does not accept.
    #[error("instruction {pc}: opcode {code:#06x} is not allowed in a seccomp filter")]
    Opcode {
        /// Where.
        pc: usize,
        /// The opcode.
        code: u16,
    },
    /// A `BPF_ABS` load that is unaligned or outside `seccomp_data`.
    #[error("instruction {pc}: load from offset {k} (must be 4-byte aligned and below 64)")]
    Load {
        /// Where.
        pc: usize,
        /// The offset.
        k: u32,
    },
    /// A scratch-memory slot above 15.
    #[error("instruction {pc}: scratch slot {k} (there are 16)")]
    Slot {
        /// Where.
        pc: usize,
        /// The slot.
        k: u32,
    },
    /// A jump past the end.
    #[error("instruction {pc}: jump target outside the program")]
    Jump {
        /// Where.
        pc: usize,
    },
    /// Division or modulo by the constant 0.
    #[error("instruction {pc}: division by the constant 0")]
    DivByZero {
        /// Where.
        pc: usize,
    },
    /// The last instruction is not a return.
    #[error("the last instruction is not a return")]
    NoFinalReturn,
    /// A scratch slot read before any write (the kernel's checker refuses this too).
    #[error("instruction {pc}: scratch slot {k} read before it was written")]
    UninitSlot {
        /// Where.
        pc: usize,
        /// The slot.
        k: u32,
    },
}

/// Checks `prog` the way the kernel does before accepting it as a seccomp filter.
///
/// # Errors
/// The first problem found.
pub fn check(prog: &[libc::sock_filter]) -> Result<(), BpfError> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(BpfError::Length(prog.len()));
    }
    let n = prog.len();
    for (pc, ins) in prog.iter().enumerate() {
        let code = ins.code;
        let k = ins.k;
        let target_ok = |off: usize| pc + 1 + off < n;
        match code & 0x07 {
            LD | LDX => {
                let mode = code & 0xe0;
                let size = code & 0x18;
                match (mode, size) {
                    (ABS, W) if code & 0x07 == LD => {
                        if k % 4 != 0 || k >= SECCOMP_DATA_LEN {
                            return Err(BpfError::Load { pc, k });
                        }
                    }
                    (IMM, W) | (LEN, W) => {}
                    (MEM, W) => {
                        if k > 15 {
                            return Err(BpfError::Slot { pc, k });
                        }
                    }
                    _ => return Err(BpfError::Opcode { pc, code }),
                }
            }
            ST | STX => {
                if code & !0x07 != 0 {
                    return Err(BpfError::Opcode { pc, code });
                }
                if k > 15 {
                    return Err(BpfError::Slot { pc, k });
                }
            }
            ALU => {
                let op = code & 0xf0;
                let src = code & 0x08;
                if !matches!(
                    op,
                    ADD | SUB | MUL | DIV | OR | AND | LSH | RSH | NEG | MOD | XOR
                ) {
                    return Err(BpfError::Opcode { pc, code });
                }
                if src == K && matches!(op, DIV | MOD) && k == 0 {
                    return Err(BpfError::DivByZero { pc });
                }
            }
            JMP => {
                let op = code & 0xf0;
                match op {
                    JA => {
                        if code != JMP | JA || !target_ok(k as usize) {
                            return Err(BpfError::Jump { pc });
                        }
                    }
                    JEQ | JGT | JGE | JSET => {
                        if !target_ok(ins.jt.into()) || !target_ok(ins.jf.into()) {
                            return Err(BpfError::Jump { pc });
                        }
                    }
                    _ => return Err(BpfError::Opcode { pc, code }),
                }
            }
            RET => {
                if !matches!(code & 0x18, K | A) || code & !0x1f != 0 {
                    return Err(BpfError::Opcode { pc, code });
                }
            }
            MISC => {
                if !matches!(code & 0xf8, TAX | TXA) {
                    return Err(BpfError::Opcode { pc, code });
                }
            }
            _ => unreachable!("code & 7 has eight values, all matched"),
        }
    }
    if prog[n - 1].code & 0x07 != RET {
        return Err(BpfError::NoFinalReturn);
    }
    check_slots(prog)
}

/// The kernel refuses programs that may read a scratch slot no path has written: a forward
/// data-flow pass over the slots known written on every path into an instruction.
fn check_slots(prog: &[libc::sock_filter]) -> Result<(), BpfError> {
    let n = prog.len();
    // written[pc]: slots written on every path reaching pc (u16 bit mask); None: unreached.
    let mut written: Vec<Option<u16>> = vec![None; n];
    written[0] = Some(0);
    for pc in 0..n {
        let Some(mut w) = written[pc] else { continue };
        let ins = &prog[pc];
        let class = ins.code & 0x07;
        if matches!(class, LD | LDX) && ins.code & 0xe0 == MEM && w & (1 << ins.k) == 0 {
            return Err(BpfError::UninitSlot { pc, k: ins.k });
        }
        if matches!(class, ST | STX) {
            w |= 1 << ins.k;
        }
        let mut flow = |to: usize| {
            written[to] = Some(match written[to] {
                Some(prev) => prev & w,
                None => w,
            });
        };
        match class {
            RET => {}
            JMP if ins.code & 0xf0 == JA => flow(pc + 1 + ins.k as usize),
            JMP => {
                flow(pc + 1 + usize::from(ins.jt));
                flow(pc + 1 + usize::from(ins.jf));
            }
            _ => flow(pc + 1),
        }
    }
    Ok(())
}

/// Runs checked program `prog` on `data` and returns the filter's 32-bit result.
///
/// # Errors
/// Whatever [`check`] finds: an unchecked program is never run.
pub fn run(prog: &[libc::sock_filter], data: &SeccompData) -> Result<u32, BpfError> {
    run_counted(prog, data).map(|(ret, _)| ret)
}

/// Like [`run`], and also returns how many instructions the kernel would execute for this
/// input (the filter's cost for one system call, when the kernel's constant-action cache
/// does not answer it).
///
/// # Errors
/// Whatever [`check`] finds.
pub fn run_counted(
    prog: &[libc::sock_filter],
    data: &SeccompData,
) -> Result<(u32, usize), BpfError> {
    check(prog)?;
    let mut steps = 0usize;
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let ins = &prog[pc];
        let k = ins.k;
        pc += 1;
        steps += 1;
        match ins.code & 0x07 {
            LD | LDX => {
                let v = match ins.code & 0xe0 {
                    ABS => data.word(k),
                    IMM => k,
                    LEN => SECCOMP_DATA_LEN,
                    MEM => mem[k as usize],
                    _ => unreachable!("checked"),
                };
                if ins.code & 0x07 == LD {
                    a = v;
                } else {
                    x = v;
                }
            }
            ST => mem[k as usize] = a,
            STX => mem[k as usize] = x,
            ALU => {
                let src = if ins.code & 0x08 == X { x } else { k };
                a = match ins.code & 0xf0 {
                    ADD => a.wrapping_add(src),
                    SUB => a.wrapping_sub(src),
                    MUL => a.wrapping_mul(src),
                    // The kernel's classic-BPF conversion makes a division by a zero X end
                    // the program with 0 (SECCOMP_RET_KILL_THREAD).
                    DIV if src == 0 => return Ok((0, steps)),
                    DIV => a / src,
                    MOD if src == 0 => return Ok((0, steps)),
                    MOD => a % src,
                    OR => a | src,
                    AND => a & src,
                    LSH => a.checked_shl(src).unwrap_or(0),
                    RSH => a.checked_shr(src).unwrap_or(0),
                    NEG => a.wrapping_neg(),
                    XOR => a ^ src,
                    _ => unreachable!("checked"),
                };
            }
            JMP => {
                let src = if ins.code & 0x08 == X { x } else { k };
                let taken = match ins.code & 0xf0 {
                    JA => {
                        pc += k as usize;
                        continue;
                    }
                    JEQ => a == src,
                    JGT => a > src,
                    JGE => a >= src,
                    JSET => a & src != 0,
                    _ => unreachable!("checked"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            RET => return Ok((if ins.code & 0x18 == A { a } else { k }, steps)),
            MISC => {
                if ins.code & 0xf8 == TAX {
                    x = a;
                } else {
                    a = x;
                }
            }
            _ => unreachable!("checked"),
        }
    }
}

/// Formats a program one instruction per line, in the style of `bpf_dbg`/`seccomp-tools`.
pub struct Disassembly<'a>(pub &'a [libc::sock_filter]);

impl fmt::Display for Disassembly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (pc, i) in self.0.iter().enumerate() {
            let (jt, jf) = (pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf));
            let src = if i.code & 0x08 == X {
                "x".to_string()
            } else {
                format!("{:#x}", i.k)
            };
            let text = match i.code & 0x07 {
                LD if i.code & 0xe0 == ABS => format!("ld [{}]", i.k),
                LD => format!("ld #{:#x}", i.k),
                LDX => format!("ldx #{:#x}", i.k),
                ST => format!("st M[{}]", i.k),
                STX => format!("stx M[{}]", i.k),
                ALU => format!("alu {:#x} {src}", i.code & 0xf0),
                JMP if i.code & 0xf0 == JA => format!("ja {}", pc + 1 + i.k as usize),
                JMP => {
                    let op = match i.code & 0xf0 {
                        JEQ => "jeq",
                        JGT => "jgt",
                        JGE => "jge",
                        _ => "jset",
                    };
                    format!("{op} {src} ? {jt} : {jf}")
                }
                RET if i.code & 0x18 == A => "ret a".to_string(),
                RET => format!("ret {:#010x}", i.k),
                _ => format!("misc {:#x}", i.code),
            };
            writeln!(f, "{pc:4}: {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    #[test]
    fn hand_written_program_runs_like_the_kernel_would() {
        // if nr == 39 && (arg0 & 0xff) == 7: errno 1; else if nr > 100: ret A (= nr); allow
        let prog = [
            i(LD | W | ABS, 0, 0, 0),
            i(JMP | JEQ | K, 0, 4, 39),
            i(LD | W | ABS, 0, 0, 16),
            i(ALU | AND | K, 0, 0, 0xff),
            i(JMP | JEQ | K, 0, 4, 7),
            i(RET | K, 0, 0, 0x0005_0001),
            i(JMP | JGT | K, 0, 1, 100),
            i(RET | A, 0, 0, 0),
            i(RET | K, 0, 0, 0x7fff_0000),
            i(RET | K, 0, 0, 0x7fff_0000),
        ];
        check(&prog).unwrap();
        let run = |nr, a0| run(&prog, &SeccompData::x86_64(nr, [a0, 0, 0, 0, 0, 0])).unwrap();
        assert_eq!(run(39, 0x1_0000_0107), 0x0005_0001);
        assert_eq!(run(39, 8), 0x7fff_0000);
        assert_eq!(run(101, 0), 101);
        assert_eq!(run(3, 0), 0x7fff_0000);
    }

    #[test]
    fn loads_see_the_halves_of_64_bit_arguments() {
        let prog = [i(LD | W | ABS, 0, 0, 20), i(RET | A, 0, 0, 0)];
        let d = SeccompData::x86_64(0, [0xdead_beef_0000_0001, 0, 0, 0, 0, 0]);
        assert_eq!(run(&prog, &d).unwrap(), 0xdead_beef);
        let prog = [i(LD | W | ABS, 0, 0, 4), i(RET | A, 0, 0, 0)];
        assert_eq!(run(&prog, &d).unwrap(), super::super::AUDIT_ARCH_X86_64);
    }

    #[test]
    fn scratch_memory_and_x_register() {
        let prog = [
            i(LD | IMM, 0, 0, 5),
            i(ST, 0, 0, 3),
            i(LDX | W | MEM, 0, 0, 3),
            i(LD | IMM, 0, 0, 7),
            i(ALU | MUL | X, 0, 0, 0),
            i(MISC | TAX, 0, 0, 0),
            i(MISC | TXA, 0, 0, 0),
            i(RET | A, 0, 0, 0),
        ];
        assert_eq!(run(&prog, &SeccompData::x86_64(0, [0; 6])).unwrap(), 35);
    }

    #[test]
    fn checker_refuses_what_the_kernel_refuses() {
        let ret = i(RET | K, 0, 0, 0);
        assert_eq!(check(&[]), Err(BpfError::Length(0)));
        assert_eq!(
            check(&[i(LD | W | ABS, 0, 0, 2), ret]),
            Err(BpfError::Load { pc: 0, k: 2 })
        );
        assert_eq!(
            check(&[i(LD | W | ABS, 0, 0, 64), ret]),
            Err(BpfError::Load { pc: 0, k: 64 })
        );
        assert_eq!(
            check(&[i(JMP | JEQ | K, 0, 1, 0), ret]),
            Err(BpfError::Jump { pc: 0 })
        );
        assert_eq!(
            check(&[i(ALU | DIV | K, 0, 0, 0), ret]),
            Err(BpfError::DivByZero { pc: 0 })
        );
        assert_eq!(
            check(&[i(LD | W | ABS, 0, 0, 0)]),
            Err(BpfError::NoFinalReturn)
        );
        assert_eq!(
            check(&[i(LD | W | MEM, 0, 0, 2), ret]),
            Err(BpfError::UninitSlot { pc: 0, k: 2 })
        );
        // A byte load (BPF_B) is not allowed on seccomp_data.
        assert!(matches!(
            check(&[i(LD | 0x10 | ABS, 0, 0, 0), ret]),
            Err(BpfError::Opcode { .. })
        ));
    }

    #[test]
    fn division_by_zero_x_returns_zero() {
        let prog = [
            i(LD | IMM, 0, 0, 9),
            i(LDX | IMM, 0, 0, 0),
            i(ALU | DIV | X, 0, 0, 0),
            i(RET | K, 0, 0, 0x7fff_0000),
        ];
        assert_eq!(run(&prog, &SeccompData::x86_64(0, [0; 6])).unwrap(), 0);
    }
}
