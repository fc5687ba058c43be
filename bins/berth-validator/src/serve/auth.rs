//! Who is calling: the principal of a call comes from how it authenticated, never from its body.
//!
//! * TLS client certificates (`--client-ca`): the principal is the subject common name of the
//!   verified leaf certificate ([`subject_common_name`]).
//! * HTTP basic credentials (`--credentials FILE`, the Mesos credentials JSON
//!   `{"credentials": [{"principal": "...", "secret": "..."}]}`), in the call's `authorization`
//!   metadata: `Basic base64(principal:secret)` ([`Credentials::verify`]).
//! * On a unix socket, the peer's uid (`--uid-principals FILE`,
//!   `{"principals": [{"uid": 1000, "principal": "..."}]}`).
//!
//! A call that carries a certificate is authenticated by it; else one with an `authorization`
//! entry by that (a wrong one is refused, whatever else the call has); else by the peer's uid.
//! With any method configured, a call that none authenticates is refused (UNAUTHENTICATED).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// A credentials or uid-principals file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// Reading the file failed.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The file is not of the expected shape (for credentials only the position: serde's
    /// message could quote a secret).
    #[error("{}: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: String,
    },
    /// Something in the file is not allowed (an empty or duplicate principal, a principal with
    /// a `:`, a duplicate uid).
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: String,
    },
}

fn read(path: &Path) -> Result<String, AuthFileError> {
    std::fs::read_to_string(path).map_err(|error| AuthFileError::Read {
        path: path.to_owned(),
        error,
    })
}

