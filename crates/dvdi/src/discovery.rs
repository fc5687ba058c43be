//! Plugin discovery, as Docker's `pkg/plugins` does it.
//!
//! For a plugin name `n` (research `isolators.md` §4.2):
//! 1. in each socket root (default `/run/docker/plugins`): `n.sock`, then `n/n.sock`; the file
//!    must be a socket; the address is `unix://<path>`;
//! 2. in each spec root (default `/etc/docker/plugins`, then `/usr/lib/docker/plugins`):
//!    `n.spec`, `n/n.spec`, `n.json`, `n/n.json`; the first match wins. A `.spec` holds one
//!    URL (`unix:///path` or `tcp://host:port`; a scheme is required); a `.json` holds
//!    `{"Name", "Addr", "TLSConfig"}`.
//!
//! Before the files, explicitly [`Discovery::register`]ed addresses are consulted (for
//! managed v2 plugins whose socket lives under a plugin id only the Docker daemon knows). A v2
//! name without a tag also finds `<name>:latest`, and the reverse ([`DriverName::aliases`]).
//! The roots are configurable; nothing is hard-coded in the lookups.
//!
//! TLS (`https://` addresses, or a `TLSConfig` on a `tcp://` address) is parsed but not
//! spoken: it yields [`DvdiError::Unsupported`] instead of a silently insecure connection.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{DvdiError, Result};
use crate::names::DriverName;
use crate::protocol::get_ci;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over plain TCP.
    Tcp(String),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix://{}", p.display()),
            Addr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The TLS settings of a `.json` spec (kept for diagnostics; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `InsecureSkipVerify` (forced to true when `CAFile` is empty, as Docker does).
    pub insecure_skip_verify: bool,
    /// `CAFile`.
    pub ca_file: Option<PathBuf>,
    /// `CertFile`.
    pub cert_file: Option<PathBuf>,
    /// `KeyFile`.
    pub key_file: Option<PathBuf>,
}

/// A discovered plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginAddr {
    /// The name it was looked up by.
    pub name: String,
    /// Its address.
    pub addr: Addr,
    /// The file it came from (`None` for a registered address).
    pub source: Option<PathBuf>,
}

/// The discovery roots and registered addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Directories searched for `<name>.sock` and `<name>/<name>.sock`, in order.
    pub socket_dirs: Vec<PathBuf>,
    /// Directories searched for `.spec` and `.json` files, in order.
    pub spec_dirs: Vec<PathBuf>,
    registered: BTreeMap<String, Addr>,
}

impl Default for Discovery {
    /// Docker's roots: `/run/docker/plugins`; `/etc/docker/plugins`, `/usr/lib/docker/plugins`.
    fn default() -> Self {
        Self {
            socket_dirs: vec![PathBuf::from("/run/docker/plugins")],
            spec_dirs: vec![
                PathBuf::from("/etc/docker/plugins"),
                PathBuf::from("/usr/lib/docker/plugins"),
            ],
            registered: BTreeMap::new(),
        }
    }
}

impl Discovery {
    /// Discovery with the given roots and nothing registered.
    #[must_use]
    pub fn with_roots(socket_dirs: Vec<PathBuf>, spec_dirs: Vec<PathBuf>) -> Self {
        Self {
            socket_dirs,
            spec_dirs,
            registered: BTreeMap::new(),
        }
    }

    /// Registers an address for a plugin name; it wins over the files.
    pub fn register(&mut self, name: &DriverName, addr: Addr) {
        self.registered.insert(name.as_str().to_owned(), addr);
    }

    /// Every directory a lookup reads (for error messages).
    #[must_use]
    pub fn searched(&self) -> Vec<PathBuf> {
        self.socket_dirs
            .iter()
            .chain(self.spec_dirs.iter())
            .cloned()
            .collect()
    }

    /// Finds the plugin `name` (then its aliases) once, without retrying.
    ///
    /// # Errors
    /// [`DvdiError::NotFound`]; [`DvdiError::Spec`] for an unreadable or malformed spec file;
    /// [`DvdiError::Unsupported`] for a TLS address.
    pub fn lookup(&self, name: &DriverName) -> Result<PluginAddr> {
        let mut names = vec![name.as_str().to_owned()];
        names.extend(name.aliases());
        for n in &names {
            if let Some(found) = self.lookup_one(name.as_str(), n)? {
                return Ok(found);
            }
        }
        Err(DvdiError::NotFound {
            plugin: name.as_str().to_owned(),
            searched: self.searched(),
        })
    }

