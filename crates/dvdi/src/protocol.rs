//! The Docker volume plugin protocol: endpoints, request bodies, and tolerant decoding of the
//! answers real plugins give (research `peers-and-csi.md` §2.5, `isolators.md` §4.4–4.5):
//!
//! - the body is parsed as JSON whatever the `Content-Type` says (`text/html`, `text/plain`);
//! - keys match case-insensitively, an exact match first (as Go's `encoding/json` does):
//!   `Mountpoint` and `MountPoint` are the same field;
//! - an error is a non-empty `Err` **or** `Error` with any status (200, 400, 500), or any
//!   non-2xx status; a non-JSON body's text is then the message;
//! - 404 means "not implemented" (Capabilities then defaults to scope `local`);
//! - `Get` answering `"Volume": null` without an error means "no such volume";
//! - `Opts` is always sent on Create (`{}` when empty): some plugins require the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value as Json, json};

use crate::error::{DvdiError, clean_message};

/// The `Accept` header value Docker sends (moby `transport.VersionMimetype`).
pub const MIME: &str = "application/vnd.docker.plugins.v1.2+json";

/// The `Host` header Docker sends to unix-socket plugins.
pub const UNIX_HOST: &str = "plugin.moby.localhost";

/// One endpoint of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/Plugin.Activate`.
    Activate,
    /// `/VolumeDriver.Create`.
    Create,
    /// `/VolumeDriver.Remove`.
    Remove,
    /// `/VolumeDriver.Mount`.
    Mount,
    /// `/VolumeDriver.Unmount`.
    Unmount,
    /// `/VolumeDriver.Path`.
    Path,
    /// `/VolumeDriver.Get`.
    Get,
    /// `/VolumeDriver.List`.
    List,
    /// `/VolumeDriver.Capabilities`.
    Capabilities,
}

impl Endpoint {
    /// The request path.
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Activate => "/Plugin.Activate",
            Endpoint::Create => "/VolumeDriver.Create",
            Endpoint::Remove => "/VolumeDriver.Remove",
            Endpoint::Mount => "/VolumeDriver.Mount",
            Endpoint::Unmount => "/VolumeDriver.Unmount",
            Endpoint::Path => "/VolumeDriver.Path",
            Endpoint::Get => "/VolumeDriver.Get",
            Endpoint::List => "/VolumeDriver.List",
            Endpoint::Capabilities => "/VolumeDriver.Capabilities",
        }
    }
}

/// A volume as `Get` and `List` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// `Name`.
    pub name: String,
    /// `Mountpoint`, when given and non-empty.
    pub mountpoint: Option<PathBuf>,
    /// `CreatedAt`, when given.
    pub created_at: Option<String>,
    /// `Status`, when given (free-form).
    pub status: Option<Json>,
}

/// `Capabilities.Scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// The volume exists on this node only (also the default when the plugin says nothing).
    #[default]
    Local,
    /// The volume is cluster-wide: the scheduler must enforce single attachment.
    Global,
}

/// What `/VolumeDriver.Capabilities` says (404 or an error: [`Scope::Local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    /// The scope.
    pub scope: Scope,
}

/// The request body for an endpoint.
#[must_use]
pub fn request_body(
    endpoint: Endpoint,
    name: Option<&str>,
    id: Option<&str>,
    opts: Option<&BTreeMap<String, String>>,
) -> Vec<u8> {
    let v = match endpoint {
        Endpoint::Activate => return Vec::new(),
        Endpoint::List | Endpoint::Capabilities => json!({}),
        Endpoint::Create => {
            json!({"Name": name.unwrap_or(""), "Opts": opts.cloned().unwrap_or_default()})
        }
        Endpoint::Mount | Endpoint::Unmount => {
            json!({"Name": name.unwrap_or(""), "ID": id.unwrap_or("")})
        }
        Endpoint::Remove | Endpoint::Path | Endpoint::Get => json!({"Name": name.unwrap_or("")}),
    };
    v.to_string().into_bytes()
}

/// Looks a key up in a JSON object the way Go's `encoding/json` does: an exact match first,
/// then the first key equal ignoring ASCII case.
#[must_use]
pub fn get_ci<'a>(v: &'a Json, key: &str) -> Option<&'a Json> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The error text of a decoded body: `Err`, else `Error`, when a non-empty string.
fn err_text(v: &Json) -> Option<String> {
    ["Err", "Error"].iter().find_map(|k| {
        get_ci(v, k)
            .and_then(Json::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(clean_message)
    })
}

/// Context for turning an HTTP answer into a result.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Plugin name.
    pub plugin: &'a str,
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// Volume, for volume calls.
    pub volume: Option<&'a str>,
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: &'a [u8],
}

