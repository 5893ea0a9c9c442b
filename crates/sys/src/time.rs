//! Deadlines for every blocking call with a timeout form.
//!
//! `Instant::now() + timeout` panics when the sum does not fit, so a caller
//! that passes `Duration::MAX` ("wait as long as it takes") would crash the
//! library. [`Deadline`] saturates instead: a timeout too large to add to the
//! clock means *never*, which is what such a caller asked for. Every crate
//! turns its `*_timeout(Duration)` argument into a deadline here, in one way.

use std::time::{Duration, Instant};

/// A point in time a wait gives up at, or never.
///
/// ```
/// use mp_sys::time::Deadline;
/// use std::time::Duration;
///
/// assert!(Deadline::after(Duration::MAX).is_never());
/// assert_eq!(Deadline::after(Duration::MAX).remaining(), None);
/// let soon = Deadline::after(Duration::from_millis(5));
/// assert!(soon.remaining().unwrap() <= Duration::from_millis(5));
/// assert!(Deadline::after(Duration::ZERO).has_passed());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// The deadline that never comes.
    pub const NEVER: Deadline = Deadline(None);

    /// `t` from now; [`NEVER`](Deadline::NEVER) when `now + t` is beyond what
    /// the clock can represent.
    pub fn after(t: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(t))
    }

    /// `after(t)` for `Some(t)`, never for `None` (Python's `timeout=None`).
    pub fn from_timeout(t: Option<Duration>) -> Deadline {
        t.map_or(Deadline::NEVER, Deadline::after)
    }

    /// The deadline at `instant`.
    pub fn at(instant: Instant) -> Deadline {
        Deadline(Some(instant))
    }

    /// The instant, or `None` for never: the form the waiting functions of
    /// this crate ([`futex::wait_until`](crate::futex::wait_until), say) take.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Whether this deadline never comes.
    pub fn is_never(self) -> bool {
        self.0.is_none()
    }

    /// The time left (zero once passed), or `None` for never.
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has come.
    pub fn has_passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (Some(a), None) | (None, Some(a)) => Deadline(Some(a)),
            (None, None) => Deadline::NEVER,
        }
    }
}

/// The longest single sleep [`Deadline::nap`] and [`Deadline::sleep_until`]
/// hand out: a sleeper toward a farther deadline wakes and looks again.
pub const MAX_NAP: Duration = Duration::from_secs(24 * 3600);

impl Deadline {
    /// The instant a bounded sleep of `t` from now ends (`t` capped at
    /// [`MAX_NAP`], so it never overflows the clock): for a sleeper that
    /// wakes periodically to look again.
    ///
    /// ```
    /// use mp_sys::time::{Deadline, MAX_NAP};
    /// use std::time::{Duration, Instant};
    /// assert!(Deadline::nap(Duration::MAX) <= Instant::now() + MAX_NAP);
    /// ```
    pub fn nap(t: Duration) -> Instant {
        let now = Instant::now();
        now.checked_add(t.min(MAX_NAP)).unwrap_or(now)
    }

    /// When a sleep toward this deadline that lasts at most `nap` ends: the
    /// earlier of the deadline and [`Deadline::nap`]`(nap)`.
    ///
    /// ```
    /// use mp_sys::time::Deadline;
    /// use std::time::{Duration, Instant};
    /// let wake = Deadline::NEVER.sleep_until(Duration::from_millis(5));
    /// assert!(wake <= Instant::now() + Duration::from_millis(5));
    /// ```
    pub fn sleep_until(self, nap: Duration) -> Instant {
        let wake = Deadline::nap(nap);
        self.0.map_or(wake, |d| d.min(wake))
    }
}

impl From<Option<Instant>> for Deadline {
    fn from(instant: Option<Instant>) -> Deadline {
        Deadline(instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_are_never() {
        for t in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::new(u64::MAX / 2, 0),
        ] {
            let d = Deadline::after(t);
            assert!(d.is_never(), "{t:?}");
            assert!(!d.has_passed());
            assert_eq!(d.remaining(), None);
        }
    }

    #[test]
    fn ordinary_timeouts_pass() {
        let d = Deadline::after(Duration::from_millis(1));
        assert!(!d.is_never());
        std::thread::sleep(Duration::from_millis(2));
        assert!(d.has_passed());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
    }

    #[test]
    fn min_prefers_the_earlier() {
        let a = Deadline::after(Duration::from_secs(1));
        let b = Deadline::after(Duration::from_secs(2));
        assert_eq!(a.min(b), a);
        assert_eq!(Deadline::NEVER.min(b), b);
        assert_eq!(Deadline::NEVER.min(Deadline::NEVER), Deadline::NEVER);
        assert_eq!(Deadline::from_timeout(None), Deadline::NEVER);
    }
}
