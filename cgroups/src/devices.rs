//! Device access rules: the v1 `devices.allow`/`devices.deny` lines, and for cgroup v2 an eBPF
//! program of type `BPF_PROG_TYPE_CGROUP_DEVICE` that gives the same answers.
//!
//! Semantics (as the v1 kernel controller): a cgroup starts allowing every device; a rule
//! that covers all devices and all access ("a *:* rwm") resets the default to allow or deny
//! and drops earlier rules; the remaining rules apply in order, the last matching one wins.
//! An allow rule matches a request whose access is a subset of the rule's; a deny rule matches
//! a request that asks for any of the rule's access bits.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// Access bits as the kernel's `BPF_DEVCG_ACC_*`.
pub(crate) const ACC_MKNOD: u32 = 1;
pub(crate) const ACC_READ: u32 = 2;
pub(crate) const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// Device types as the kernel's `BPF_DEVCG_DEV_*`.
pub(crate) const DEV_BLOCK: u32 = 1;
pub(crate) const DEV_CHAR: u32 = 2;

/// One checked device rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// 'a', 'b' or 'c'.
    pub typ: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// ACC_* bits.
    pub access: u32,
}

impl Rule {
    /// Checks an OCI rule: type a/b/c/u (u is a char device), numbers not negative, access
    /// made of r, w and m (absent or empty means all three).
    pub(crate) fn from_oci(r: &LinuxDeviceCgroup) -> Result<Rule> {
        let invalid = |reason: String| Error::InvalidResource {
            what: format!("devices rule {r:?}"),
            reason,
        };
        let typ = match r.typ().unwrap_or_default() {
            LinuxDeviceType::A => 'a',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::P => {
                return Err(invalid(
                    "type \"p\" (fifo) cannot be controlled by the devices cgroup".into(),
                ))
            }
        };
        let num = |v: Option<i64>, what: &str| -> Result<Option<u32>> {
            match v {
                None => Ok(None),
                Some(n) => u32::try_from(n)
                    .map(Some)
                    .map_err(|_| invalid(format!("{what} {n} is out of range"))),
            }
        };
        let major = num(r.major(), "major")?;
        let minor = num(r.minor(), "minor")?;
        let mut access = 0;
        for c in r.access().as_deref().unwrap_or("rwm").chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => return Err(invalid(format!("access {other:?} is not one of r, w, m"))),
            };
        }
        if access == 0 {
            access = ACC_ALL;
        }
        Ok(Rule {
            allow: r.allow(),
            typ,
            major,
            minor,
            access,
        })
    }

    /// The line written to devices.allow / devices.deny, e.g. "c 1:3 rwm" or "a *:* rwm".
    pub(crate) fn v1_string(&self) -> String {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{} {}:{} {}", self.typ, n(self.major), n(self.minor), acc)
    }

    fn is_everything(&self) -> bool {
        self.typ == 'a' && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }
}

/// Reduces rules to (default verdict, rules that still matter in order).
pub(crate) fn effective(rules: &[Rule]) -> (bool, &[Rule]) {
    match rules.iter().rposition(Rule::is_everything) {
        Some(i) => (rules[i].allow, &rules[i + 1..]),
        None => (true, rules),
    }
}