impl Answer<'_> {
    fn plugin_err(&self, message: String) -> DvdiError {
        DvdiError::Plugin {
            plugin: self.plugin.to_owned(),
            endpoint: self.endpoint.path(),
            volume: self.volume.map(str::to_owned),
            status: self.status,
            message,
        }
    }

    fn decode_err(&self, reason: impl Into<String>) -> DvdiError {
        DvdiError::Decode {
            plugin: self.plugin.to_owned(),
            endpoint: self.endpoint.path(),
            reason: reason.into(),
        }
    }

    /// Checks the status and the error fields; returns the decoded JSON object (an empty
    /// object for an empty 2xx body).
    ///
    /// # Errors
    /// [`DvdiError::NotImplemented`] for 404 without a JSON error, [`DvdiError::Plugin`] for
    /// any error answer, [`DvdiError::Decode`] for a 2xx body that is not a JSON object.
    pub fn check(&self) -> Result<Json, DvdiError> {
        let text = String::from_utf8_lossy(self.body);
        let parsed: Option<Json> = if text.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&text).ok()
        };
        if let Some(msg) = parsed.as_ref().and_then(err_text) {
            return Err(self.plugin_err(msg));
        }
        if !(200..300).contains(&self.status) {
            if self.status == 404 {
                return Err(DvdiError::NotImplemented {
                    plugin: self.plugin.to_owned(),
                    endpoint: self.endpoint.path(),
                });
            }
            let msg = if text.trim().is_empty() {
                format!("empty body with status {}", self.status)
            } else {
                clean_message(&text)
            };
            return Err(self.plugin_err(msg));
        }
        match parsed {
            Some(v) if v.is_object() => Ok(v),
            None if text.trim().is_empty() => Ok(json!({})),
            _ => Err(self.decode_err(format!(
                "body is not a JSON object: {}",
                clean_message(&text.chars().take(200).collect::<String>())
            ))),
        }
    }

    /// `Activate`: the `Implements` list.
    ///
    /// # Errors
    /// As [`Answer::check`]; [`DvdiError::Decode`] if `Implements` is not a list of strings.
    pub fn implements(&self) -> Result<Vec<String>, DvdiError> {
        let v = self.check()?;
        match get_ci(&v, "Implements") {
            Some(Json::Array(items)) => Ok(items
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_owned)
                .collect()),
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(_) => Err(self.decode_err("Implements is not a list")),
        }
    }

    /// `Mount` and `Path`: the `Mountpoint`.
    ///
    /// # Errors
    /// As [`Answer::check`]; [`DvdiError::Decode`] when the mount point is missing, empty or
    /// not absolute.
    pub fn mountpoint(&self) -> Result<PathBuf, DvdiError> {
        let v = self.check()?;
        match get_ci(&v, "Mountpoint").and_then(Json::as_str) {
            Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(PathBuf::from(p)),
            Some(p) if !p.is_empty() => Err(self.decode_err(format!(
                "Mountpoint {:?} is not an absolute path",
                clean_message(p)
            ))),
            _ => Err(self.decode_err("no Mountpoint in the answer")),
        }
    }

    /// `Get`: the volume, `None` for `"Volume": null` (or no `Volume`).
    ///
    /// # Errors
    /// As [`Answer::check`].
    pub fn volume(&self) -> Result<Option<VolumeInfo>, DvdiError> {
        let v = self.check()?;
        match get_ci(&v, "Volume") {
            None | Some(Json::Null) => Ok(None),
            Some(vol) if vol.is_object() => Ok(Some(volume_info(vol, self.volume))),
            Some(_) => Err(self.decode_err("Volume is not an object")),
        }
    }

    /// `List`: the volumes (`null` is an empty list).
    ///
    /// # Errors
    /// As [`Answer::check`]; [`DvdiError::Decode`] if `Volumes` is not a list.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, DvdiError> {
        let v = self.check()?;
        match get_ci(&v, "Volumes") {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Array(items)) => Ok(items
                .iter()
                .filter(|i| i.is_object())
                .map(|i| volume_info(i, None))
                .collect()),
            Some(_) => Err(self.decode_err("Volumes is not a list")),
        }
    }

    /// `Capabilities`: the scope, lower-cased; anything but `global` is local.
    ///
    /// # Errors
    /// As [`Answer::check`].
    pub fn capabilities(&self) -> Result<Capabilities, DvdiError> {
        let v = self.check()?;
        let scope = get_ci(&v, "Capabilities")
            .and_then(|c| get_ci(c, "Scope"))
            .and_then(Json::as_str)
            .map(str::to_ascii_lowercase);
        Ok(Capabilities {
            scope: if scope.as_deref() == Some("global") {
                Scope::Global
            } else {
                Scope::Local
            },
        })
    }
}

