//! `oni certs`: a private certificate authority and one certificate signed by it for the
//! cluster's servers, made here without any network, for `[transport.tls]`. Every server
//! (learner, annotator, env hub) presents `cert.pem` with `key.pem`; every client trusts
//! `ca.pem`.

use anyhow::{bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::PathBuf;

#[derive(Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, cert.pem and key.pem.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Host names and IP addresses the servers are reached by (comma-separated); a client
    /// dialling any other name must set `transport.tls.domain` to one of these.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    names: Vec<String>,
    /// Replace certificates already in `--out`.
    #[arg(long)]
    force: bool,
}

pub fn certs(a: CertsArgs) -> Result<()> {
    let [ca_pem, cert_pem, key_pem] = ["ca.pem", "cert.pem", "key.pem"].map(|f| a.out.join(f));
    if !a.force {
        if let Some(p) = [&ca_pem, &cert_pem, &key_pem].into_iter().find(|p| p.exists()) {
            bail!("{} exists: pass --force to replace the certificates in {}", p.display(), a.out.display());
        }
    }
    if a.names.iter().all(|n| n.trim().is_empty()) {
        bail!("--names: give at least one host name or address");
    }
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "oni cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let names: Vec<String> = a.names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    let mut server = CertificateParams::new(names.clone()).context("--names")?;
    server.distinguished_name.push(DnType::CommonName, names[0].as_str());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca)?;

    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    std::fs::write(&ca_pem, ca.pem())?;
    std::fs::write(&cert_pem, cert.pem())?;
    write_private(&key_pem, key.serialize_pem())?;
    let abs = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    println!("# a CA and a certificate for {} in {}", names.join(", "), a.out.display());
    println!("[transport.tls]\nenabled = true");
    println!("cert = {:?}\nkey = {:?}\nca = {:?}", abs(&cert_pem), abs(&key_pem), abs(&ca_pem));
    Ok(())
}

/// The private key, readable by its owner only.
fn write_private(path: &std::path::Path, text: String) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
