//! `grep` where seccomp answers `EPERM` to `openat2` (Docker's default profile before it knew
//! the call): the walk opens directories one component at a time instead, so files in
//! subdirectories are still found and a symlinked directory is still not followed.
//!
//! A seccomp filter cannot be removed, so the test re-runs this test binary as a child that
//! installs it first.

use std::process::Command;

use serde_json::json;

use crate::common::*;

const CHILD: &str = "HANDS_OPENAT2_FILTERED_CHILD";

#[test]
fn grep_searches_subdirectories_when_openat2_is_filtered() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "openat2_filtered::filtered_child",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The child must really have run: a filtered-out test would "pass" with 0 run.
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}

/// Makes every later `openat2` of this process (all threads) fail with `EPERM`.
fn filter_openat2() {
    // seccomp_data.nr is at offset 0. The architecture is not checked: this filter only has
    // to hit this process's own native calls.
    let nr = u32::try_from(libc::SYS_openat2).unwrap();
    let mut program = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl/seccomp calls; `prog` points at `program`, alive for the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &prog as *const libc::sock_fprog,
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
#[ignore = "run by grep_searches_subdirectories_when_openat2_is_filtered, in a process of its own"]
fn filtered_child() {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run through grep_searches_subdirectories_when_openat2_is_filtered"
    );
    let fx = Fixture::new();
    fx.write("a.txt", "needle a\n");
    fx.write("d/b.txt", "needle b\n");
    fx.write("d/e/f/c.txt", "needle c\n");
    std::fs::write(fx.outside.join("d.txt"), "needle outside\n").unwrap();
    std::os::unix::fs::symlink(&fx.outside, fx.path("d/e/out")).unwrap();
    std::os::unix::fs::symlink(&fx.outside, fx.path("top")).unwrap();

    filter_openat2();
    let root = std::fs::File::open(&fx.ws).unwrap();
    let refused = rustix::fs::openat2(
        &root,
        "d",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH,
    );
    assert_eq!(refused.unwrap_err(), rustix::io::Errno::PERM);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let out = fx.call("grep", json!({"pattern": "needle"})).await;
        let ws = fx.ws.display();
        assert_eq!(
            text(&out),
            format!("{ws}/a.txt:1:needle a\n{ws}/d/b.txt:1:needle b\n{ws}/d/e/f/c.txt:1:needle c")
        );
        let out = fx.call("grep", json!({"pattern": SECRET})).await;
        assert_eq!(text(&out), "no matches");
        // A search rooted in a subdirectory goes through the same opener.
        let out = fx
            .call("grep", json!({"pattern": "needle", "path": "d/e"}))
            .await;
        assert_eq!(text(&out), format!("{ws}/d/e/f/c.txt:1:needle c"));
    });
}
