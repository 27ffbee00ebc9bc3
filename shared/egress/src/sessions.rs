//! Per-session proxy credentials: who is asking, so one session can never use another's grants.
//!
//! Each session gets `http://USER:TOKEN@127.0.0.1:PORT` in its tool environment; the proxy
//! accepts a request only with a `Proxy-Authorization: Basic` pair that matches a live session.
//! The user name is random (a session id may hold characters a URL cannot), the token is 256
//! random bits compared in constant time, and both are forgotten when the session ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// The live sessions the proxy serves.
#[derive(Default)]
pub struct SessionRegistry {
    inner: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    /// By proxy user name.
    by_user: HashMap<String, Arc<SessionEntry>>,
    /// Session id to proxy user name.
    users: HashMap<String, String>,
}

/// One registered session, as the proxy sees it.
pub struct SessionEntry {
    pub session_id: String,
    token: SecretString,
    /// The tool call running now, for the audit log.
    tool_call: Mutex<Option<String>>,
    /// The connections that authenticated with this credential: cut when it is revoked, so an
    /// open tunnel or intercepted connection cannot outlive the session (an intercepted one
    /// would otherwise go on injecting the secret for it).
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
    revoked: AtomicBool,
    /// Set by a refused connection, cleared by the next one admitted: a burst is logged once.
    over_cap: AtomicBool,
}

/// Whether [`SessionEntry::admit`] held a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused; `first` for the first refusal since a connection was last admitted.
    Refused {
        first: bool,
    },
}

