//! Restart back-off, derived only from what Docker remembers (attempt number and the exited
//! attempt's run time), so it survives kubelet restarts.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before starting the attempt after `attempt` exited, having run for `ran`.
    /// Doubles per restart up to `max`, as Kubernetes' CrashLoopBackOff; a container that ran
    /// for twice the cap before exiting starts over at `base`.
    pub fn delay(&self, attempt: u32, ran: Duration) -> Duration {
        if ran >= self.max * 2 {
            return self.base;
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_long_run() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_mins(5),
        };
        let short = Duration::from_secs(1);
        let got: Vec<u64> = (0..7).map(|a| b.delay(a, short).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(40, short).as_secs(), 300, "no overflow");
        assert_eq!(b.delay(5, Duration::from_mins(10)).as_secs(), 10);
    }
}
