//! keel-bench as a user runs it: the real binary on a real file.

use std::process::Command;

use serde_json::Value;

fn keel_bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args(args)
        .output()
        .expect("keel-bench runs")
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "keel-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn scratch() -> tempfile::TempDir {
    // Not /tmp: tmpfs refuses O_DIRECT.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn local_json_has_the_documented_keys() {
    let v = json_of(&keel_bench(&[
        "local", "--file", "memory", "--size", "64M", "--time", "1s", "--json",
    ]));
    assert!(v["iops"].as_f64().unwrap() > 0.0);
    assert!(v["bw_mib_s"].as_f64().unwrap() > 0.0);
    for key in ["p50", "p99", "p999"] {
        assert!(
            v["lat_us"][key].as_f64().is_some(),
            "lat_us.{key} missing: {v}"
        );
    }
    assert_eq!(v["errors"], 0);
    assert_eq!(v["rw"], "randread");
}

#[test]
fn local_mixed_run_on_a_new_file_reports_both_directions() {
    let dir = scratch();
    let file = dir.path().join("vol.dat");
    let file = file.to_str().unwrap();
    let v = json_of(&keel_bench(&[
        "local", "--file", file, "--size", "32M", "--rw", "randrw", "--rwmix", "50", "--bs", "8k",
        "--qd", "8", "--time", "1s", "--json",
    ]));
    assert!(v["read"]["ops"].as_u64().unwrap() > 0, "{v}");
    assert!(v["write"]["ops"].as_u64().unwrap() > 0, "{v}");
    assert!(v["backend"].as_str().unwrap().contains("O_DIRECT"));
    assert_eq!(std::fs::metadata(file).unwrap().len(), 32 << 20);
}

#[test]
fn a_block_size_the_device_cannot_take_is_refused_clearly() {
    let dir = scratch();
    let file = dir.path().join("vol.dat");
    let out = keel_bench(&[
        "local",
        "--file",
        file.to_str().unwrap(),
        "--size",
        "8M",
        "--bs",
        "1000",
        "--time",
        "1s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a multiple"), "{err}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["local", "--qd", "0"][..],
        &["local", "--bs", "4x"],
        &["local", "--rw", "sideways"],
        &["local", "--rwmix", "101"],
    ] {
        let out = keel_bench(args);
        assert!(!out.status.success(), "{args:?} was accepted");
    }
}

#[test]
fn idle_engine_reports_its_cpu_use() {
    let out = keel_bench(&["idle", "--time", "1s", "--json"]);
    let v = json_of(&out);
    assert!(v["cpu_pct_per_core"].as_f64().unwrap() < 50.0, "{v}");
    assert!(v["sleeps"].as_u64().unwrap() > 0);
}

/// Needs fio (the README's test command installs it).
#[test]
fn compare_fio_runs_both_tools_and_reports_ratios() {
    let dir = scratch();
    let file = dir.path().join("cmp.dat");
    let v = json_of(&keel_bench(&[
        "compare-fio",
        "--file",
        file.to_str().unwrap(),
        "--size",
        "64M",
        "--time",
        "1s",
        "--runs",
        "1",
        "--qd",
        "4",
        "--json",
    ]));
    assert!(v["keel"]["iops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["fio"]["iops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["ratio_iops"].as_f64().unwrap() > 0.0);
}

#[test]
fn demo_runs_three_replicated_keeld_nodes_and_their_copies_end_identical() {
    let dir = scratch();
    let data_dir = dir.path().join("demo");
    let out = keel_bench(&[
        "demo",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        "--size",
        "64M",
        "--time",
        "1s",
        "--qd",
        "8",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["random write", "random read", "mixed 70/30, verified"] {
        assert!(stdout.contains(phase), "no {phase} row: {stdout}");
    }
    assert!(stdout.contains("reads verified"), "{stdout}");
    assert!(stdout.contains("byte-identical"), "{stdout}");
    assert!(
        stdout.contains("all three keeld nodes stopped cleanly"),
        "{stdout}"
    );
    // Three copies, identical (the demo compared them; check it did not
    // compare three empty or missing files).
    let copies: Vec<Vec<u8>> = (1..=3)
        .map(|n| std::fs::read(data_dir.join(format!("node{n}/vol0.img"))).expect("a copy"))
        .collect();
    assert_eq!(copies[0].len(), 64 << 20);
    assert!(copies[0].iter().any(|&b| b != 0), "the demo wrote data");
    assert!(copies[1] == copies[0] && copies[2] == copies[0]);
}

#[test]
fn hist_out_and_plot_turn_results_into_a_distribution_and_an_svg() {
    let dir = scratch();
    let hist = dir.path().join("lat.hgrm");
    let json = dir.path().join("mem-randread.json");
    let out = keel_bench(&[
        "local",
        "--file",
        "memory",
        "--size",
        "64M",
        "--rw",
        "randread",
        "--qd",
        "4",
        "--time",
        "1s",
        "--json",
        "--hist-out",
        hist.to_str().unwrap(),
    ]);
    json_of(&out);
    std::fs::write(&json, &out.stdout).unwrap();
    let text = std::fs::read_to_string(&hist).unwrap();
    assert!(text.starts_with("   Value(us)"), "{text}");
    assert!(text.contains("#[Mean"), "{text}");
    // Percentiles climb to 1.0 and total counts never decrease.
    let rows: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("Value"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert!(rows
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(rows.last().map(|r| r.0), Some(1.0));

    let svg = dir.path().join("chart.svg");
    let out = keel_bench(&[
        "plot",
        json.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
        "--title",
        "memory randread",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"));
    assert!(chart.contains("mem-randread") && chart.contains("memory randread"));

    let out = keel_bench(&[
        "plot",
        hist.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a non-JSON input is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a keel-bench --json result"));
}

/// A user whose locked-memory limit is below the buffer pool (8 MiB by
/// default on Debian, as a new non-root user has) still runs: the engine
/// falls back to unregistered buffers instead of failing to start. Needs
/// root to become such a user (setpriv, prlimit); skipped otherwise.
#[test]
fn a_low_locked_memory_limit_falls_back_to_unregistered_buffers() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["setpriv", "prlimit"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !root || !tools {
        eprintln!("SKIPPED: needs root with setpriv and prlimit");
        return;
    }
    let dir = scratch();
    let file = dir.path().join("vol.dat");
    std::fs::write(&file, vec![0u8; 32 << 20]).unwrap();
    let open = |p: &std::path::Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o777);
    open(&file, 0o666);
    // 16 buffers of 128 KiB: 2 MiB, twice the 1 MiB limit.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["prlimit", "--memlock=1048576:1048576"])
        .arg(env!("CARGO_BIN_EXE_keel-bench"))
        .args(["local", "--file", file.to_str().unwrap(), "--size", "32M"])
        .args([
            "--rw", "randrw", "--bs", "128k", "--qd", "16", "--time", "1s", "--json",
        ])
        .output()
        .unwrap();
    let v = json_of(&out);
    assert!(v["read"]["ops"].as_u64().unwrap() > 0, "{v}");
    assert!(v["write"]["ops"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
}
