//! `keel-bench compare-fio`: keel-bench local and fio's io_uring engine on the
//! same file with the same parameters, alternately, and the medians side by
//! side. Alternating spreads the machine's noise over both.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::workload::{Pattern, Workload};

pub struct CompareArgs {
    pub file: PathBuf,
    pub size: u64,
    pub workload: Workload,
    pub cores: usize,
    pub runs: usize,
    pub fio: String,
}

/// One run's figures, from either tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub iops: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

pub fn fio_command(args: &CompareArgs) -> Command {
    let w = &args.workload;
    let mut cmd = Command::new(&args.fio);
    cmd.arg("--name=fio-io_uring")
        .arg(format!("--filename={}", args.file.display()))
        .arg("--ioengine=io_uring")
        .arg("--direct=1")
        .arg("--fixedbufs=1")
        .arg("--registerfiles=1")
        .arg(format!("--rw={}", w.pattern.name()))
        .arg(format!("--bs={}", w.block_size))
        .arg(format!("--iodepth={}", w.queue_depth))
        .arg(format!("--numjobs={}", args.cores))
        .arg(format!("--size={}", args.size))
        .arg(format!("--runtime={}", w.runtime.as_secs().max(1)))
        .arg("--time_based=1")
        .arg("--thread=1")
        .arg("--group_reporting=1")
        // keel-bench draws offsets uniformly without a coverage map; so must fio.
        .arg("--norandommap=1")
        .arg("--randrepeat=0")
        // keel-bench pins shard i to CPU i; pin fio's jobs the same way.
        .arg(format!("--cpus_allowed=0-{}", args.cores - 1))
        .arg("--cpus_allowed_policy=split")
        // Total latency (submission to completion), what keel-bench measures.
        .arg("--lat_percentiles=1")
        .arg("--clat_percentiles=0")
        .arg("--percentile_list=50:99:99.9")
        .arg("--output-format=json");
    if w.pattern == Pattern::Randrw {
        cmd.arg(format!("--rwmixread={}", w.rwmix_read));
    }
    cmd
}

/// Reads fio's JSON: sums IOPS over directions; latency of the direction that
/// did most of the I/O.
pub fn parse_fio(json: &Value) -> anyhow::Result<Figures> {
    let job = json["jobs"].get(0).context("fio output has no jobs")?;
    let mut figures = Figures::default();
    let mut best_ops = -1.0;
    for dir in ["read", "write"] {
        let d = &job[dir];
        let iops = d["iops"].as_f64().unwrap_or(0.0);
        figures.iops += iops;
        if iops > best_ops {
            best_ops = iops;
            let pct = &d["lat_ns"]["percentile"];
            let at = |k: &str| pct[k].as_f64().unwrap_or(0.0) / 1000.0;
            figures.p50_us = at("50.000000");
            figures.p99_us = at("99.000000");
            figures.p999_us = at("99.900000");
        }
    }
    if figures.iops <= 0.0 {
        bail!("fio reported no I/O (see its output)");
    }
    Ok(figures)
}

/// Reads keel-bench's JSON the same way.
pub fn parse_keel(json: &Value) -> anyhow::Result<Figures> {
    let pick = match (json.get("read"), json.get("write")) {
        (Some(r), Some(w)) if w["ops"].as_u64() > r["ops"].as_u64() => w,
        (Some(r), _) => r,
        (None, Some(w)) => w,
        (None, None) => bail!("keel-bench reported no I/O"),
    };
    Ok(Figures {
        iops: json["iops"].as_f64().unwrap_or(0.0),
        p50_us: pick["lat_us"]["p50"].as_f64().unwrap_or(0.0),
        p99_us: pick["lat_us"]["p99"].as_f64().unwrap_or(0.0),
        p999_us: pick["lat_us"]["p999"].as_f64().unwrap_or(0.0),
    })
}

fn run_json(mut cmd: Command, what: &str) -> anyhow::Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed? apt-get install -y fio)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // fio may print notes before its JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find('{')
        .with_context(|| format!("{what} printed no JSON"))?;
    serde_json::from_str(&text[start..]).with_context(|| format!("parsing {what}'s JSON"))
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

pub struct Comparison {
    pub keel: Vec<Figures>,
    pub fio: Vec<Figures>,
}

impl Comparison {
    fn med(runs: &[Figures], f: impl Fn(&Figures) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }

