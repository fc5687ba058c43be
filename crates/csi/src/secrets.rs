//! CSI secrets from a volume spec (Mesos `Secret`): resolved at call time, persisted only as
//! references, never logged.
//!
//! * `VALUE` secrets are used inline for the current call and persisted as
//!   [`StoredSecret::Inline`] (no value): after a restart such a volume can be torn down (the
//!   node calls that undo work carry no secrets) but re-staging needs the consumer to prepare
//!   again.
//! * `REFERENCE { name, key }` secrets are read from the configured secrets directory:
//!   `<dir>/<name>` when there is no key, `<dir>/<name>/<key>` otherwise (both validated as
//!   path components). The reference is what the state record keeps.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use berth_resources::proto::{Secret, secret};
use serde::{Deserialize, Serialize};

use crate::error::{CsiError, Result};

/// What a state record keeps of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredSecret {
    /// A reference into the secrets directory.
    Reference {
        /// `Secret.Reference.name`.
        name: String,
        /// `Secret.Reference.key`.
        key: Option<String>,
    },
    /// An inline value that is deliberately not stored.
    Inline,
}

/// Resolves secret references.
#[derive(Debug, Clone, Default)]
pub struct SecretResolver {
    dir: Option<PathBuf>,
}

/// Secrets ready for one call, plus what may be persisted of them.
#[derive(Default)]
pub struct Resolved {
    /// Key → value, sent to the plugin.
    pub values: HashMap<String, String>,
    /// Key → reference, for the state record.
    pub stored: BTreeMap<String, StoredSecret>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("stored", &self.stored)
            .finish()
    }
}

impl SecretResolver {
    /// A resolver reading references from `dir` (`None`: references cannot be resolved).
    #[must_use]
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn read_ref(&self, name: &str, key: Option<&str>) -> std::result::Result<String, String> {
        let dir = self
            .dir
            .as_ref()
            .ok_or("no secrets directory is configured")?;
        let mut path = dir
            .join(berth_mount::names::validate_component(name).map_err(|e| format!("name: {e}"))?);
        if let Some(key) = key {
            path.push(
                berth_mount::names::validate_component(key).map_err(|e| format!("key: {e}"))?,
            );
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("read reference: {}", e.kind()))?;
        String::from_utf8(bytes).map_err(|_| "value is not UTF-8".to_owned())
    }

    /// Resolves a spec's secrets map for a call.
    ///
    /// # Errors
    /// [`CsiError::Secret`] naming the key (never the value).
    pub fn resolve(
        &self,
        plugin: &str,
        volume_id: &str,
        spec: &HashMap<String, Secret>,
    ) -> Result<Resolved> {
        let mut out = Resolved::default();
        for (k, s) in spec {
            let err = |reason: String| CsiError::Secret {
                plugin: plugin.to_owned(),
                volume_id: volume_id.to_owned(),
                key: k.clone(),
                reason,
            };
            let (value, stored) = match (s.r#type(), &s.value, &s.reference) {
                (secret::Type::Value, Some(v), _) => (
                    String::from_utf8(v.data.clone())
                        .map_err(|_| err("value is not UTF-8".to_owned()))?,
                    StoredSecret::Inline,
                ),
                (secret::Type::Reference, _, Some(r)) => (
                    self.read_ref(&r.name, r.key.as_deref()).map_err(err)?,
                    StoredSecret::Reference {
                        name: r.name.clone(),
                        key: r.key.clone(),
                    },
                ),
                _ => return Err(err("secret type and payload do not match".to_owned())),
            };
            out.values.insert(k.clone(), value);
            out.stored.insert(k.clone(), stored);
        }
        Ok(out)
    }

    /// Resolves what a record stored (after a restart).
    ///
    /// # Errors
    /// [`CsiError::Secret`] for an inline secret (not persisted) or an unreadable reference.
    pub fn resolve_stored(
        &self,
        plugin: &str,
        volume_id: &str,
        stored: &BTreeMap<String, StoredSecret>,
    ) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for (k, s) in stored {
            let err = |reason: String| CsiError::Secret {
                plugin: plugin.to_owned(),
                volume_id: volume_id.to_owned(),
                key: k.clone(),
                reason,
            };
            let v = match s {
                StoredSecret::Inline => {
                    return Err(err(
                        "inline secret values are not persisted; the consumer must prepare again"
                            .to_owned(),
                    ));
                }
                StoredSecret::Reference { name, key } => {
                    self.read_ref(name, key.as_deref()).map_err(err)?
                }
            };
            out.insert(k.clone(), v);
        }
        Ok(out)
    }
}
