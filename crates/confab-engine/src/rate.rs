//! Per-session rate limits, and the app's REST quotas per node (off by default;
//! protocol §6.24 and the REST export §6 list LeanCloud's quotas).

/// What a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClass {
    /// Messages sent.
    Send,
    /// History queries.
    History,
    /// Other conversation operations.
    Op,
}

/// What a REST call counts against (the app's `rest_…_per_minute` limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestRate {
    /// Sends, edits and recalls.
    Messages,
    /// Broadcasts to a service conversation's subscribers.
    SubscriberBroadcasts,
    /// App-wide broadcasts.
    AppBroadcasts,
}

/// Counters for the current one-minute window.
#[derive(Debug, Default)]
pub struct RateWindow {
    start_ms: i64,
    counts: [u32; 3],
}

impl RateWindow {
    /// Counts one request; `false` when it exceeds `limit` (0 = unlimited).
    pub fn admit(&mut self, class: RateClass, limit: u32, now_ms: i64) -> bool {
        self.admit_slot(class as usize, limit, now_ms)
    }

    /// Counts one REST call; `false` when it exceeds `limit` (0 = unlimited).
    pub fn admit_rest(&mut self, class: RestRate, limit: u32, now_ms: i64) -> bool {
        self.admit_slot(class as usize, limit, now_ms)
    }

    fn admit_slot(&mut self, slot: usize, limit: u32, now_ms: i64) -> bool {
        if limit == 0 {
            return true;
        }
        if now_ms - self.start_ms >= 60_000 || now_ms < self.start_ms {
            self.start_ms = now_ms;
            self.counts = [0; 3];
        }
        let Some(slot) = self.counts.get_mut(slot) else { return true };
        if *slot >= limit {
            return false;
        }
        *slot += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_resets_each_minute() {
        let mut w = RateWindow::default();
        assert!(w.admit(RateClass::Send, 2, 1000));
        assert!(w.admit(RateClass::Send, 2, 1001));
        assert!(!w.admit(RateClass::Send, 2, 1002));
        assert!(w.admit(RateClass::Op, 2, 1002));
        assert!(w.admit(RateClass::Send, 2, 61_001));
        assert!(w.admit(RateClass::History, 0, 61_001));
    }
}