    pub fn to_json(&self, args: &CompareArgs) -> Value {
        let side = |runs: &[Figures]| {
            json!({
                "iops": Self::med(runs, |f| f.iops),
                "p50_us": Self::med(runs, |f| f.p50_us),
                "p99_us": Self::med(runs, |f| f.p99_us),
                "p999_us": Self::med(runs, |f| f.p999_us),
                "runs_iops": runs.iter().map(|f| f.iops).collect::<Vec<_>>(),
                "runs_p99_us": runs.iter().map(|f| f.p99_us).collect::<Vec<_>>(),
            })
        };
        let ratio = |f: &dyn Fn(&Figures) -> f64| {
            let fio = Self::med(&self.fio, f);
            if fio > 0.0 {
                Self::med(&self.keel, f) / fio
            } else {
                0.0
            }
        };
        json!({
            "rw": args.workload.pattern.name(),
            "bs": args.workload.block_size,
            "qd": args.workload.queue_depth,
            "cores": args.cores,
            "time_s": args.workload.runtime.as_secs(),
            "runs": args.runs,
            "file": args.file.display().to_string(),
            "keel": side(&self.keel),
            "fio": side(&self.fio),
            "ratio_iops": ratio(&|f: &Figures| f.iops),
            "ratio_p50": ratio(&|f: &Figures| f.p50_us),
            "ratio_p99": ratio(&|f: &Figures| f.p99_us),
        })
    }

    pub fn to_table(&self, args: &CompareArgs) -> String {
        let v = self.to_json(args);
        let mut out = format!(
            "{} bs={} qd={} cores={} {}s x {} runs each, medians:\n",
            args.workload.pattern.name(),
            args.workload.block_size,
            args.workload.queue_depth,
            args.cores,
            args.workload.runtime.as_secs(),
            args.runs
        );
        out.push_str(&format!(
            "{:<14} {:>11} {:>9} {:>9} {:>9}\n",
            "", "IOPS", "p50 us", "p99 us", "p99.9 us"
        ));
        for name in ["keel", "fio"] {
            let s = &v[name];
            out.push_str(&format!(
                "{:<14} {:>11.0} {:>9.1} {:>9.1} {:>9.1}\n",
                if name == "keel" {
                    "keel-bench"
                } else {
                    "fio io_uring"
                },
                s["iops"].as_f64().unwrap_or(0.0),
                s["p50_us"].as_f64().unwrap_or(0.0),
                s["p99_us"].as_f64().unwrap_or(0.0),
                s["p999_us"].as_f64().unwrap_or(0.0),
            ));
        }
        out.push_str(&format!(
            "keel/fio       IOPS x{:.3}   p50 x{:.3}   p99 x{:.3}\n",
            v["ratio_iops"].as_f64().unwrap_or(0.0),
            v["ratio_p50"].as_f64().unwrap_or(0.0),
            v["ratio_p99"].as_f64().unwrap_or(0.0),
        ));
        out
    }
}

pub fn compare(
    args: &CompareArgs,
    keel_args: &[String],
    verbose: bool,
) -> anyhow::Result<Comparison> {
    crate::local::lay_out_file(&args.file, args.size)?;
    let me = std::env::current_exe().context("locating keel-bench")?;
    let mut comparison = Comparison {
        keel: Vec::new(),
        fio: Vec::new(),
    };
    for run in 1..=args.runs {
        let mut keel = Command::new(&me);
        keel.args(keel_args);
        let k = parse_keel(&run_json(keel, "keel-bench local")?)?;
        let f = parse_fio(&run_json(fio_command(args), "fio")?)?;
        if verbose {
            eprintln!(
                "run {run}/{}: keel {:.0} IOPS p99 {:.1} us | fio {:.0} IOPS p99 {:.1} us",
                args.runs, k.iops, k.p99_us, f.iops, f.p99_us
            );
        }
        comparison.keel.push(k);
        comparison.fio.push(f);
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn fio_json_is_read_from_the_busier_direction() {
        let v = json!({"jobs": [{
            "read": {"iops": 1000.0, "lat_ns": {"percentile": {"50.000000": 50000, "99.000000": 99000, "99.900000": 120000}}},
            "write": {"iops": 10.0, "lat_ns": {"percentile": {"50.000000": 1, "99.000000": 2, "99.900000": 3}}}
        }]});
        let f = parse_fio(&v).unwrap();
        assert_eq!(f.iops, 1010.0);
        assert_eq!(f.p99_us, 99.0);
        assert!(parse_fio(&json!({"jobs": []})).is_err());
    }
}
