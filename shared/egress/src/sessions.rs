//! Per-session proxy credentials: who is asking, so one session can never use another's grants.
//!
//! Each session gets `http://USER:TOKEN@127.0.0.1:PORT` in its tool environment; the proxy
//! accepts a request only with a `Proxy-Authorization: Basic` pair that matches a live session.
//! The user name is random (a session id may hold characters a URL cannot), the token is 256
//! random bits compared in constant time, and both are forgotten when the session ends.

use std::collections::HashMap;
use std::net::SocketAddr;
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
        });
        let mut maps = self.write();
        if let Some(old) = maps.users.insert(session_id.to_string(), user.clone()) {
            maps.by_user.remove(&old);
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
        if let Some(user) = maps.users.remove(session_id) {
            maps.by_user.remove(&user);
        }
    }

    /// Forgets one credential (the grant with proxy user name `user`). A newer grant of the same
    /// session stays: a guard dropped late must not revoke its successor's credential.
    pub fn remove_grant(&self, user: &str) {
        let mut maps = self.write();
        if let Some(entry) = maps.by_user.remove(user)
            && maps.users.get(&entry.session_id).map(String::as_str) == Some(user)
        {
            maps.users.remove(&entry.session_id);
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
}
