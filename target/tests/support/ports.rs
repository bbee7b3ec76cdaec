//! Ports for test keelds to listen on, chosen before they start (shared
//! with keelctl's tests, which include this file by path).

/// `N` distinct ports on loopback, free when asked, for a keeld to listen
/// on later (its replication port, which the other copies must know in
/// advance).
///
/// They come from below the kernel's ephemeral range: a port taken from
/// that range (bind to port 0) was free only for a moment, and another
/// test's keeld listening on port 0, or any outgoing connection, could get
/// it before this keeld bound it ("Address already in use", seen in the
/// membership tests). Below it nothing is handed out behind a test's back;
/// a counter keeps the tests of one process apart, and the process ID
/// picks where a process starts.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let count = ephemeral.saturating_sub(FIRST);
    assert!(
        count >= 1_000,
        "the ephemeral port range starts at {ephemeral}: too few ports below it for the tests"
    );
    let start = std::process::id().wrapping_mul(2_654_435_761) % count;
    let mut held = Vec::with_capacity(N);
    while held.len() < N {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < count, "out of test ports");
        let port = u16::try_from(FIRST + (start + n) % count).expect("a port");
        // Taken by something else: the next one.
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().expect("free port").port())
}
