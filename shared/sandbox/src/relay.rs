//! Tier 2's one way out: a listener on `127.0.0.1:PORT` inside the sandbox's own network
//! namespace, whose connections the worker relays to the egress proxy on the host.
//!
//! The sandbox has no network but its loopback (bubblewrap brings `lo` up in the namespace it
//! creates). Tools there are told `HTTPS_PROXY=http://CRED@127.0.0.1:PORT`, the same URL as at
//! tier 0, so the proxy's port is also the port inside. The listener is made from outside: the
//! worker forks a child that joins the sandbox's user and network namespaces (`setns`; the
//! worker's uid owns that user namespace, so no privilege is needed), binds and listens there,
//! sends the socket back over a socket pair and exits. The socket stays in the sandbox's
//! namespace; the worker accepts on it and copies each connection to the proxy.
//!
//! Why not a relay process inside the sandbox, fed by a bound unix socket: inside, it would be a
//! descendant of the tool's pid 1, so the sweep that ends every tool call would kill it (or have
//! to learn to spare one process that tool code could then impersonate), and the worker's binary
//! would have to be runnable inside. From outside there is nothing in the sandbox to kill,
//! spare or exec, and it works the same for the session shell and one-shot custom tools.
//!
//! Ordering: bubblewrap is started with `--info-fd` (it writes the sandbox's pid there once the
//! namespaces exist) and `--block-fd` (the sandbox waits on it before it runs the program). The
//! worker reads the pid, makes the listener, starts the relay, and only then releases the
//! sandbox, so the first command can already reach the proxy.
//!
//! What it must never do: leave the sandbox started without its relay (a failure is a spawn
//! error, and the sandbox dies with its bubblewrap), or keep a dead sandbox's namespace alive
//! (the listener holds it; the [`EgressRelay`] handle closes it when the tool process is gone).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::spawn::Isolation;

/// Where the tier-2 relay listens inside the sandbox and where it sends what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressBridge {
    /// The port on the sandbox's `127.0.0.1` (the proxy's own port, so the proxy URL is the
    /// same at every tier).
    pub port: u16,
    /// The egress proxy, on the host.
    pub upstream: SocketAddr,
    /// Per spawn: bubblewrap's `--info-fd` and `--block-fd` (see [`PendingBridge`]).
    pub(crate) spawn_fds: Option<[RawFd; 2]>,
}

impl EgressBridge {
    pub fn new(port: u16, upstream: SocketAddr) -> EgressBridge {
        EgressBridge {
            port,
            upstream,
            spawn_fds: None,
        }
    }
}

/// How long bubblewrap may take to set up the namespaces before the spawn fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections one sandbox may have open through its relay at a time. Each costs the worker four
/// descriptors (the relay's accepted socket, the relay's connection to the proxy, the proxy's
/// accepted socket and its connection upstream), and tool code decides how many it opens:
/// without a cap one session could exhaust the worker's descriptors and stall every other
/// session (the worker raises its soft limit to the hard one at start:
/// [`crate::raise_open_files_limit`]). The egress proxy caps each session's connections at
/// tiers 0 and 1, where tools connect to it directly, with the same number (exported as
/// `MAX_EGRESS_CONNECTIONS`). 256 is far above what a package manager opens at once (npm's `maxsockets` default
/// is 15 per origin).
pub const MAX_CONNECTIONS: usize = 256;

/// `NS_GET_USERNS` (`_IO(0xb7, 0x1)`, linux/nsfs.h): the user namespace owning a namespace.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// A bridge whose bubblewrap is about to start: the pipes bubblewrap writes the sandbox's pid
/// to and waits on.
pub(crate) struct PendingBridge {
    bridge: EgressBridge,
    /// The spawn's isolation: the sandbox with the pipes named in its bridge.
    isolation: Isolation,
    info_read: OwnedFd,
    /// Inherited by bubblewrap (`--info-fd`).
    info_write: OwnedFd,
    /// Inherited by bubblewrap (`--block-fd`).
    block_read: OwnedFd,
    block_write: OwnedFd,
}

/// The relay of one sandbox. Dropping it stops accepting, ends the relayed connections and
/// closes the listener (which would otherwise keep the sandbox's network namespace alive).
#[derive(Debug)]
pub struct EgressRelay {
    /// The sandbox's pid 1, in the worker's pid namespace.
    pub sandbox_pid: i32,
    task: JoinHandle<()>,
}

impl Drop for EgressRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

