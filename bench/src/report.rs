//! Results of a run: latency histograms and counts, printed as a table or
//! as one JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in nanoseconds, 3 significant digits, up to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// One direction's results (reads or writes) from one or more shards.
#[derive(Clone)]
pub struct Direction {
    pub ops: u64,
    pub bytes: u64,
    pub latency_ns: Histogram<u64>,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            ops: 0,
            bytes: 0,
            latency_ns: new_histogram(),
        }
    }
}

impl Direction {
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.ops += 1;
        self.bytes += bytes;
        self.latency_ns
            .saturating_record(latency.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn merge(&mut self, other: &Direction) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
    }
}

#[derive(Clone, Default)]
pub struct Results {
    pub read: Direction,
    pub write: Direction,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Results {
    pub fn merge(&mut self, other: &Results) {
        self.read.merge(&other.read);
        self.write.merge(&other.write);
        self.errors += other.errors;
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    pub fn total(&self) -> Direction {
        let mut all = self.read.clone();
        all.merge(&self.write);
        all
    }
}

pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

pub fn percentiles_us(h: &Histogram<u64>) -> Percentiles {
    let us = |ns: u64| ns as f64 / 1000.0;
    if h.is_empty() {
        return Percentiles {
            min: 0.0,
            mean: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        };
    }
    Percentiles {
        min: us(h.min()),
        mean: h.mean() / 1000.0,
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
    }
}

/// The HdrHistogram "percentile distribution" text that wrk, fio's
/// hdr tools and the HdrHistogram plotter read: value (microseconds),
/// percentile, total count, 1/(1-percentile), then a summary.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value(us)", "Percentile", "TotalCount", "1/(1-Percentile)"
    ));
    let mut total = 0u64;
    for step in h.iter_quantiles(1) {
        total += step.count_since_last_iteration();
        let q = step.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "")
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {}\n",
            step.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inverse
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    ));
    out.push_str(&format!(
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.max() as f64 / 1000.0,
        h.len()
    ));
    out
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn direction_json(d: &Direction, elapsed: Duration) -> Value {
    let p = percentiles_us(&d.latency_ns);
    json!({
        "ops": d.ops,
        "iops": round1(rate(d.ops, elapsed)),
        "bw_mib_s": round1(rate(d.bytes, elapsed) / (1 << 20) as f64),
        "lat_us": {
            "min": round2(p.min), "mean": round2(p.mean), "p50": round2(p.p50), "p90": round2(p.p90),
            "p99": round2(p.p99), "p999": round2(p.p999), "max": round2(p.max),
        },
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The whole result as JSON; `context` (the run's parameters) is merged in.
pub fn to_json(results: &Results, context: Value) -> Value {
    let mut top = direction_json(&results.total(), results.elapsed);
    if let (Value::Object(top), Value::Object(ctx)) = (&mut top, context) {
        top.extend(ctx);
        top.insert("errors".into(), json!(results.errors));
        top.insert(
            "elapsed_s".into(),
            json!(round2(results.elapsed.as_secs_f64())),
        );
        if results.read.ops > 0 {
            top.insert(
                "read".into(),
                direction_json(&results.read, results.elapsed),
            );
        }
        if results.write.ops > 0 {
            top.insert(
                "write".into(),
                direction_json(&results.write, results.elapsed),
            );
        }
    }
    top
}

/// The result as a small table.
pub fn to_table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<6} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "", "IOPS", "MiB/s", "min", "p50", "p90", "p99", "p99.9", "max", "(lat, us)"
    ));
    let mut row = |name: &str, d: &Direction| {
        let p = percentiles_us(&d.latency_ns);
        out.push_str(&format!(
            "{:<6} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            name,
            rate(d.ops, results.elapsed),
            rate(d.bytes, results.elapsed) / (1 << 20) as f64,
            p.min,
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max
        ));
    };
    if results.read.ops > 0 {
        row("read", &results.read);
    }
    if results.write.ops > 0 {
        row("write", &results.write);
    }
    if results.read.ops > 0 && results.write.ops > 0 {
        row("total", &results.total());
    }
    if results.errors > 0 {
        out.push_str(&format!("errors: {}\n", results.errors));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_keys() {
        let mut r = Results {
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        for i in 1..=1000u64 {
            r.read.record(4096, Duration::from_micros(i));
        }
        let v = to_json(&r, json!({"rw": "randread"}));
        assert_eq!(v["iops"], json!(500.0));
        assert_eq!(v["rw"], json!("randread"));
        let p50 = v["lat_us"]["p50"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        assert!(v["lat_us"]["p99"].as_f64().unwrap() >= 989.0);
        assert!(v["lat_us"]["p999"].as_f64().unwrap() >= 998.0);
        assert!((v["bw_mib_s"].as_f64().unwrap() - 1.95).abs() < 0.06);
        assert!(v.get("write").is_none());
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Results::default();
        let mut b = Results::default();
        a.read.record(4096, Duration::from_micros(10));
        b.write.record(8192, Duration::from_micros(20));
        b.errors = 2;
        a.merge(&b);
        assert_eq!(a.total().ops, 2);
        assert_eq!(a.total().bytes, 12288);
        assert_eq!(a.errors, 2);
        assert!(to_table(&a).contains("total"));
    }
}
