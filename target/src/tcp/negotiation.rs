//! What the ICReq / ICResp exchange settles (NVMe/TCP 1.0 §3.6.2.2,
//! §3.6.2.3), turned into the receive and send parameters of each side.
//!
//! Alignment is asymmetric and easy to get backwards: HPDA is what the
//! *host* wants for data it receives (C2HData), CPDA what the *controller*
//! wants for data it receives (CapsuleCmd data, H2CData). Digests are
//! whatever the ICResp granted, in both directions.

use crate::tcp::decoder::{ConnectionParams, Role};
use crate::tcp::encoder::TxParams;
use crate::tcp::error::PduError;
use crate::tcp::pdu::{field_offset, IcReq, IcResp};

/// Receive and send parameters for one side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// For [`crate::tcp::PduDecoder::establish`].
    pub rx: ConnectionParams,
    /// For encoding what this side sends.
    pub tx: TxParams,
}

/// The parameters `role` uses after sending or receiving `icreq` and
/// `icresp`.
pub const fn negotiated(role: Role, icreq: &IcReq, icresp: &IcResp) -> Negotiated {
    let (rx_pda, tx_pda) = match role {
        Role::Controller => (icresp.cpda, icreq.hpda),
        Role::Host => (icreq.hpda, icresp.cpda),
    };
    Negotiated {
        rx: ConnectionParams {
            header_digest: icresp.digest.header,
            data_digest: icresp.digest.data,
            rx_pda,
        },
        tx: TxParams {
            header_digest: icresp.digest.header,
            data_digest: icresp.digest.data,
            pda: tx_pda,
        },
    }
}

/// Host-side check that an ICResp grants exactly the digests asked for,
/// as the Linux host requires. A mismatch is reported as an unsupported
/// DGST parameter.
pub fn check_icresp_digests(icreq: &IcReq, icresp: &IcResp) -> Result<(), PduError> {
    if icreq.digest != icresp.digest {
        return Err(PduError::UnsupportedParameter {
            offset: field_offset::DGST,
            field: "DGST",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::pdu::DigestOptions;

    const DIGESTS: DigestOptions = DigestOptions {
        header: true,
        data: false,
    };

    #[test]
    fn alignment_goes_to_the_receiver_of_the_data() {
        let icreq = IcReq {
            pfv: 0,
            hpda: 3,
            digest: DIGESTS,
            maxr2t: 0,
        };
        let icresp = IcResp {
            pfv: 0,
            cpda: 7,
            digest: DIGESTS,
            maxh2cdata: 65536,
        };
        let controller = negotiated(Role::Controller, &icreq, &icresp);
        assert_eq!(controller.rx.rx_pda, 7);
        assert_eq!(controller.tx.pda, 3);
        assert!(controller.rx.header_digest && controller.tx.header_digest);
        assert!(!controller.rx.data_digest && !controller.tx.data_digest);
        let host = negotiated(Role::Host, &icreq, &icresp);
        assert_eq!(host.rx.rx_pda, 3);
        assert_eq!(host.tx.pda, 7);
        assert_eq!(check_icresp_digests(&icreq, &icresp), Ok(()));
        let refused = IcResp {
            digest: DigestOptions::default(),
            ..icresp
        };
        assert!(check_icresp_digests(&icreq, &refused).is_err());
    }
}