impl PendingBridge {
    /// The pipes for one spawn under `isolation`, when it is a tier-2 sandbox with a bridge.
    pub(crate) fn prepare(isolation: &Isolation) -> io::Result<Option<PendingBridge>> {
        let Isolation::Bwrap(sandbox) = isolation else {
            return Ok(None);
        };
        let Some(bridge) = &sandbox.options.egress else {
            return Ok(None);
        };
        let (info_read, info_write) = cloexec_pipe()?;
        let (block_read, block_write) = cloexec_pipe()?;
        let mut sandbox = sandbox.clone();
        sandbox.options.egress = Some(EgressBridge {
            spawn_fds: Some([info_write.as_raw_fd(), block_read.as_raw_fd()]),
            ..bridge.clone()
        });
        Ok(Some(PendingBridge {
            bridge: bridge.clone(),
            isolation: Isolation::Bwrap(sandbox),
            info_read,
            info_write,
            block_read,
            block_write,
        }))
    }

    /// The isolation to build the command with (it names the pipes to bubblewrap).
    pub(crate) fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Lets bubblewrap, and nothing else, inherit its two pipe ends.
    pub(crate) fn pass_fds(&self, cmd: &mut tokio::process::Command) {
        let fds = [self.info_write.as_raw_fd(), self.block_read.as_raw_fd()];
        // SAFETY: runs in the child between fork and exec; `fcntl` only, on two integers.
        unsafe {
            cmd.pre_exec(move || {
                for fd in fds {
                    inherit(fd)?;
                }
                Ok(())
            });
        }
    }

    /// After bubblewrap was spawned: waits for the sandbox's pid, listens inside it, starts the
    /// relay and lets the sandbox run its program. The waiting (as long as bubblewrap takes to
    /// set up the namespaces: milliseconds, bounded by [`SETUP_TIMEOUT`]) and the fork into the
    /// namespaces run on tokio's blocking pool: a runtime thread (a `current_thread` runtime
    /// has only one) goes on with other sessions' work meanwhile.
    pub(crate) async fn start(self) -> io::Result<EgressRelay> {
        self.start_within(SETUP_TIMEOUT).await
    }

    async fn start_within(self, timeout: Duration) -> io::Result<EgressRelay> {
        let PendingBridge {
            bridge,
            isolation: _,
            info_read,
            info_write,
            block_read,
            block_write,
        } = self;
        // Our copies of bubblewrap's ends: the info pipe must reach EOF if bubblewrap dies.
        drop(info_write);
        drop(block_read);
        let port = bridge.port;
        let (pid, listener) = tokio::task::spawn_blocking(move || {
            let pid = read_child_pid(&info_read, timeout)?;
            Ok::<_, io::Error>((pid, listen_in_netns(pid, port)?))
        })
        .await
        .map_err(|e| io::Error::other(format!("the relay's set-up did not finish: {e}")))??;
        let std_listener = std::net::TcpListener::from(listener);
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let task = tokio::spawn(relay(listener, bridge.upstream, MAX_CONNECTIONS, pid));
        // Release the sandbox: one byte on the block pipe.
        rustix::io::write(&block_write, b"1")
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), "releasing the sandbox"))?;
        Ok(EgressRelay {
            sandbox_pid: pid,
            task,
        })
    }
}

