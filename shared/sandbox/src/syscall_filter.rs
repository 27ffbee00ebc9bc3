//! Tier 1's seccomp filters: every system call is allowed except
//! - network sockets: `socket`/`socketpair` of any family but `AF_UNIX` fail with EAFNOSUPPORT
//!   (with an egress proxy port, IPv4/IPv6 TCP stream sockets are allowed too, and Landlock
//!   limits where they connect: no UDP, no raw sockets, no SCTP or MPTCP, which Landlock's TCP
//!   rules would not cover);
//! - reading or changing other processes: `ptrace`, `process_vm_readv`, `process_vm_writev`;
//! - io_uring (it performs file and network operations seccomp never sees);
//! - kernel surfaces a tool has no business with: `bpf`, `perf_event_open`, `userfaultfd`, the
//!   kernel keyring (`add_key`, `keyctl`, `request_key`), `kexec_load`;
//!
//! all of which fail with EPERM, so the tool gets an error it can report, not a crash. On x86-64
//! the x32 system call numbers fail with ENOSYS (otherwise they would be a second name for every
//! system call above), and a system call of another architecture kills the process (seccompiler's
//! architecture check).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// `type & SOCK_TYPE_MASK` is the socket type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: u64 = 0xf;

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        format!(
            "seccomp filters are not built for {}",
            std::env::consts::ARCH
        )
    })
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

fn af(family: libc::c_int) -> u64 {
    u64::from(family.unsigned_abs())
}

/// The rules under which `socket(domain, type, protocol)` is refused.
fn socket_rules(tcp: bool) -> Result<Vec<SeccompRule>, String> {
    let unix = af(libc::AF_UNIX);
    if !tcp {
        return Ok(vec![rule(vec![cond(0, SeccompCmpOp::Ne, unix)?])?]);
    }
    let (inet, inet6) = (af(libc::AF_INET), af(libc::AF_INET6));
    let mut rules = vec![rule(vec![
        cond(0, SeccompCmpOp::Ne, unix)?,
        cond(0, SeccompCmpOp::Ne, inet)?,
        cond(0, SeccompCmpOp::Ne, inet6)?,
    ])?];
    let stream = af(libc::SOCK_STREAM);
    for family in [inet, inet6] {
        for ty in (0..=SOCK_TYPE_MASK).filter(|&t| t != stream) {
            rules.push(rule(vec![
                cond(0, SeccompCmpOp::Eq, family)?,
                cond(1, SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK), ty)?,
            ])?);
        }
        // Protocol 0 (the default, TCP) or IPPROTO_TCP only.
        rules.push(rule(vec![
            cond(0, SeccompCmpOp::Eq, family)?,
            cond(2, SeccompCmpOp::Ne, 0)?,
            cond(2, SeccompCmpOp::Ne, af(libc::IPPROTO_TCP))?,
        ])?);
    }
    Ok(rules)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: libc::c_int,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno.unsigned_abs()),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// The filters to install, in order.
pub(crate) fn programs(tcp: bool) -> Result<Vec<BpfProgram>, String> {
    let sockets = socket_rules(tcp)?;
    let network: BTreeMap<i64, Vec<SeccompRule>> = [
        (libc::SYS_socket, sockets.clone()),
        (libc::SYS_socketpair, sockets),
    ]
    .into_iter()
    .collect();
    let denied: BTreeMap<i64, Vec<SeccompRule>> = [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_add_key,
        libc::SYS_keyctl,
        libc::SYS_request_key,
        libc::SYS_kexec_load,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new()))
    .collect();
    let mut out = vec![
        compile(network, libc::EAFNOSUPPORT)?,
        compile(denied, libc::EPERM)?,
    ];
    if cfg!(target_arch = "x86_64") {
        out.push(x32_filter());
    }
    Ok(out)
}

/// ENOSYS for every x32 system call number (`__X32_SYSCALL_BIT`), which the filters above,
/// keyed by the x86-64 numbers, would not match.
fn x32_filter() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let enosys = libc::ENOSYS.unsigned_abs();
    vec![
        // The system call number is at offset 0 of `struct seccomp_data`.
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | enosys,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ]
}

/// Installs the filters on the calling thread (`no_new_privs` is set first).
pub(crate) fn install(tcp: bool) -> Result<(), String> {
    for program in programs(tcp)? {
        seccompiler::apply_filter(&program).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_both_socket_policies() {
        for tcp in [false, true] {
            let programs = programs(tcp).unwrap();
            assert!(programs.len() >= 2);
            assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        }
    }
}
