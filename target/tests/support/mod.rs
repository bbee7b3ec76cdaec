//! A real keeld child process for integration tests (each test crate uses
//! part of it, hence `dead_code` allowed): started with the given
//! flags, ready once it prints `keeld listening on ADDR`, stopped by its PID
//! (SIGTERM for a clean stop, SIGKILL on drop so a failing test leaves no
//! process behind).

#![allow(dead_code)]

pub mod cluster;
pub mod delay;
pub mod io;
pub mod ports;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use ports::free_ports;

pub struct Keeld {
    pub child: Option<Child>,
    /// The NVMe/TCP listener.
    pub addr: SocketAddr,
    /// The metrics endpoint, when `--metrics` was given.
    pub metrics: Option<SocketAddr>,
}

impl Keeld {
    /// Starts keeld with `args`; `Err` with its exit status if it stopped
    /// before listening.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Result<Keeld, ExitStatus> {
        let with_metrics = args.iter().any(|a| a.as_ref() == "--metrics");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keeld"))
            .args(args)
            .env(
                "KEEL_LOG",
                std::env::var("KEEL_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn keeld");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("read keeld's first line");
        let Some(addr) = line.trim().strip_prefix("keeld listening on ") else {
            return Err(child.wait().expect("wait"));
        };
        let addr = addr.parse().expect("listener address");
        let metrics = with_metrics.then(|| {
            line.clear();
            reader
                .read_line(&mut line)
                .expect("read keeld's metrics line");
            line.trim()
                .strip_prefix("keeld metrics on http://")
                .and_then(|url| url.trim_end_matches("/metrics").parse().ok())
                .unwrap_or_else(|| panic!("unexpected metrics line from keeld: {line:?}"))
        });
        Ok(Keeld {
            child: Some(child),
            addr,
            metrics,
        })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().map_or(0, |c| c.id() as i32))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("kill");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// One gauge or counter (without labels) from the metrics endpoint.
    pub fn gauge(&self, name: &str) -> Option<u64> {
        let mut stream = TcpStream::connect(self.metrics?).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: keel\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    }

    /// Waits (bounded) until `gauge(name)` is `value`.
    pub fn wait_gauge(&self, name: &str, value: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.gauge(name);
            if now == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {now:?}, not {value}, after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("child");
        child.wait().expect("wait")
    }

    /// SIGKILL, as a crash.
    pub fn kill9(mut self) {
        self.signal(Signal::SIGKILL);
        let mut child = self.child.take().expect("child");
        let _ = child.wait();
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// keeld serving subsystem `nqn` on an ephemeral port with its metrics
/// endpoint and 256 buffers, plus `args` (backend, replication flags).
pub fn serve(nqn: &str, args: &[String]) -> Keeld {
    Keeld::spawn(&serve_args(nqn, args))
        .unwrap_or_else(|status| panic!("keeld exited early: {status}"))
}

/// The runtime flags of every test keeld: unpinned (tests share the
/// machine's cores), its metrics on an ephemeral port, a small pool.
pub const RUNTIME_ARGS: [&str; 5] = ["--no-pin", "--metrics", "127.0.0.1:0", "--buffers", "256"];

/// [`serve`]'s command line: `nqn` on an ephemeral port with
/// [`RUNTIME_ARGS`], then `args`.
pub fn serve_args(nqn: &str, args: &[String]) -> Vec<String> {
    ["--listen", "127.0.0.1:0", "--nqn", nqn]
        .into_iter()
        .chain(RUNTIME_ARGS)
        .map(str::to_string)
        .chain(args.iter().cloned())
        .collect()
}

/// One scrape of `keeld`'s metrics endpoint, parsed by a real parser.
pub fn scrape(keeld: &Keeld) -> prometheus_parse::Scrape {
    let mut stream =
        TcpStream::connect(keeld.metrics.expect("metrics address")).expect("connect to metrics");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: keel\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (_, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text format")
}
