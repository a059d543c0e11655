//! The server's clock. Everything the server decides or records by the time asks
//! [`Clock::now_ms`], so tests hand it a [`Clock::manual`] and move time themselves instead of
//! sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch, from the system or set by a test.
#[derive(Debug, Clone)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock (production).
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// Reads `start` until [`Clock::advance`] moves it (clones share the time).
    pub fn manual(start: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(start))) }
    }

    /// Moves a manual clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            Some(t) => t.load(Ordering::Acquire),
        }
    }

    /// The tokio instant at which this clock should read `ms` (now, if that is past).
    pub fn instant_at(&self, ms: i64) -> tokio::time::Instant {
        let wait = ms.saturating_sub(self.now_ms()).max(0);
        tokio::time::Instant::now() + Duration::from_millis(wait as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        other.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert!(Clock::system().now_ms() > 1_700_000_000_000);
    }
}
