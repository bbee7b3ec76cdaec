//! Listeners and the discovery log they produce (NVMe Base 2.0 §5.16.1.23,
//! Discovery Log Page; NVMe/TCP 1.0 §3.6 for the TCP fields).

use crate::controller::error::ConfigError;
use crate::controller::subsystem::Subsystem;
use crate::nvme::discovery::{
    discovery_log_len, treq, write_discovery_log, AddressFamily, DiscoveryLogEntry, SubsystemType,
    TcpSecurityType, TransportType, TRADDR_LEN, TRSVCID_LEN,
};
use crate::nvme::nqn::DISCOVERY_NQN;

/// One NVMe/TCP port the target listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    port_id: u16,
    address_family: AddressFamily,
    traddr: String,
    trsvcid: String,
}

impl Listener {
    /// A listener on `traddr` (e.g. "127.0.0.1") port `trsvcid` (e.g. "4420").
    pub fn new(
        port_id: u16,
        address_family: AddressFamily,
        traddr: &str,
        trsvcid: &str,
    ) -> Result<Self, ConfigError> {
        let printable = |text: &str| text.bytes().all(|b| (0x21..=0x7E).contains(&b));
        if traddr.is_empty() || traddr.len() > TRADDR_LEN || !printable(traddr) {
            return Err(ConfigError::InvalidListener(
                "TRADDR must be 1..=256 printable bytes",
            ));
        }
        if trsvcid.is_empty() || trsvcid.len() > TRSVCID_LEN || !printable(trsvcid) {
            return Err(ConfigError::InvalidListener(
                "TRSVCID must be 1..=32 printable bytes",
            ));
        }
        Ok(Self {
            port_id,
            address_family,
            traddr: traddr.to_owned(),
            trsvcid: trsvcid.to_owned(),
        })
    }

    /// NVM subsystem port identifier (PORTID).
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Transport address.
    pub fn traddr(&self) -> &str {
        &self.traddr
    }

    /// Transport service identifier (TCP port).
    pub fn trsvcid(&self) -> &str {
        &self.trsvcid
    }

    fn entry<'a>(
        &'a self,
        subtype: SubsystemType,
        subnqn: &'a str,
        asqsz: u16,
    ) -> DiscoveryLogEntry<'a> {
        DiscoveryLogEntry {
            trtype: TransportType::Tcp,
            adrfam: self.address_family,
            subtype,
            // What nvmet reports: no secure channel requirement stated, and
            // SQ flow control may be disabled (the Linux host asks to).
            treq: treq::SECURE_CHANNEL_NOT_SPECIFIED | treq::SQ_FLOW_CONTROL_DISABLE_SUPPORTED,
            portid: self.port_id,
            // Dynamic controller model: any controller.
            cntlid: 0xFFFF,
            asqsz,
            eflags: 0,
            trsvcid: &self.trsvcid,
            subnqn,
            traddr: &self.traddr,
            tcp_security: TcpSecurityType::None,
        }
    }
}

/// Builds the whole discovery log a host may see: for every listener, the
/// current discovery subsystem (SUBTYPE 3) and every NVM subsystem the host
/// is allowed to connect to (SUBTYPE 2). Hosts that are not allowed do not
/// learn the subsystem exists.
pub(crate) fn build_discovery_log<'a>(
    genctr: u64,
    listeners: &[Listener],
    subsystems: impl Iterator<Item = &'a Subsystem> + Clone,
    hostnqn: &str,
    asqsz: u16,
) -> Vec<u8> {
    let mut entries = Vec::new();
    for listener in listeners {
        entries.push(listener.entry(SubsystemType::CurrentDiscovery, DISCOVERY_NQN, asqsz));
        for subsystem in subsystems.clone().filter(|s| s.host_allowed(hostnqn)) {
            entries.push(listener.entry(SubsystemType::Nvm, subsystem.nqn(), asqsz));
        }
    }
    let mut log = vec![0u8; discovery_log_len(entries.len())];
    // Every field was validated when the listener and subsystem were
    // created, so writing cannot fail; if it ever did, an empty log (header
    // only, NUMREC 0) is safer than a half-written one.
    if write_discovery_log(genctr, &entries, &mut log).is_err() {
        log = vec![0u8; discovery_log_len(0)];
        let _ = write_discovery_log(genctr, &[], &mut log);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::discovery::{DiscoveryLogHeader, DISCOVERY_RECORD_LEN};

    #[test]
    fn listener_validation() {
        assert!(Listener::new(1, AddressFamily::Ipv4, "", "4420").is_err());
        assert!(Listener::new(1, AddressFamily::Ipv4, "1.2.3.4", &"9".repeat(33)).is_err());
        assert!(Listener::new(1, AddressFamily::Ipv4, "1.2.3.4", "44 20").is_err());
        assert!(Listener::new(1, AddressFamily::Ipv4, "1.2.3.4", "4420").is_ok());
    }

    #[test]
    fn log_filters_hosts() {
        let listener = Listener::new(1, AddressFamily::Ipv4, "127.0.0.1", "4420").unwrap();
        let open = Subsystem::new("nqn.2024-01.dev.keel:open", "S", "M", "F").unwrap();
        let mut closed = Subsystem::new("nqn.2024-01.dev.keel:closed", "S", "M", "F").unwrap();
        closed.allow_host("nqn.2024-01.dev.keel:host-a").unwrap();
        let subsystems = [open, closed];
        let log = build_discovery_log(
            7,
            std::slice::from_ref(&listener),
            subsystems.iter(),
            "nqn.2024-01.dev.keel:host-b",
            32,
        );
        let header: &[u8; DISCOVERY_RECORD_LEN] = log[..1024].try_into().unwrap();
        let header = DiscoveryLogHeader::parse(header);
        assert_eq!((header.genctr, header.numrec), (7, 2));
        let log = build_discovery_log(
            7,
            &[listener],
            subsystems.iter(),
            "nqn.2024-01.dev.keel:host-a",
            32,
        );
        assert_eq!(log.len(), 4 * 1024);
    }
}
