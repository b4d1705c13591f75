//! Test certificates made at run time with rcgen: a CA, and leaf certificates it signs, as PEM
//! text, and the PEM files tests hand to configurations. Shared by the bookie TLS tests (tests/bookie_tls.rs) and the etcd TLS tests
//! (metadata/tests/etcd_tls.rs, which include this file by path).
//!
//! Invariant: every key is fresh (nothing is stored in the repository), and a leaf carries
//! exactly the subject alternative names and the one extended key usage it is given.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

/// A self-signed CA named `name`: its certificate, and the issuer that signs leaves with it.
pub(crate) fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

/// A leaf certificate signed by `issuer`: (certificate PEM, key PEM).
pub(crate) fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A certificate (chain of one) and its key, written as PEM files.
pub(crate) struct Pem {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Writes `text` to the file `name` in `dir` and names it.
pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a `leaf` as `<name>.pem` and `<name>.key` in `dir`.
pub(crate) fn write_pem(dir: &Path, name: &str, (cert, key): (String, String)) -> Pem {
    Pem {
        cert: write_file(dir, &format!("{name}.pem"), &cert),
        key: write_file(dir, &format!("{name}.key"), &key),
    }
}