/// In the forked child before `exec`: lets `fd` survive the `exec` (it is close-on-exec in the
/// worker, so no other child inherits it). Only `fcntl`: async-signal-safe.
fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fcntl(F_SETFD)` on a descriptor number; no memory is passed to the kernel.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads bubblewrap's `--info-fd` JSON to its end and returns its `"child-pid"`. To the end:
/// bubblewrap writes it in pieces and dies of `EPIPE` if the reader goes away half-way, leaving
/// its sandbox waiting forever.
fn read_child_pid(info: &OwnedFd, timeout: Duration) -> io::Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("bubblewrap did not report the sandbox within {timeout:?}"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: info.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid `pollfd` for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        let got = rustix::io::read(info, &mut buf).map_err(io::Error::from)?;
        if got == 0 {
            return child_pid(&text).ok_or_else(|| {
                io::Error::other("bubblewrap exited before it reported the sandbox")
            });
        }
        text.extend_from_slice(&buf[..got]);
    }
}

/// The `"child-pid": N` of bubblewrap's info JSON, once it has arrived whole.
fn child_pid(text: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(text).ok()?;
    let rest = &text[text.find("\"child-pid\"")? + "\"child-pid\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit())?];
    digits.parse().ok().filter(|&p| p > 0)
}

/// The steps of the forked child, for its error report.
const STEPS: [&str; 6] = [
    "joining the sandbox's user namespace",
    "joining the sandbox's network namespace",
    "creating the socket",
    "binding 127.0.0.1 in the sandbox",
    "listening",
    "setting IP_FREEBIND",
];

/// A listening TCP socket on `127.0.0.1:port` in the network namespace of process `pid`.
pub(crate) fn listen_in_netns(pid: i32, port: u16) -> io::Result<OwnedFd> {
    let net = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| io::Error::new(e.kind(), format!("opening the sandbox's namespace: {e}")))?;
    // SAFETY: an ioctl without an argument on a namespace descriptor we own.
    let user = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS) };
    if user == -1 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("finding the sandbox's user namespace: {e}"),
        ));
    }
    // SAFETY: the ioctl returned a new descriptor, which nothing else owns.
    let user = unsafe { OwnedFd::from_raw_fd(user) };
    let mut pair = [0 as RawFd; 2];
    // SAFETY: `socketpair` writes two descriptors into `pair`, which we then own.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } == -1
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from `socketpair`, owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let fds = ChildFds {
        user: user.as_raw_fd(),
        net: net.as_raw_fd(),
        report: theirs.as_raw_fd(),
    };
    // SAFETY: the child runs `child_listen`, which makes plain system calls on integers and
    // stack buffers prepared before the fork (no allocation, no locks: the worker is
    // multi-threaded) and ends in `_exit`, never returning into Rust code.
    let child = unsafe { libc::fork() };
    if child == -1 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: see above; `_exit` does not run destructors or atexit handlers.
        unsafe {
            let code = child_listen(&fds, &addr);
            libc::_exit(code)
        }
    }
    drop(theirs);
    let received = receive_listener(&ours);
    let mut status = 0;
    // SAFETY: waits for the child forked above, which exits right after its report.
    while unsafe { libc::waitpid(child, &mut status, 0) } == -1 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    received
}

struct ChildFds {
    user: RawFd,
    net: RawFd,
    report: RawFd,
}

/// In the forked child: join, listen, send the socket (or the failed step and errno) back.
/// Returns the exit code.
///
/// # Safety
/// Only in a freshly forked child: it calls nothing but async-signal-safe system calls.
unsafe fn child_listen(fds: &ChildFds, addr: &libc::sockaddr_in) -> libc::c_int {
    let fail = |step: u8| -> libc::c_int {
        // SAFETY: errno location of this (only) thread.
        let errno = unsafe { *libc::__errno_location() };
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: a stack buffer valid for the call.
        unsafe { libc::send(fds.report, msg.as_ptr().cast(), msg.len(), 0) };
        1
    };
    // SAFETY (all blocks below): plain system calls on descriptors and stack values.
    if unsafe { libc::setns(fds.user, libc::CLONE_NEWUSER) } != 0 {
        return fail(0);
    }
    if unsafe { libc::setns(fds.net, libc::CLONE_NEWNET) } != 0 {
        return fail(1);
    }
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if sock == -1 {
        return fail(2);
    }
    // The info arrives before bubblewrap has brought `lo` up: bind the address regardless (the
    // sandbox's program, the only client, starts after that).
    let one: libc::c_int = 1;
    if unsafe {
        libc::setsockopt(
            sock,
            libc::IPPROTO_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return fail(5);
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if unsafe { libc::bind(sock, (addr as *const libc::sockaddr_in).cast(), len) } != 0 {
        return fail(3);
    }
    if unsafe { libc::listen(sock, 128) } != 0 {
        return fail(4);
    }
    // One byte of payload, the socket as SCM_RIGHTS.
    let mut byte = [b'L'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4]; // room for one cmsghdr with an int, 8-byte aligned
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return 1;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), sock);
        if libc::sendmsg(fds.report, &msg, 0) == -1 {
            return 1;
        }
    }
    0
}

/// The parent's side: the listener, or the child's failed step as an error.
fn receive_listener(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut payload = [0u8; 5];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: zeroed msghdr filled with pointers to buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: as above; MSG_CMSG_CLOEXEC so the received socket is not inherited.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                return Ok(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 5 {
        let step = STEPS.get(usize::from(payload[0])).copied().unwrap_or("?");
        let errno = i32::from_ne_bytes([payload[1], payload[2], payload[3], payload[4]]);
        let e = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
    }
    Err(io::Error::other(
        "the helper process ended without a listener or a reason",
    ))
}

/// Accepts in the sandbox, connects to the proxy, copies both ways, at most `cap` connections
/// at a time; one over that is closed at once (see [`MAX_CONNECTIONS`]). Ends (with every
/// relayed connection) when the task is aborted.
async fn relay(listener: TcpListener, upstream: SocketAddr, cap: usize, sandbox_pid: i32) {
    let slots = Arc::new(Semaphore::new(cap));
    let mut refusals = Refusals::default();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        if let Some(refused) = refusals.accepted() {
                            tracing::info!(sandbox_pid, refused, limit = cap,
                                "egress relay: accepting connections again");
                        }
                        conns.spawn(async move {
                            pipe(client, upstream).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        drop(client);
                        if refusals.refused() {
                            tracing::warn!(sandbox_pid, limit = cap,
                                "egress relay: the sandbox has {cap} connections open through \
                                 the relay; further ones are closed until some end");
                        }
                    }
                },
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Connections refused over the cap since the last one accepted: a burst is logged when it
/// starts and counted when it ends, not once per connection (tool code can retry in a loop).
#[derive(Debug, Default)]
struct Refusals {
    in_burst: u64,
}

impl Refusals {
    /// One refused; true when it starts a burst (log it).
    fn refused(&mut self) -> bool {
        self.in_burst += 1;
        self.in_burst == 1
    }

    /// One accepted; the number refused in the burst it ends, if it ends one.
    fn accepted(&mut self) -> Option<u64> {
        let refused = std::mem::take(&mut self.in_burst);
        (refused > 0).then_some(refused)
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    // A refused connection closes the client's: it sees the proxy as down, which it is.
    let Ok(mut proxy) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = proxy.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut proxy).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_pid_is_read_from_bubblewraps_info_json() {
        let info = b"{\n    \"child-pid\": 21026,\n    \"cgroup-namespace\": 4026532182\n}\n";
        assert_eq!(child_pid(info), Some(21026));
        // Not whole yet: the digits may continue in the next read.
        assert_eq!(child_pid(b"{\n    \"child-pid\": 210"), None);
        assert_eq!(child_pid(b"{\"child-pid\":0}"), None);
        assert_eq!(child_pid(b"{\"other\": 5}"), None);
    }

    /// The tier-2 sandbox with `bridge`, or `None` after printing why it cannot run here (a
    /// failure instead under `REQUIRE_ISOLATION=1`).
    fn tier2(bridge: EgressBridge) -> Option<Isolation> {
        let probe = crate::HostProbe::run();
        match probe.select(crate::IsolationMode::Tier(crate::Tier::Bwrap), true) {
            Ok(_) => probe
                .bwrap_sandbox(crate::Tier2Options {
                    egress: Some(bridge),
                    ..crate::Tier2Options::default()
                })
                .map(Isolation::Bwrap),
            Err(e) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    #[tokio::test]
    async fn the_sandbox_reaches_the_upstream_through_its_own_loopback_and_nothing_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The "proxy": answers each connection with what it read, upper-cased.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.to_ascii_uppercase()).await.unwrap();
            buf
        });
        // A host port nobody should reach from inside.
        let host_only = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = host_only.local_addr().unwrap().port();
        let Some(isolation) = tier2(EgressBridge::new(addr.port(), addr)) else {
            return;
        };
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf ping. >&3 && head -c 5 <&3; echo; \
             (echo x > /dev/tcp/127.0.0.1/{host_port}) 2>&1; (echo x > /dev/tcp/10.0.0.1/80) 2>&1; exit 0",
            port = addr.port()
        );
        let spec = crate::OneShotSpec {
            program: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: crate::EnvPolicy::default().build(std::env::vars_os()),
            rlimits: crate::Rlimits::default(),
            isolation,
            binds: crate::Binds::default(),
        };
        let mut p = crate::spawn_oneshot(&spec).await.unwrap();
        assert!(p.egress_relay.is_some());
        drop(p.stdin);
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        assert!(p.child.wait().await.unwrap().success());
        assert_eq!(served.await.unwrap(), *b"ping.");
        let (first, rest) = out.split_once('\n').unwrap();
        assert_eq!(first, "PING.", "{out}");
        // Inside, 127.0.0.1 is the sandbox's own loopback: the host's port is not there.
        assert!(
            rest.contains(&format!(
                "/dev/tcp/127.0.0.1/{host_port}: Connection refused"
            )),
            "{out}"
        );
        assert!(
            rest.contains("/dev/tcp/10.0.0.1/80: Network is unreachable"),
            "{out}"
        );
        host_only.set_nonblocking(true).unwrap();
        assert!(
            host_only.accept().is_err(),
            "the host-only port was reached"
        );
    }

    /// While the relay waits for bubblewrap to report the sandbox, the runtime's only thread
    /// stays free: here "bubblewrap" is a task on that same thread, which can only answer if
    /// the set-up waits elsewhere. (Blocking in place, the set-up would time out instead.)
    #[test]
    fn setting_up_a_relay_leaves_a_current_thread_runtime_free() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (info_read, info_write) = cloexec_pipe().unwrap();
            let (block_read, block_write) = cloexec_pipe().unwrap();
            let bubblewrap_end = info_write.try_clone().unwrap();
            let upstream = "127.0.0.1:9".parse().unwrap();
            let pending = PendingBridge {
                bridge: EgressBridge::new(9, upstream),
                isolation: Isolation::Tier0,
                info_read,
                info_write,
                block_read,
                block_write,
            };
            let setup = tokio::spawn(pending.start_within(Duration::from_secs(30)));
            let bubblewrap = tokio::spawn(async move {
                // A timer on the same thread must fire first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                // A pid with no namespace to join: the set-up fails one step later.
                let info = format!("{{\"child-pid\": {}}}", i32::MAX);
                rustix::io::write(&bubblewrap_end, info.as_bytes()).unwrap();
            });
            bubblewrap.await.unwrap();
            let err = setup.await.unwrap().unwrap_err().to_string();
            assert!(err.contains("opening the sandbox's namespace"), "{err}");
        });
    }

    /// An upstream that echoes every connection back.
    async fn echo_upstream() -> SocketAddr {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = upstream.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A connection through the relay, checked to carry data both ways.
    async fn relayed(relay: SocketAddr, n: usize) -> std::io::Result<TcpStream> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = TcpStream::connect(relay).await?;
        let msg = format!("conn{n:04}");
        c.write_all(msg.as_bytes()).await?;
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).await?;
        assert_eq!(back, msg.as_bytes());
        Ok(c)
    }

    #[tokio::test]
    async fn a_relay_carries_at_most_its_cap_of_connections_and_closes_the_rest_at_once() {
        use tokio::io::AsyncReadExt;
        let upstream = echo_upstream().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        const CAP: usize = 4;
        let task = tokio::spawn(relay(listener, upstream, CAP, 1));
        let mut open = Vec::new();
        for n in 0..CAP {
            open.push(relayed(addr, n).await.unwrap());
        }
        // One over the cap: accepted by the kernel, closed by the relay without a byte (were it
        // relayed, the byte sent would come back).
        let closed_at_once = || async {
            use tokio::io::AsyncWriteExt;
            let mut extra = TcpStream::connect(addr).await.unwrap();
            let _ = extra.write_all(b"x").await;
            let mut buf = [0u8; 1];
            match extra.read(&mut buf).await {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("the connection over the cap was not closed: {other:?}"),
            }
        };
        closed_at_once().await;
        // The ones within the cap still work.
        for (n, c) in open.iter_mut().enumerate() {
            use tokio::io::AsyncWriteExt;
            c.write_all(b"again").await.unwrap();
            let mut back = [0u8; 5];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"again", "connection {n}");
        }
        // Two close; new ones get their places once the relay has seen those end.
        open.truncate(CAP - 2);
        let mut accepted = 0;
        for attempt in 0..2000 {
            match relayed(addr, CAP + attempt).await {
                Ok(c) => {
                    open.push(c);
                    accepted += 1;
                    if accepted == 2 {
                        break;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        assert_eq!(
            accepted, 2,
            "no new connection was accepted after two closed"
        );
        // And the cap holds again.
        closed_at_once().await;
        task.abort();
    }

    #[test]
    fn refusals_are_reported_once_per_burst() {
        let mut r = Refusals::default();
        assert_eq!(r.accepted(), None);
        assert!(r.refused(), "the first refusal starts a burst");
        assert!(!r.refused());
        assert!(!r.refused());
        assert_eq!(r.accepted(), Some(3), "the burst ends with its count");
        assert_eq!(r.accepted(), None);
        assert!(r.refused(), "a new burst");
    }

    #[test]
    fn a_missing_process_is_a_clear_error() {
        let err = listen_in_netns(i32::MAX, 1).unwrap_err().to_string();
        assert!(err.contains("opening the sandbox's namespace"), "{err}");
    }
}
