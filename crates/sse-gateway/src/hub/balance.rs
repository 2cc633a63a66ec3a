//! Balance after a deploy: an instance holding more than its fair share of the streams sheds
//! the streams above it, so that they reconnect through the load balancer. After a rolling
//! update the replica restarted last would otherwise serve almost no one, since clients stay
//! where they reconnected.
//!
//! The fair share is every instance's stream count (their figures, `rakuda:realtime:gateway:*`,
//! refreshed each beat) over the instances whose upstream works. Shedding is bounded: a tenth
//! of the instance's streams per beat at most (a drain ends all of them in one spread), each
//! ended at a random point of `drain_retry_spread_ms` with a short retry, and resumed exactly
//! from its cursor, as a drained stream is.

/// Streams above its share an instance must hold before it sheds any.
pub const MIN_EXCESS: usize = 2;

/// How many of `own` streams should leave, when the other instances hold `others`, and an
/// instance sheds above `ratio` times its fair share (0: never).
pub fn to_shed(own: usize, others: &[u64], ratio: f64) -> usize {
    if ratio <= 0.0 || others.is_empty() {
        return 0;
    }
    let total = own as f64 + others.iter().sum::<u64>() as f64;
    let fair = total / (others.len() + 1) as f64;
    if own as f64 <= fair * ratio {
        return 0;
    }
    // A single stream above the share is not worth a reconnect (a handful of streams on
    // a few instances is always that uneven).
    let excess = own.saturating_sub(fair.ceil() as usize);
    if excess < MIN_EXCESS {
        return 0;
    }
    excess.min(own.div_ceil(10).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_above_the_ratio_and_a_tenth_at_most() {
        // Alone, or off: nothing.
        assert_eq!(to_shed(100, &[], 1.2), 0);
        assert_eq!(to_shed(100, &[0], 0.0), 0);
        // 110 against a fair 100: within 1.2.
        assert_eq!(to_shed(110, &[90], 1.2), 0);
        // 950 of 1,000 on two: fair 500, 450 above it, a tenth (95) this beat.
        assert_eq!(to_shed(950, &[50], 1.2), 95);
        // 13 of 20: fair 10, 3 above it, a tenth of 13 (rounded up: 2) this beat.
        assert_eq!(to_shed(13, &[7], 1.2), 2);
        // 2 of 2 on two: fair 1, over 1.2 times it, but one stream above it: stays.
        assert_eq!(to_shed(2, &[0], 1.2), 0);
        // 2 on one of three holding 3 (the stats test): fair 1, one above: stays.
        assert_eq!(to_shed(2, &[1, 0], 1.2), 0);
        // 4 of 4 on two: fair 2, two above it, a tenth (1) this beat.
        assert_eq!(to_shed(4, &[0], 1.2), 1);
    }
}
