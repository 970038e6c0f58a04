//! Restart intensity: how many handler restarts a service tolerates before it gives up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

/// What a caught panic says: its message when it was a string, else nothing.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The restart-intensity limit: more than `max_restarts` handler restarts (panics) within
/// `within` make the service deregister and stop with
/// [`ErrorKind::RestartIntensity`](crate::ErrorKind::RestartIntensity), so that a process
/// manager restarts it instead of it flapping. Default: 5 within 10 s.
///
/// ```
/// use std::time::Duration;
/// let p = micro::RestartPolicy::new(3, Duration::from_secs(5));
/// assert_eq!(p.max_restarts(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    max_restarts: u32,
    within: Duration,
}

impl RestartPolicy {
    /// At most `max_restarts` restarts within `within`.
    pub fn new(max_restarts: u32, within: Duration) -> RestartPolicy {
        RestartPolicy { max_restarts, within }
    }

    /// Never give up (restarts are still counted in `Debug.Stats`).
    pub fn unlimited() -> RestartPolicy {
        RestartPolicy { max_restarts: u32::MAX, within: Duration::from_secs(1) }
    }

    /// The limit.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The window.
    pub fn within(&self) -> Duration {
        self.within
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::new(5, Duration::from_secs(10))
    }
}

/// Counts restarts in a sliding window and trips once the policy is exceeded.
#[derive(Debug)]
pub(crate) struct Supervisor {
    policy: RestartPolicy,
    times: Mutex<VecDeque<Instant>>,
    tripped: watch::Sender<bool>,
}

impl Supervisor {
    pub(crate) fn new(policy: RestartPolicy) -> Supervisor {
        Supervisor { policy, times: Mutex::new(VecDeque::new()), tripped: watch::channel(false).0 }
    }

    /// Records one restart; returns true if this one exceeded the limit.
    pub(crate) fn record_restart(&self) -> bool {
        if self.policy.max_restarts == u32::MAX {
            return false;
        }
        let now = Instant::now();
        let mut times = self.times.lock();
        times.push_back(now);
        while times.front().is_some_and(|t| now.duration_since(*t) > self.policy.within) {
            times.pop_front();
        }
        if times.len() as u64 > u64::from(self.policy.max_restarts) {
            tracing::error!(
                restarts = times.len(),
                within = ?self.policy.within,
                "restart intensity exceeded; the service will stop"
            );
            self.tripped.send_replace(true);
            return true;
        }
        false
    }

    /// Resolves once the limit has been exceeded.
    pub(crate) fn tripped(&self) -> watch::Receiver<bool> {
        self.tripped.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_says_its_message() {
        let boxed: Box<dyn std::any::Any + Send> = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(boxed.as_ref()), "boom");
        let formatted = std::panic::catch_unwind(|| panic!("boom {}", 2)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "boom 2");
        assert_eq!(panic_message(&5u8), "");
    }

    #[test]
    fn trips_only_past_the_limit() {
        let s = Supervisor::new(RestartPolicy::new(2, Duration::from_secs(60)));
        assert!(!s.record_restart());
        assert!(!s.record_restart());
        assert!(s.record_restart());
        assert!(*s.tripped().borrow());
    }
}