fn volume_info(v: &Json, fallback_name: Option<&str>) -> VolumeInfo {
    let s = |k: &str| {
        get_ci(v, k)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    VolumeInfo {
        name: s("Name")
            .or_else(|| fallback_name.map(str::to_owned))
            .unwrap_or_default(),
        mountpoint: s("Mountpoint").map(PathBuf::from),
        created_at: s("CreatedAt"),
        status: get_ci(v, "Status").filter(|s| !s.is_null()).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ans(endpoint: Endpoint, status: u16, body: &str) -> Answer<'_> {
        Answer {
            plugin: "p",
            endpoint,
            volume: Some("v"),
            status,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn bodies() {
        let mut o = BTreeMap::new();
        assert_eq!(
            String::from_utf8(request_body(Endpoint::Create, Some("v"), None, Some(&o))).unwrap(),
            r#"{"Name":"v","Opts":{}}"#
        );
        o.insert("size".into(), "1".into());
        assert_eq!(
            String::from_utf8(request_body(Endpoint::Create, Some("v"), None, Some(&o))).unwrap(),
            r#"{"Name":"v","Opts":{"size":"1"}}"#
        );
        assert_eq!(
            String::from_utf8(request_body(Endpoint::Mount, Some("v"), Some("c1"), None)).unwrap(),
            r#"{"Name":"v","ID":"c1"}"#
        );
        assert!(request_body(Endpoint::Activate, None, None, None).is_empty());
        assert_eq!(request_body(Endpoint::List, None, None, None), b"{}");
    }

    #[test]
    fn tolerant_decoding() {
        assert_eq!(
            ans(Endpoint::Mount, 200, r#"{"MountPoint":"/m","err":""}"#)
                .mountpoint()
                .unwrap(),
            PathBuf::from("/m")
        );
        for (status, body) in [
            (200, r#"{"Err":"boom"}"#),
            (200, r#"{"Error":"boom"}"#),
            (400, r#"{"Err":"boom"}"#),
            (500, r#"{"error":"boom"}"#),
            (500, "boom"),
        ] {
            match ans(Endpoint::Mount, status, body).mountpoint() {
                Err(DvdiError::Plugin {
                    status: s, message, ..
                }) => {
                    assert_eq!((s, message.as_str()), (status, "boom"), "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            ans(Endpoint::Capabilities, 404, "404: Not Found").capabilities(),
            Err(DvdiError::NotImplemented { .. })
        ));
        assert!(matches!(
            ans(Endpoint::Mount, 200, "<html>").mountpoint(),
            Err(DvdiError::Decode { .. })
        ));
        assert!(matches!(
            ans(Endpoint::Mount, 200, r#"{"Mountpoint":"rel"}"#).mountpoint(),
            Err(DvdiError::Decode { .. })
        ));
        assert_eq!(
            ans(Endpoint::Get, 200, r#"{"Volume":null,"Err":""}"#)
                .volume()
                .unwrap(),
            None
        );
        assert_eq!(
            ans(
                Endpoint::Capabilities,
                200,
                r#"{"capabilities":{"scope":"GLOBAL"}}"#
            )
            .capabilities()
            .unwrap()
            .scope,
            Scope::Global
        );
        assert_eq!(
            ans(Endpoint::Capabilities, 200, "{}")
                .capabilities()
                .unwrap()
                .scope,
            Scope::Local
        );
        assert!(ans(Endpoint::Unmount, 200, "").check().is_ok());
        let msg = match ans(Endpoint::Get, 500, &"x\n".repeat(2000)).check() {
            Err(DvdiError::Plugin { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert!(msg.len() <= 1027 && !msg.contains('\n'));
    }
}
