//! Retries with backoff around any backend, for the transient failures of remote stores.
//!
//! A 500, a 503 SlowDown, a timeout, a connection reset mid-body or a short read is retried with
//! exponential backoff and jitter; a missing object or refused credentials never are. Every
//! operation here is safe to repeat: objects are immutable and named after their content, a
//! repeated PUT writes the same bytes, and a repeated DELETE of a gone object succeeds.

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{Backend, BackendError, ObjectInfo};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Sleeps before attempt `attempt + 1` (one WARN line says why), and doubles `delay`.
    fn wait(&self, delay: &mut Duration, attempt: u32, why: &str) {
        // Full jitter: hosts that failed together do not come back together.
        let sleep = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tracing::warn!(
            "{why}; attempt {} of {} in {:.1} s",
            attempt + 1,
            self.retries + 1,
            sleep.as_secs_f64()
        );
        std::thread::sleep(sleep);
        *delay = (*delay * 2).min(self.max_delay);
    }
}

pub struct Retrying {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    retried: Arc<AtomicU64>,
}

impl Retrying {
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> Self {
        Retrying {
            inner,
            policy,
            retried: Arc::default(),
        }
    }

    /// Requests sent again so far.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    fn run<T>(
        &self,
        what: &str,
        key: &str,
        mut op: impl FnMut() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut delay = self.policy.first_delay;
        let mut attempt = 0;
        loop {
            match op() {
                Err(e) if e.is_transient() && attempt < self.policy.retries => {
                    attempt += 1;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    self.policy
                        .wait(&mut delay, attempt, &format!("{what} {key} failed ({e})"));
                }
                Err(BackendError::Store { key, message }) if attempt > 0 => {
                    return Err(BackendError::Store {
                        key,
                        message: format!("{message} (gave up after {} attempts)", attempt + 1),
                    })
                }
                r => return r,
            }
        }
    }
}

impl Backend for Retrying {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError> {
        // The body is kept for a second attempt; `Bytes` makes the copies cheap for the store.
        let data = Bytes::from(data);
        self.run("PUT", key, || self.inner.put_bytes(key, data.clone()))
    }

    fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.run("PUT", key, || self.inner.put_bytes(key, data.clone()))
    }

    fn put_deferred(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.run("PUT", key, || self.inner.put_deferred(key, data.clone()))
    }

    /// Not retried: after a failed flush the data's state is unknown (the store remembers the
    /// failure and would only refuse again).
    fn sync(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.sync(keys)
    }

    fn remove_abandoned(
        &self,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<crate::Abandoned, BackendError> {
        self.inner.remove_abandoned(older_than, dry_run)
    }

    fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.run("GET", key, || self.inner.get(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.run("GET", key, || self.inner.get_range(key, range.clone()))
    }

    fn get_into(&self, key: &str, out: &mut Vec<u8>) -> Result<(), BackendError> {
        self.run("GET", key, || self.inner.get_into(key, out))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.run("LIST", prefix, || self.inner.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.run("DELETE", key, || self.inner.delete(key))
    }

    fn stat(&self, key: &str) -> Result<ObjectInfo, BackendError> {
        self.run("HEAD", key, || self.inner.stat(key))
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    /// A stream that picks up where it broke: a body cut mid-way is asked for again from the
    /// first byte not yet read (a ranged GET), so a long object survives a flaky connection.
    fn open_read(&self, key: &str, from: u64) -> Result<Box<dyn Read + Send>, BackendError> {
        let reader = self.run("GET", key, || self.inner.open_read(key, from))?;
        Ok(Box::new(Resuming {
            inner: self.inner.clone(),
            policy: self.policy,
            retried: self.retried.clone(),
            key: key.to_string(),
            offset: from,
            reader,
            attempt: 0,
            delay: self.policy.first_delay,
        }))
    }

    /// A consumed reader cannot be sent again: this is one attempt. [`Backend::put_from`]
    /// retries.
    fn put_stream(&self, key: &str, reader: &mut dyn Read) -> Result<u64, BackendError> {
        self.inner.put_stream(key, reader)
    }

    fn put_from(
        &self,
        key: &str,
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn Read + Send>>,
    ) -> Result<u64, BackendError> {
        self.run("PUT", key, || self.inner.put_from(key, open))
    }

    fn now(&self) -> Result<DateTime<Utc>, BackendError> {
        self.run("clock", "clock/", || self.inner.now())
    }
}

/// A streaming read that reopens the object at its offset after a transient failure.
struct Resuming {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    retried: Arc<AtomicU64>,
    key: String,
    offset: u64,
    reader: Box<dyn Read + Send>,
    attempt: u32,
    delay: Duration,
}

impl Read for Resuming {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let e = match self.reader.read(out) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            // Reopen at the first byte not yet read; a reopen that fails transiently counts as
            // an attempt too (never read on from the broken stream: it may just say "end").
            loop {
                if self.attempt >= self.policy.retries {
                    return Err(std::io::Error::other(format!(
                        "{e} (gave up after {} attempts)",
                        self.attempt + 1
                    )));
                }
                self.attempt += 1;
                self.retried.fetch_add(1, Ordering::Relaxed);
                let why = format!("GET {} broke at byte {} ({e})", self.key, self.offset);
                self.policy.wait(&mut self.delay, self.attempt, &why);
                match self.inner.open_read(&self.key, self.offset) {
                    Ok(r) => {
                        self.reader = r;
                        break;
                    }
                    Err(e) if e.is_transient() => {}
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreBackend;
    use std::sync::Mutex;

    /// Fails the first `n` calls of each kind with a transient error, or always with NotFound.
    struct Flaky {
        inner: StoreBackend,
        failures: Mutex<u32>,
    }

    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        fn put(&self, key: &str, data: Vec<u8>) -> Result<(), BackendError> {
            self.fail(key)?;
            self.inner.put(key, data)
        }
        fn get(&self, key: &str) -> Result<Bytes, BackendError> {
            self.fail(key)?;
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
            self.inner.get_range(key, range)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
            self.fail(prefix)?;
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), BackendError> {
            self.inner.delete(key)
        }
        fn stat(&self, key: &str) -> Result<ObjectInfo, BackendError> {
            self.inner.stat(key)
        }
    }

    impl Flaky {
        fn fail(&self, key: &str) -> Result<(), BackendError> {
            let mut n = self.failures.lock().unwrap();
            if *n > 0 {
                *n -= 1;
                return Err(BackendError::Store {
                    key: key.into(),
                    message: "503 SlowDown".into(),
                });
            }
            Ok(())
        }
    }

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[test]
    fn transient_errors_are_retried_until_the_budget_is_spent() {
        let flaky = Arc::new(Flaky {
            inner: StoreBackend::memory(),
            failures: Mutex::new(3),
        });
        let r = Retrying::new(flaky.clone(), policy(3));
        r.put("a", b"x".to_vec()).unwrap();
        assert_eq!(r.retried(), 3);
        assert_eq!(&r.get("a").unwrap()[..], b"x");

        *flaky.failures.lock().unwrap() = 5;
        let e = r.list("").unwrap_err();
        assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
    }

    #[test]
    fn not_found_is_never_retried() {
        let flaky = Arc::new(Flaky {
            inner: StoreBackend::memory(),
            failures: Mutex::new(0),
        });
        let r = Retrying::new(flaky, policy(5));
        assert!(matches!(r.get("nope"), Err(BackendError::NotFound { .. })));
        assert_eq!(r.retried(), 0);
    }

    /// A source that fails to read is not the store's fault: no retry, and the error says so.
    #[test]
    fn a_failing_source_is_not_retried() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("chunk 1234abcd is damaged"))
            }
        }
        let r = Retrying::new(Arc::new(StoreBackend::memory()), RetryPolicy::default());
        let mut opened = 0;
        let mut open = || -> std::io::Result<Box<dyn Read + Send>> {
            opened += 1;
            Ok(Box::new(Broken))
        };
        let e = r.put_from("data/00/x", &mut open).unwrap_err();
        assert!(matches!(e, BackendError::Source { .. }), "{e}");
        assert!(e.to_string().contains("damaged"), "{e}");
        assert_eq!((opened, r.retried()), (1, 0));
        assert!(!r.exists("data/00/x").unwrap());
    }
}
