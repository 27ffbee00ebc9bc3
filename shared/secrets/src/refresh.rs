//! Re-reading a secret on an interval, so a rotated file or AWS secret takes effect without a
//! restart.

use std::time::Duration;

use crate::error::SecretError;
use crate::resolver::Resolver;
use crate::source::SecretSource;
use crate::value::SecretValue;

/// Re-reads one source every interval and reports only changes. A value given directly never
/// changes, so [`Refresher::changed`] then never returns.
pub struct Refresher {
    source: SecretSource,
    resolver: Resolver,
    every: Option<Duration>,
    last: Option<SecretValue>,
    last_error: Option<String>,
}

impl Refresher {
    /// `current` is the value already in use (so an unchanged first re-read is not reported).
    /// The interval is the source's [`SecretSource::refresh_interval`].
    pub fn new(source: SecretSource, resolver: Resolver, current: Option<SecretValue>) -> Self {
        Refresher {
            every: source.refresh_interval(),
            source,
            resolver,
            last: current,
            last_error: None,
        }
    }

    /// Another interval (a source given directly still never changes).
    pub fn every(mut self, interval: Duration) -> Self {
        if self.every.is_some() {
            self.every = Some(interval);
        }
        self
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Waits for the next change: `Ok` with a value different from the last one reported, or
    /// `Err` when a read fails (each distinct failure once, so a missing file is not logged
    /// every interval). After a failure the next successful read is always reported, even if
    /// it gives the value from before: the caller may have acted on the failure.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn changed(&mut self) -> Result<SecretValue, SecretError> {
        let Some(every) = self.every else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(every).await;
            match self.resolver.resolve(&self.source).await {
                Ok(value) => {
                    self.last_error = None;
                    if self.last.as_ref().is_some_and(|last| last.same_as(&value)) {
                        continue;
                    }
                    self.last = Some(value.clone());
                    return Ok(value);
                }
                Err(e) => {
                    self.last = None;
                    let text = e.to_string();
                    if self.last_error.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    self.last_error = Some(text);
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SecretVars;

    /// A hang guard, not a measurement.
    const GUARD: Duration = Duration::from_secs(20);

    async fn next(r: &mut Refresher) -> Result<SecretValue, SecretError> {
        tokio::time::timeout(GUARD, r.changed())
            .await
            .expect("no change reported")
    }

    #[tokio::test]
    async fn a_rotated_file_is_reported_once_and_a_failure_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "one\n").unwrap();
        let vars = SecretVars {
            file: Some(path.clone()),
            ..SecretVars::default()
        };
        let source = SecretSource::select("K", vars).unwrap().unwrap();
        let resolver = Resolver::new();
        let first = resolver.resolve(&source).await.unwrap();
        let mut r = Refresher::new(source, resolver, Some(first)).every(Duration::from_millis(5));

        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(next(&mut r).await.unwrap().expose_secret(), "two");

        std::fs::write(&path, "\n").unwrap();
        assert!(next(&mut r).await.unwrap_err().is_empty_value());
        // The same failure is not reported again; the value coming back is, though it is the
        // one from before the failure.
        std::fs::write(&path, "two").unwrap();
        assert_eq!(next(&mut r).await.unwrap().expose_secret(), "two");

        std::fs::remove_file(&path).unwrap();
        let err = next(&mut r).await.unwrap_err().to_string();
        assert!(err.contains("No such file"), "{err}");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(next(&mut r).await.unwrap().expose_secret(), "three");
    }

    #[test]
    fn a_value_given_directly_never_changes() {
        let vars = SecretVars {
            value: Some(SecretValue::new("v")),
            ..SecretVars::default()
        };
        let source = SecretSource::select("K", vars).unwrap().unwrap();
        let r = Refresher::new(source, Resolver::new(), None).every(Duration::from_millis(1));
        // `changed` waits forever: there is no interval to wake on.
        assert_eq!(r.every, None);
    }
}