/// The verdict for one request, computed directly from the rules (used to check the program).
#[cfg(test)]
pub(crate) fn decide(rules: &[Rule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
    let (default, rest) = effective(rules);
    for r in rest.iter().rev() {
        if rule_matches(r, dev_type, major, minor, access) {
            return r.allow;
        }
    }
    default
}

#[cfg(test)]
fn rule_matches(r: &Rule, dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
    let type_ok = match r.typ {
        'b' => dev_type == DEV_BLOCK,
        'c' => dev_type == DEV_CHAR,
        _ => true,
    };
    let access_ok = if r.allow {
        access & !r.access == 0
    } else {
        access & r.access != 0
    };
    type_ok && access_ok && r.major.is_none_or(|m| m == major) && r.minor.is_none_or(|m| m == minor)
}

/// A raw eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes used (class | op | source).
pub(crate) const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub(crate) const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
pub(crate) const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
pub(crate) const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
pub(crate) const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
pub(crate) const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
pub(crate) const JMP32_JEQ_K: u8 = 0x16; // BPF_JMP32 | BPF_JEQ | BPF_K
pub(crate) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// Compiles rules into a `BPF_PROG_TYPE_CGROUP_DEVICE` program. The context is
/// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` where access_type is
/// `(access << 16) | dev_type`; the program returns 1 to allow, 0 to deny.
///
/// Registers: r2 type, r3 access, r4 major, r5 minor; r1 is scratch after the loads. Rules are
/// emitted last first, so the first block that matches is the last matching rule; each block
/// jumps past itself when a field does not match.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let (default, rest) = effective(rules);
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rest.iter().rev() {
        // Each check is a list of instructions ending in a conditional jump to "next"; the
        // jump offsets are filled in once the block length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        match r.typ {
            'b' => {
                jumps.push(block.len());
                block.push(insn(JMP32_JNE_K, 2, 0, 0, DEV_BLOCK as i32));
            }
            'c' => {
                jumps.push(block.len());
                block.push(insn(JMP32_JNE_K, 2, 0, 0, DEV_CHAR as i32));
            }
            _ => {}
        }
        if r.access != ACC_ALL {
            block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            if r.allow {
                // Any requested bit outside the rule: no match.
                block.push(insn(ALU64_AND_K, 1, 0, 0, (!r.access & ACC_ALL) as i32));
                jumps.push(block.len());
                block.push(insn(JMP32_JNE_K, 1, 0, 0, 0));
            } else {
                // No requested bit inside the rule: no match.
                block.push(insn(ALU64_AND_K, 1, 0, 0, r.access as i32));
                jumps.push(block.len());
                block.push(insn(JMP32_JEQ_K, 1, 0, 0, 0));
            }
        }
        if let Some(m) = r.major {
            jumps.push(block.len());
            block.push(insn(JMP32_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            jumps.push(block.len());
            block.push(insn(JMP32_JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, r.allow as i32));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            // Jump from j+1 to the end of the block.
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, default as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    /// Runs the program the way the kernel would for the instructions we emit.
    fn run(prog: &[Insn], dev_type: u32, major: u32, minor: u32, access: u32) -> u64 {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[(i.off / 4) as usize] as u64;
                }
                ALU32_AND_K => r[dst] = ((r[dst] as u32) & (i.imm as u32)) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                JMP32_JNE_K => {
                    if r[dst] as u32 != i.imm as u32 {
                        pc += i.off as usize;
                    }
                }
                JMP32_JEQ_K => {
                    if r[dst] as u32 == i.imm as u32 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rules(list: &[LinuxDeviceCgroup]) -> Vec<Rule> {
        list.iter().map(|r| Rule::from_oci(r).unwrap()).collect()
    }

    #[test]
    fn v1_strings() {
        use LinuxDeviceType::*;
        let r = rules(&[
            rule(false, A, None, None, "rwm"),
            rule(true, C, Some(1), Some(3), "rw"),
            rule(true, B, Some(8), None, "m"),
        ]);
        let s: Vec<String> = r.iter().map(Rule::v1_string).collect();
        assert_eq!(s, ["a *:* rwm", "c 1:3 rw", "b 8:* m"]);
    }

    #[test]
    fn bad_rules_are_rejected() {
        use LinuxDeviceType::*;
        for (r, want) in [
            (rule(true, C, Some(-1), None, "rwm"), "major -1"),
            (rule(true, C, None, None, "rwx"), "'x'"),
            (rule(true, P, None, None, "rwm"), "fifo"),
        ] {
            let err = Rule::from_oci(&r).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn program_agrees_with_rules() {
        use LinuxDeviceType::*;
        let sets = vec![
            // The usual container set: deny all, then allow a list.
            rules(&[
                rule(false, A, None, None, "rwm"),
                rule(true, C, Some(1), Some(3), "rwm"),
                rule(true, C, Some(1), Some(5), "rw"),
                rule(true, C, Some(136), None, "rwm"),
                rule(true, C, None, None, "m"),
                rule(true, B, None, None, "m"),
            ]),
            // Allow all but some.
            rules(&[
                rule(true, A, None, None, "rwm"),
                rule(false, C, Some(1), Some(3), "w"),
                rule(false, B, Some(8), None, "rwm"),
            ]),
            // No reset at all, later rules override earlier ones.
            rules(&[
                rule(false, C, Some(1), None, "rwm"),
                rule(true, C, Some(1), Some(9), "r"),
            ]),
            Vec::new(),
        ];
        for set in &sets {
            let prog = program(set);
            for dev_type in [DEV_BLOCK, DEV_CHAR] {
                for (major, minor) in [(1, 3), (1, 5), (1, 9), (8, 0), (136, 4), (5, 1)] {
                    for access in 1..=ACC_ALL {
                        let want = decide(set, dev_type, major, minor, access);
                        let got = run(&prog, dev_type, major, minor, access) == 1;
                        assert_eq!(
                            got, want,
                            "rules {set:?} type {dev_type} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
        // Spot checks of the intended meaning.
        let usual = &sets[0];
        assert!(decide(usual, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(!decide(usual, DEV_CHAR, 1, 5, ACC_MKNOD | ACC_READ));
        assert!(decide(usual, DEV_CHAR, 1, 5, ACC_MKNOD));
        assert!(!decide(usual, DEV_CHAR, 5, 1, ACC_READ));
        assert!(decide(usual, DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(!decide(usual, DEV_BLOCK, 8, 0, ACC_READ));
        let allow_most = &sets[1];
        assert!(decide(allow_most, DEV_CHAR, 1, 3, ACC_READ));
        assert!(!decide(allow_most, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(!decide(allow_most, DEV_BLOCK, 8, 1, ACC_READ));
        assert!(decide(&sets[3], DEV_BLOCK, 8, 1, ACC_READ));
    }
}
