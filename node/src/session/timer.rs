//! The session's deadlines, one slot per kind, as quinn-proto's `TimerTable`: the connection
//! sleeps until the earliest of them and hands the time back to [`super::Session::handle_timeout`].

use std::time::Instant;

/// A kind of deadline the session keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Nothing received within 1.5 times the keep-alive [MQTT-3.1.2-24].
    KeepAlive,
    /// `max_connection_lifetime` of the listener.
    Lifetime,
}

impl Timer {
    const COUNT: usize = 2;
}

/// When each [`Timer`] fires; `None` when it is not armed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// True when `timer` is armed for `now` or earlier.
    pub(super) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.at[timer as usize].is_some_and(|at| at <= now)
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn next_is_the_earliest_armed_deadline_and_stopped_ones_do_not_count() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::KeepAlive, t0 + Duration::from_secs(5));
        t.set(Timer::Lifetime, t0 + Duration::from_secs(3));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(3)));
        assert!(t.is_expired(Timer::Lifetime, t0 + Duration::from_secs(3)));
        assert!(!t.is_expired(Timer::KeepAlive, t0 + Duration::from_secs(3)));
        t.stop(Timer::Lifetime);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(5)));
    }
}