fn invalid(path: &Path, error: impl Into<String>) -> AuthFileError {
    AuthFileError::Invalid {
        path: path.to_owned(),
        error: error.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials (HTTP basic).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<Credential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    principal: String,
    secret: String,
}

/// Principals and their secrets, from a Mesos credentials file. `Debug` shows the principals
/// only.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut principals: Vec<&String> = self.secrets.keys().collect();
        principals.sort();
        f.debug_struct("Credentials")
            .field("principals", &principals)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads a Mesos credentials file (JSON).
    ///
    /// # Errors
    /// The file cannot be read, is not `{"credentials": [{"principal", "secret"}]}`, or has an
    /// empty or duplicate principal, or a principal containing `:`.
    pub fn load(path: &Path) -> Result<Credentials, AuthFileError> {
        Credentials::parse(&read(path)?, path)
    }

    /// Reads the text of a credentials file (`path` only names it in errors).
    ///
    /// # Errors
    /// As [`Credentials::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Credentials, AuthFileError> {
        let file: CredentialsFile =
            serde_json::from_str(text).map_err(|e| AuthFileError::Json {
                path: path.to_owned(),
                // Only where: serde's message could quote a value, and values are secrets.
                error: format!(
                    "expected {{\"credentials\": [{{\"principal\": ..., \"secret\": ...}}]}} \
                     (error at line {} column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        let mut secrets = HashMap::new();
        for c in file.credentials {
            if c.principal.is_empty() || c.principal.contains(':') {
                return Err(invalid(
                    path,
                    format!(
                        "principal '{}' is empty or contains ':' (basic credentials cannot \
                         carry it)",
                        c.principal
                    ),
                ));
            }
            if secrets.insert(c.principal.clone(), c.secret).is_some() {
                return Err(invalid(
                    path,
                    format!("principal '{}' appears twice", c.principal),
                ));
            }
        }
        Ok(Credentials { secrets })
    }

    /// How many principals there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The principal of an `authorization` value `Basic base64(principal:secret)`.
    ///
    /// # Errors
    /// A malformed value, an unknown principal or a wrong secret (the message never says which
    /// of the last two, and never holds the secret).
    pub fn verify(&self, authorization: &[u8]) -> Result<String, String> {
        let (principal, secret) = parse_basic(authorization)?;
        match self.secrets.get(&principal) {
            Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {
                Ok(principal)
            }
            _ => Err(format!(
                "wrong principal or secret (principal '{principal}')"
            )),
        }
    }
}

/// Splits `Basic base64(principal:secret)` (the scheme case-insensitively, as RFC 7617 says).
///
/// # Errors
/// Not the basic scheme, not base64, not UTF-8, or no `:`.
pub fn parse_basic(value: &[u8]) -> Result<(String, String), String> {
    let value = std::str::from_utf8(value)
        .map_err(|_| "the authorization value is not text".to_owned())?
        .trim();
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| "the authorization value must be 'Basic <base64>'".to_owned())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!(
            "authorization scheme '{scheme}' is not supported: use Basic"
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "the basic credentials are not base64".to_owned())?;
    let text =
        String::from_utf8(decoded).map_err(|_| "the basic credentials are not UTF-8".to_owned())?;
    let (principal, secret) = text
        .split_once(':')
        .ok_or_else(|| "the basic credentials must be principal:secret".to_owned())?;
    Ok((principal.to_owned(), secret.to_owned()))
}

/// Compares without an early exit on the first differing byte (the length is not hidden).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Unix peers.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UidFile {
    principals: Vec<UidPrincipal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UidPrincipal {
    uid: u32,
    principal: String,
}

/// Unix uids and their principals.
#[derive(Clone, Debug, Default)]
pub struct UidPrincipals {
    principals: HashMap<u32, String>,
}

impl UidPrincipals {
    /// Reads `{"principals": [{"uid": 1000, "principal": "..."}]}`.
    ///
    /// # Errors
    /// The file cannot be read, is not of that shape, or has a duplicate uid or an empty
    /// principal.
    pub fn load(path: &Path) -> Result<UidPrincipals, AuthFileError> {
        UidPrincipals::parse(&read(path)?, path)
    }

    /// Reads the text of a uid-principals file (`path` only names it in errors).
    ///
    /// # Errors
    /// As [`UidPrincipals::load`].
    pub fn parse(text: &str, path: &Path) -> Result<UidPrincipals, AuthFileError> {
        let file: UidFile = serde_json::from_str(text).map_err(|e| AuthFileError::Json {
            path: path.to_owned(),
            error: format!(
                "expected {{\"principals\": [{{\"uid\": ..., \"principal\": ...}}]}}: {e}"
            ),
        })?;
        let mut principals = HashMap::new();
        for p in file.principals {
            if p.principal.is_empty() {
                return Err(invalid(
                    path,
                    format!("uid {} has an empty principal", p.uid),
                ));
            }
            if principals.insert(p.uid, p.principal).is_some() {
                return Err(invalid(path, format!("uid {} appears twice", p.uid)));
            }
        }
        Ok(UidPrincipals { principals })
    }

    /// The principal of `uid`.
    #[must_use]
    pub fn get(&self, uid: u32) -> Option<&str> {
        self.principals.get(&uid).map(String::as_str)
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates.

/// One DER element: its tag, its contents and what follows it. Definite lengths of at most
/// four length bytes (anything else is not DER a certificate uses).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().try_fold(0usize, |acc, b| {
            acc.checked_mul(256)?.checked_add(usize::from(*b))
        })?
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject common name of a DER certificate (X.509 `tbsCertificate.subject`, attribute
/// 2.5.4.3), as UTF8String, PrintableString or IA5String.
///
/// # Errors
/// The certificate does not parse that far, its subject has no common name or more than one,
/// or the name is empty or of another string type.
pub fn subject_common_name(der: &[u8]) -> Result<String, String> {
    fn malformed() -> String {
        "the client certificate is not DER X.509".to_owned()
    }
    fn element(input: &[u8], want: u8) -> Result<(&[u8], &[u8]), String> {
        match tlv(input) {
            Some((tag, contents, rest)) if tag == want => Ok((contents, rest)),
            _ => Err(malformed()),
        }
    }
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let mut rest = match tlv(tbs) {
        Some((VERSION, _, after)) => after,
        Some(_) => tbs,
        None => return Err(malformed()),
    };
    for _ in 0..4 {
        rest = tlv(rest).ok_or_else(malformed)?.2;
    }
    let (mut rdns, _) = element(rest, SEQUENCE)?;
    let mut names = Vec::new();
    while !rdns.is_empty() {
        let (mut set, after) = element(rdns, SET)?;
        rdns = after;
        while !set.is_empty() {
            let (attribute, after) = element(set, SEQUENCE)?;
            set = after;
            let (oid, value) = element(attribute, OID)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = tlv(value).ok_or_else(malformed)?;
                names.push((tag, text));
            }
        }
    }
    let [(tag, text)] = names.as_slice() else {
        return Err(format!(
            "the client certificate's subject must have one common name (it has {})",
            names.len()
        ));
    };
    // UTF8String, PrintableString, IA5String.
    if !matches!(tag, 0x0c | 0x13 | 0x16) {
        return Err(format!(
            "the client certificate's common name has string type {tag:#04x}; use UTF8String"
        ));
    }
    match std::str::from_utf8(text) {
        Ok(name) if !name.is_empty() => Ok(name.to_owned()),
        Ok(_) => Err("the client certificate's common name is empty".to_owned()),
        Err(_) => Err("the client certificate's common name is not UTF-8".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// The authenticator.

/// How calls authenticate; nothing configured means nobody is authenticated (every call's
/// principal is what its request says).
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    /// TLS with a client CA: the verified client certificate's common name.
    pub client_certificates: bool,
    /// HTTP basic credentials.
    pub credentials: Option<Credentials>,
    /// Unix peers by uid.
    pub uids: Option<UidPrincipals>,
}

/// Where the files of an [`Authenticator`] are.
#[derive(Clone, Debug, Default)]
pub struct AuthFiles {
    /// `--credentials`.
    pub credentials: Option<PathBuf>,
    /// `--uid-principals`.
    pub uid_principals: Option<PathBuf>,
}

impl Authenticator {
    /// Whether any method is configured.
    #[must_use]
    pub fn configured(&self) -> bool {
        self.client_certificates || self.credentials.is_some() || self.uids.is_some()
    }

    /// The authenticated principal of a call: `None` when no method is configured.
    ///
    /// # Errors
    /// UNAUTHENTICATED: a method is configured and the call does not authenticate by any.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        if !self.configured() {
            return Ok(None);
        }
        if self.client_certificates
            && let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            return subject_common_name(leaf.as_ref())
                .map(Some)
                .map_err(Status::unauthenticated);
        }
        if let Some(value) = request.metadata().get("authorization") {
            let Some(credentials) = &self.credentials else {
                return Err(Status::unauthenticated(
                    "this server takes no basic credentials (no --credentials)",
                ));
            };
            return credentials
                .verify(value.as_bytes())
                .map(Some)
                .map_err(Status::unauthenticated);
        }
        if let Some(uids) = &self.uids
            && let Some(cred) = request
                .extensions()
                .get::<UdsConnectInfo>()
                .and_then(|info| info.peer_cred)
        {
            return match uids.get(cred.uid()) {
                Some(principal) => Ok(Some(principal.to_owned())),
                None => Err(Status::unauthenticated(format!(
                    "uid {} has no principal in --uid-principals",
                    cred.uid()
                ))),
            };
        }
        Err(Status::unauthenticated(
            "this server authenticates its callers: present a client certificate, basic \
             credentials ('authorization: Basic ...') or, on its unix socket, a mapped uid",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn basic(text: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
        .into_bytes()
    }

    #[test]
    fn credentials_verify_the_right_secret_only() {
        let creds = Credentials::parse(
            r#"{"credentials": [{"principal": "p1", "secret": "s3cret"},
                {"principal": "p2", "secret": "other"}]}"#,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds.verify(&basic("p1:s3cret")).unwrap(), "p1");
        assert_eq!(creds.verify(b"basic cDI6b3RoZXI=").unwrap(), "p2");
        for wrong in [basic("p1:other"), basic("p3:s3cret"), basic("p1:s3cret2")] {
            let e = creds.verify(&wrong).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        for malformed in [&b"Bearer abc"[..], b"Basic !!!", b"Basic", b"\xff"] {
            assert!(creds.verify(malformed).is_err());
        }
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    #[test]
    fn credentials_files_are_checked() {
        for bad in [
            "[]",
            r#"{"credentials": [{"principal": "a:b", "secret": "s"}]}"#,
            r#"{"credentials": [{"principal": "", "secret": "s"}]}"#,
            r#"{"credentials": [{"principal": "a", "secret": "s"}, {"principal": "a", "secret": "t"}]}"#,
            r#"{"credentials": [{"principal": "a", "secret": "s", "extra": 1}]}"#,
        ] {
            let e = Credentials::parse(bad, Path::new("c.json")).unwrap_err();
            assert!(!e.to_string().contains("\"s\""), "{e}");
        }
        let uids = UidPrincipals::parse(
            r#"{"principals": [{"uid": 0, "principal": "ops"}]}"#,
            Path::new("u.json"),
        )
        .unwrap();
        assert_eq!(uids.get(0), Some("ops"));
        assert_eq!(uids.get(1), None);
        assert!(
            UidPrincipals::parse(
                r#"{"principals": [{"uid": 0, "principal": "a"}, {"uid": 0, "principal": "b"}]}"#,
                Path::new("u.json"),
            )
            .is_err()
        );
    }

    #[test]
    fn der_elements_are_bounded() {
        assert_eq!(tlv(&[0x30, 0x00]), Some((0x30, &[][..], &[][..])));
        assert_eq!(tlv(&[0x30, 0x01]), None);
        assert_eq!(
            tlv(&[0x30, 0x81, 0x01, 0xaa, 0xbb]),
            Some((0x30, &[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert!(subject_common_name(&[]).is_err());
        assert!(subject_common_name(&[0x30, 0x02, 0x30, 0x00]).is_err());
    }
}
