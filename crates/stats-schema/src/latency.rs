//! Delivery latency as histogram buckets (upper bound in seconds, cumulative count). Readers
//! merge the buckets of every gateway and take quantiles of the merged histogram: an average
//! of per-instance percentiles would say nothing.

use std::collections::BTreeMap;

/// A cumulative histogram: `(upper bound in seconds, samples at or below it)`, ascending.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    /// The buckets among `fields` whose names are `<prefix><bound>` (e.g. `latency_le_0.005`);
    /// other fields and unreadable values are ignored.
    pub fn from_fields<'a>(prefix: &str, fields: impl IntoIterator<Item = (&'a String, &'a String)>) -> Buckets {
        let pairs = fields.into_iter().filter_map(|(k, v)| {
            let bound = k.strip_prefix(prefix)?.parse::<f64>().ok()?;
            Some((bound, v.parse::<u64>().ok()?))
        });
        // One histogram: merging it sorts the buckets (and adds up a bound written twice).
        Buckets::merge([Buckets(pairs.collect())])
    }

    /// The sum of several histograms, bucket by bucket (same bounds add up).
    pub fn merge(all: impl IntoIterator<Item = Buckets>) -> Buckets {
        // Keyed by the bound's bits: the same bound written by two gateways is the same f64.
        let mut merged: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for b in all {
            for (bound, count) in b.0 {
                merged.entry(bound.to_bits()).or_insert((bound, 0)).1 += count;
            }
        }
        let mut v: Vec<_> = merged.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(v)
    }

    /// The upper bound, in ms, of the bucket holding quantile `q` of `count` samples. `None`
    /// without samples (or when the quantile is only in the `+Inf` bucket).
    pub fn quantile_ms(&self, count: u64, q: f64) -> Option<f64> {
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil() as u64;
        self.0
            .iter()
            .find(|(_, c)| *c >= rank)
            .map(|(b, _)| b * 1000.0)
            .filter(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_merged_buckets() {
        // Instance a: 99 fast deliveries; instance b: 1 slow one. Averages of p99s would say
        // "half slow"; merged buckets say p50 fast, p99 fast, only the max slow.
        let a = Buckets(vec![(0.001, 99), (1.0, 99)]);
        let b = Buckets(vec![(0.001, 0), (1.0, 1)]);
        let m = Buckets::merge([a, b]);
        assert_eq!(m, Buckets(vec![(0.001, 99), (1.0, 100)]));
        assert_eq!(m.quantile_ms(100, 0.5), Some(1.0));
        assert_eq!(m.quantile_ms(100, 0.99), Some(1.0));
        let c = Buckets(vec![(0.001, 50), (1.0, 100)]);
        assert_eq!(c.quantile_ms(100, 0.99), Some(1000.0));
        assert_eq!(Buckets::default().quantile_ms(0, 0.5), None);
    }

    #[test]
    fn buckets_are_read_from_their_fields() {
        let fields: Vec<(String, String)> = [("gw:latency_le_0.005", "3"), ("gw:latency_le_1", "4"), ("events", "9")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let b = Buckets::from_fields("gw:latency_le_", fields.iter().map(|(k, v)| (k, v)));
        assert_eq!(b, Buckets(vec![(0.005, 3), (1.0, 4)]));
    }
}