/// What the worker hands to one session's tool environment.
pub struct SessionGrant {
    pub session_id: String,
    user: String,
    token: SecretString,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), buf.as_mut_slice());
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl SessionRegistry {
    pub fn new() -> SessionRegistry {
        SessionRegistry::default()
    }

    /// Registers a session with a fresh credential, replacing any earlier one of that session.
    pub fn register(&self, session_id: &str) -> SessionGrant {
        let user = format!("s{}", random_hex(8));
        let token = random_hex(32);
        let entry = Arc::new(SessionEntry {
            session_id: session_id.to_string(),
            token: SecretString::from(token.clone()),
            tool_call: Mutex::new(None),
            connections: Mutex::new(Vec::new()),
            revoked: AtomicBool::new(false),
            over_cap: AtomicBool::new(false),
        });
        let mut maps = self.write();
        if let Some(old) = maps.users.insert(session_id.to_string(), user.clone())
            && let Some(entry) = maps.by_user.remove(&old)
        {
            entry.revoke();
        }
        maps.by_user.insert(user.clone(), entry);
        SessionGrant {
            session_id: session_id.to_string(),
            user,
            token: SecretString::from(token),
        }
    }

    /// Forgets a session: its credential stops working at once.
    pub fn remove(&self, session_id: &str) {
        let mut maps = self.write();
        if let Some(user) = maps.users.remove(session_id)
            && let Some(entry) = maps.by_user.remove(&user)
        {
            entry.revoke();
        }
    }

    /// Forgets one credential (the grant with proxy user name `user`). A newer grant of the same
    /// session stays: a guard dropped late must not revoke its successor's credential.
    pub fn remove_grant(&self, user: &str) {
        let mut maps = self.write();
        if let Some(entry) = maps.by_user.remove(user) {
            if maps.users.get(&entry.session_id).map(String::as_str) == Some(user) {
                maps.users.remove(&entry.session_id);
            }
            entry.revoke();
        }
    }

    /// As [`SessionRegistry::set_tool_call`], for one credential only.
    pub fn set_grant_tool_call(&self, user: &str, tool_call: Option<&str>) {
        let maps = self.read();
        if let Some(entry) = maps.by_user.get(user)
            && let Ok(mut slot) = entry.tool_call.lock()
        {
            *slot = tool_call.map(str::to_string);
        }
    }

    /// Names the tool call a session is running, for the audit log (`None` between calls).
    pub fn set_tool_call(&self, session_id: &str, tool_call: Option<&str>) {
        let maps = self.read();
        if let Some(entry) = maps.users.get(session_id).and_then(|u| maps.by_user.get(u))
            && let Ok(mut slot) = entry.tool_call.lock()
        {
            *slot = tool_call.map(str::to_string);
        }
    }

    pub fn len(&self) -> usize {
        self.read().by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session a `Proxy-Authorization` value belongs to, if any.
    pub fn authenticate(&self, header: Option<&http::HeaderValue>) -> Option<Arc<SessionEntry>> {
        let value = header?.to_str().ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, token) = decoded.split_once(':')?;
        let entry = self.read().by_user.get(user).cloned()?;
        let expected = entry.token.expose_secret().as_bytes();
        bool::from(expected.ct_eq(token.as_bytes())).then_some(entry)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SessionEntry {
    pub fn tool_call(&self) -> Option<String> {
        self.tool_call.lock().ok().and_then(|s| s.clone())
    }

    /// Ties a connection's task to this credential: it is aborted (its sockets closed) when the
    /// credential is revoked, at once if that already happened.
    pub fn hold(&self, task: tokio::task::AbortHandle) {
        let _ = self.admit(task, usize::MAX);
    }

    /// Like [`Self::hold`] for a client connection, which is refused (not held) when the session
    /// already holds `cap` live connections and tunnels: tool code decides how many it opens,
    /// and each costs the worker descriptors that every other session needs too (tiers 0 and 1
    /// connect straight to the proxy; tier 2's relay has the same cap per sandbox). A keep-alive
    /// connection authenticates on every request and is held once, so it is always admitted
    /// again.
    #[must_use]
    pub fn admit(&self, task: tokio::task::AbortHandle, cap: usize) -> Admission {
        let mut held = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.retain(|t| !t.is_finished());
        if !held.iter().any(|t| t.id() == task.id()) {
            if held.len() >= cap {
                let first = !self.over_cap.swap(true, Ordering::Relaxed);
                return Admission::Refused { first };
            }
            held.push(task);
            self.over_cap.store(false, Ordering::Relaxed);
        }
        drop(held);
        // Checked after the push: a revocation in between has either drained the list (and
        // aborted this task) or set the flag first.
        if self.revoked.load(Ordering::SeqCst) {
            self.abort_all();
        }
        Admission::Admitted
    }

    /// Whether the credential has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        self.abort_all();
    }

    fn abort_all(&self) {
        let held = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in held {
            task.abort();
        }
    }
}

impl SessionGrant {
    /// The proxy user name of this session (random, not the session id).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The proxy URL with this session's credential, for `HTTP_PROXY` and friends.
    pub fn proxy_url(&self, proxy: SocketAddr) -> SecretString {
        SecretString::from(format!(
            "http://{}:{}@{proxy}",
            self.user,
            self.token.expose_secret()
        ))
    }

    /// The `Proxy-Authorization` value for clients that take the header itself.
    pub fn proxy_authorization(&self) -> SecretString {
        let pair = format!("{}:{}", self.user, self.token.expose_secret());
        SecretString::from(format!("Basic {}", STANDARD.encode(pair)))
    }
}

impl std::fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGrant")
            .field("session_id", &self.session_id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(s: &SecretString) -> http::HeaderValue {
        http::HeaderValue::from_str(s.expose_secret()).unwrap()
    }

    #[test]
    fn own_credential_only() {
        let reg = SessionRegistry::new();
        let a = reg.register("sesn_a");
        let b = reg.register("sesn_b");
        assert_eq!(
            reg.authenticate(Some(&header(&a.proxy_authorization())))
                .unwrap()
                .session_id,
            "sesn_a"
        );
        // a's name with b's token
        let b_token = b.token.expose_secret().to_string();
        let forged = format!("Basic {}", STANDARD.encode(format!("{}:{b_token}", a.user)));
        assert!(
            reg.authenticate(Some(&http::HeaderValue::from_str(&forged).unwrap()))
                .is_none()
        );
        assert!(reg.authenticate(None).is_none());
        reg.remove("sesn_b");
        assert!(
            reg.authenticate(Some(&header(&b.proxy_authorization())))
                .is_none(),
            "removed"
        );
        // a session id that is no URL user name still gets a working credential
        let odd = reg.register("a:b/c");
        assert_eq!(
            reg.authenticate(Some(&header(&odd.proxy_authorization())))
                .unwrap()
                .session_id,
            "a:b/c"
        );
        // registering again replaces the old credential
        let a2 = reg.register("sesn_a");
        assert!(
            reg.authenticate(Some(&header(&a.proxy_authorization())))
                .is_none()
        );
        assert!(
            reg.authenticate(Some(&header(&a2.proxy_authorization())))
                .is_some()
        );
        assert!(!format!("{a:?}").contains(a.token.expose_secret()));
    }

    #[test]
    fn a_stale_grant_removed_late_spares_the_newer_one() {
        let reg = SessionRegistry::new();
        let old = reg.register("sesn_a");
        let new = reg.register("sesn_a");
        reg.remove_grant(old.user());
        let entry = reg
            .authenticate(Some(&header(&new.proxy_authorization())))
            .expect("the newer credential still works");
        reg.set_grant_tool_call(old.user(), Some("toolu_stale"));
        assert_eq!(entry.tool_call(), None, "the stale grant names nothing");
        reg.set_grant_tool_call(new.user(), Some("toolu_new"));
        assert_eq!(entry.tool_call().as_deref(), Some("toolu_new"));
        reg.remove_grant(new.user());
        assert!(reg.is_empty());
        assert!(
            reg.authenticate(Some(&header(&new.proxy_authorization())))
                .is_none()
        );
    }

    #[tokio::test]
    async fn revoking_a_credential_aborts_the_connections_it_holds() {
        let reg = SessionRegistry::new();
        let grant = reg.register("sesn_a");
        let entry = reg
            .authenticate(Some(&header(&grant.proxy_authorization())))
            .unwrap();
        let open = tokio::spawn(std::future::pending::<()>());
        entry.hold(open.abort_handle());
        entry.hold(open.abort_handle());
        assert_eq!(entry.connections.lock().unwrap().len(), 1, "held once");
        reg.remove_grant(grant.user());
        assert!(entry.is_revoked());
        assert!(open.await.unwrap_err().is_cancelled());
        // A connection that authenticated just before the revocation and is held just after.
        let late = tokio::spawn(std::future::pending::<()>());
        entry.hold(late.abort_handle());
        assert!(late.await.unwrap_err().is_cancelled());
        // Replacing a session's credential revokes the old one too.
        let first = reg.register("sesn_b");
        let old = reg
            .authenticate(Some(&header(&first.proxy_authorization())))
            .unwrap();
        let _second = reg.register("sesn_b");
        assert!(old.is_revoked());
    }

    #[tokio::test]
    async fn a_session_is_admitted_at_most_cap_connections_at_once() {
        let reg = SessionRegistry::new();
        let grant = reg.register("sesn_a");
        let entry = reg
            .authenticate(Some(&header(&grant.proxy_authorization())))
            .unwrap();
        let open: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        for task in &open {
            assert_eq!(entry.admit(task.abort_handle(), 3), Admission::Admitted);
        }
        // Held ones come back (keep-alive), a fourth does not; a burst is reported once.
        assert_eq!(entry.admit(open[1].abort_handle(), 3), Admission::Admitted);
        let fourth = tokio::spawn(std::future::pending::<()>());
        let fifth = tokio::spawn(std::future::pending::<()>());
        assert_eq!(
            entry.admit(fourth.abort_handle(), 3),
            Admission::Refused { first: true }
        );
        assert_eq!(
            entry.admit(fifth.abort_handle(), 3),
            Admission::Refused { first: false }
        );
        assert_eq!(entry.connections.lock().unwrap().len(), 3, "not held");
        // One ends: the next is admitted, and the next refusal starts a new burst.
        open[0].abort();
        assert!(open.into_iter().next().unwrap().await.is_err());
        assert_eq!(entry.admit(fourth.abort_handle(), 3), Admission::Admitted);
        assert_eq!(
            entry.admit(fifth.abort_handle(), 3),
            Admission::Refused { first: true }
        );
        // Another session's count is its own.
        let other = reg.register("sesn_b");
        let other = reg
            .authenticate(Some(&header(&other.proxy_authorization())))
            .unwrap();
        let theirs = tokio::spawn(std::future::pending::<()>());
        assert_eq!(other.admit(theirs.abort_handle(), 3), Admission::Admitted);
    }
}
