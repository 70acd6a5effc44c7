//! The username a client certificate stands for: its subject common name,
//! or its first DNS or e-mail subject alternative name.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::auth::CertUser;
use crate::config::CertUsername;

/// The username for a client that showed `peer_certs` (leaf first).
pub fn cert_user(mode: CertUsername, peer_certs: Option<&[CertificateDer<'_>]>) -> CertUser {
    if mode == CertUsername::None {
        return CertUser::None;
    }
    let Some(leaf) = peer_certs.and_then(|c| c.first()) else {
        // Optional client auth and no certificate: CONNECT credentials apply.
        return CertUser::None;
    };
    match name_in(mode, leaf.as_ref()) {
        Some(name) => CertUser::Name(name.into()),
        None => CertUser::Unusable,
    }
}

fn name_in(mode: CertUsername, der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let name = match mode {
        CertUsername::None => return None,
        CertUsername::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        CertUsername::San => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some(s.to_string()),
                    _ => None,
                })
            }),
    };
    name.filter(|n| !n.is_empty())
}