    fn lookup_one(&self, plugin: &str, n: &str) -> Result<Option<PluginAddr>> {
        if let Some(addr) = self.registered.get(n) {
            return Ok(Some(PluginAddr {
                name: plugin.to_owned(),
                addr: addr.clone(),
                source: None,
            }));
        }
        let base = n.rsplit('/').next().unwrap_or(n);
        for dir in &self.socket_dirs {
            for p in [
                dir.join(format!("{n}.sock")),
                dir.join(n).join(format!("{base}.sock")),
            ] {
                if is_socket(&p) {
                    return Ok(Some(PluginAddr {
                        name: plugin.to_owned(),
                        addr: Addr::Unix(p.clone()),
                        source: Some(p),
                    }));
                }
            }
        }
        for dir in &self.spec_dirs {
            for p in [
                dir.join(format!("{n}.spec")),
                dir.join(n).join(format!("{base}.spec")),
                dir.join(format!("{n}.json")),
                dir.join(n).join(format!("{base}.json")),
            ] {
                if !p.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&p).map_err(|e| DvdiError::Spec {
                    plugin: plugin.to_owned(),
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                let addr = if p.extension().is_some_and(|e| e == "json") {
                    parse_json_spec(plugin, &p, &text)?
                } else {
                    parse_url(plugin, &p, text.trim(), None)?
                };
                return Ok(Some(PluginAddr {
                    name: plugin.to_owned(),
                    addr,
                    source: Some(p),
                }));
            }
        }
        Ok(None)
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

fn spec_err(plugin: &str, path: &Path, reason: impl Into<String>) -> DvdiError {
    DvdiError::Spec {
        plugin: plugin.to_owned(),
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a plugin URL from a `.spec` or a `.json` `Addr`.
fn parse_url(plugin: &str, path: &Path, url: &str, tls: Option<&TlsConfig>) -> Result<Addr> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(spec_err(
            plugin,
            path,
            format!("unknown protocol in {url:?} (a scheme such as unix:// or tcp:// is required)"),
        ));
    };
    match scheme {
        "unix" => {
            let p = Path::new(rest);
            if !p.is_absolute() {
                return Err(spec_err(
                    plugin,
                    path,
                    "unix:// address must be an absolute path",
                ));
            }
            Ok(Addr::Unix(p.to_owned()))
        }
        "tcp" | "http" => {
            if tls.is_some() {
                return Err(DvdiError::Unsupported {
                    plugin: plugin.to_owned(),
                    addr: url.to_owned(),
                    reason: "TLSConfig is set and TLS is not supported by berth-dvdi",
                });
            }
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
                return Err(spec_err(
                    plugin,
                    path,
                    format!("bad tcp address {url:?} (expected tcp://host:port)"),
                ));
            }
            Ok(Addr::Tcp(hostport.to_owned()))
        }
        "https" => Err(DvdiError::Unsupported {
            plugin: plugin.to_owned(),
            addr: url.to_owned(),
            reason: "TLS is not supported by berth-dvdi",
        }),
        other => Err(spec_err(
            plugin,
            path,
            format!("unknown protocol {other:?}"),
        )),
    }
}

/// Parses a `.json` spec (`Name`, `Addr`, `TLSConfig`; keys case-insensitive as in Go).
fn parse_json_spec(plugin: &str, path: &Path, text: &str) -> Result<Addr> {
    let v: Json =
        serde_json::from_str(text).map_err(|e| spec_err(plugin, path, format!("not JSON: {e}")))?;
    let addr = get_ci(&v, "Addr")
        .and_then(Json::as_str)
        .ok_or_else(|| spec_err(plugin, path, "no Addr"))?;
    let tls = match get_ci(&v, "TLSConfig") {
        None | Some(Json::Null) => None,
        Some(t) => {
            let s = |k: &str| {
                get_ci(t, k)
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            };
            let ca_file = s("CAFile");
            Some(TlsConfig {
                insecure_skip_verify: ca_file.is_none()
                    || get_ci(t, "InsecureSkipVerify").and_then(Json::as_bool) == Some(true),
                ca_file,
                cert_file: s("CertFile"),
                key_file: s("KeyFile"),
            })
        }
    };
    parse_url(plugin, path, addr.trim(), tls.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = Path::new("/x.spec");
        assert_eq!(
            parse_url("p", p, "unix:///run/p.sock", None).unwrap(),
            Addr::Unix("/run/p.sock".into())
        );
        assert_eq!(
            parse_url("p", p, "tcp://127.0.0.1:8080", None).unwrap(),
            Addr::Tcp("127.0.0.1:8080".into())
        );
        assert!(matches!(
            parse_url("p", p, "/run/p.sock", None),
            Err(DvdiError::Spec { .. })
        ));
        assert!(matches!(
            parse_url("p", p, "unix://rel.sock", None),
            Err(DvdiError::Spec { .. })
        ));
        assert!(matches!(
            parse_url("p", p, "ftp://x:1", None),
            Err(DvdiError::Spec { .. })
        ));
        assert!(matches!(
            parse_url("p", p, "tcp://host", None),
            Err(DvdiError::Spec { .. })
        ));
        assert!(matches!(
            parse_url("p", p, "https://h:1", None),
            Err(DvdiError::Unsupported { .. })
        ));
    }

    #[test]
    fn json_spec() {
        let p = Path::new("/x.json");
        assert_eq!(
            parse_json_spec("p", p, r#"{"Name":"p","Addr":"tcp://h:1"}"#).unwrap(),
            Addr::Tcp("h:1".into())
        );
        assert_eq!(
            parse_json_spec("p", p, r#"{"name":"p","addr":"unix:///s.sock"}"#).unwrap(),
            Addr::Unix("/s.sock".into())
        );
        assert!(matches!(
            parse_json_spec("p", p, r#"{"Addr":"tcp://h:1","TLSConfig":{"CAFile":""}}"#),
            Err(DvdiError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_json_spec("p", p, "nope"),
            Err(DvdiError::Spec { .. })
        ));
        assert!(matches!(
            parse_json_spec("p", p, "{}"),
            Err(DvdiError::Spec { .. })
        ));
    }
}
