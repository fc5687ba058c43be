//! A dvdcli-compatible command line, as a library function ([`dvdcli`]) that the
//! `berth-isolator dvdcli ...` subcommand exposes, so Mesos's own docker/volume isolator (and
//! anything else that spawns dvdcli) can use berth in its place.
//!
//! ```text
//! mount   --volumedriver=D --volumename=N [--volumeopts=k=v]... [--explicitcreate]
//! unmount --volumedriver=D --volumename=N
//! path    --volumedriver=D --volumename=N
//! create  --volumedriver=D --volumename=N [--volumeopts=k=v]...
//! remove  --volumedriver=D --volumename=N
//! get     --volumedriver=D --volumename=N
//! list    --volumedriver=D
//! version
//! ```
//!
//! `mount` prints the host mount point and a newline on stdout, like dvdcli; `get` prints the
//! name, `list` one name per line, `path` the mount point. Errors go to stderr with exit
//! status 1. Flags take `--flag=value` or `--flag value`.
//!
//! Differences from dvdcli, all on purpose:
//! - calls are balanced: dvdcli sent `Mount` for every container and one `Unmount`; here
//!   `mount`/`unmount` go through the [`VolumeManager`] under the consumer [`CLI_CONSUMER`], so
//!   (with [`crate::MountMode::PerAgent`], as the binary configures it) the plugin sees one
//!   `Mount` with `ID = agent:<id>` and one `Unmount`, and the mount point is remembered;
//! - `--volumeopts` is repeatable and never split on `,`; a value may contain `=` (dvdcli
//!   split on both, truncating values and panicking on an item without `=`);
//! - `--explicitCreate` (the spelling mesos-module-dvdi passes and dvdcli rejects) is accepted
//!   as well as `--explicitcreate`;
//! - `unmount` and `path` never create a volume (dvdcli 0.1.0 did).

use std::collections::BTreeMap;
use std::io::Write;

use crate::driver::Drivers;
use crate::error::{DvdiError, Result, invalid};
use crate::manager::VolumeManager;
use crate::names::{ConsumerId, DriverName, VolumeName};
use crate::spec::{DockerVolume, parse_option};

/// The consumer id under which `mount` and `unmount` are recorded.
pub const CLI_CONSUMER: &str = "dvdcli";

const USAGE: &str = "usage: dvdcli <mount|unmount|path|create|remove|get|list|version> \
--volumedriver=DRIVER [--volumename=NAME] [--volumeopts=KEY=VALUE]... [--explicitcreate]";

#[derive(Debug, Default)]
struct Args {
    command: String,
    driver: Option<String>,
    name: Option<String>,
    opts: BTreeMap<String, String>,
    explicit: bool,
    help: bool,
}

fn parse_bool(flag: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(invalid(flag, v, "expected true or false")),
    }
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            out.help = true;
            continue;
        }
        let Some(flag) = a.strip_prefix("--") else {
            if out.command.is_empty() {
                out.command.clone_from(a);
                continue;
            }
            return Err(invalid("argument", a, "unexpected positional argument"));
        };
        let (key, inline) = match flag.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (flag, None),
        };
        if key == "explicitcreate" || key == "explicitCreate" {
            out.explicit = match inline {
                Some(v) => parse_bool("--explicitcreate", &v)?,
                None => true,
            };
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| invalid(format!("--{key}"), "", "flag needs a value"))?,
        };
        match key {
            "volumedriver" => out.driver = Some(value),
            "volumename" => out.name = Some(value),
            "volumeopts" => {
                let (k, v) = parse_option("--volumeopts", &value)?;
                if out.opts.insert(k.clone(), v).is_some() {
                    return Err(invalid("--volumeopts", &k, "duplicate option key"));
                }
            }
            _ => return Err(invalid("flag", &format!("--{key}"), "unknown flag")),
        }
    }
    Ok(out)
}

fn need_driver(a: &Args) -> Result<DriverName> {
    match a.driver.as_deref() {
        Some(d) if !d.is_empty() => DriverName::new(d),
        _ => Err(invalid("--volumedriver", "", "missing volume driver name")),
    }
}

fn need_name(a: &Args) -> Result<VolumeName> {
    match a.name.as_deref() {
        Some(n) if !n.is_empty() => VolumeName::new(n),
        _ => Err(invalid("--volumename", "", "missing volume name")),
    }
}

async fn run<D: Drivers>(a: &Args, manager: &VolumeManager<D>, out: &mut dyn Write) -> Result<()> {
    let w = |out: &mut dyn Write, line: &str| -> Result<()> {
        writeln!(out, "{line}").map_err(|source| DvdiError::Io {
            step: "write stdout",
            path: "<stdout>".into(),
            source,
        })
    };
    let consumer = ConsumerId::new(CLI_CONSUMER)?;
    match a.command.as_str() {
        "version" => w(out, env!("CARGO_PKG_VERSION")),
        "mount" => {
            let mut v = DockerVolume::new(need_driver(a)?, need_name(a)?);
            v.options.clone_from(&a.opts);
            v.explicit_create = Some(a.explicit);
            let mp = manager.mount(&v, &consumer).await?;
            w(out, &mp.display().to_string())
        }
        "unmount" => {
            let (d, n) = (need_driver(a)?, need_name(a)?);
            let recorded = manager
                .load(d.as_str(), n.as_str())?
                .is_some_and(|r| r.consumers.contains_key(CLI_CONSUMER));
            if !recorded {
                tracing::warn!(driver = %d, volume = %n, "unmount: no mount recorded by this command; nothing to do");
            }
            manager.unmount(&d, &n, &consumer).await
        }
        "path" => {
            let (d, n) = (need_driver(a)?, need_name(a)?);
            let recorded = manager.load(d.as_str(), n.as_str())?.and_then(|r| {
                let c = r.consumers.get(CLI_CONSUMER)?;
                r.mounts.get(&c.mount_id)?.mountpoint.clone()
            });
            let mp = match recorded {
                Some(p) => Some(p),
                None => manager.drivers().driver(&d).await?.path(n.as_str()).await?,
            };
            match mp {
                Some(p) => w(out, &p.display().to_string()),
                None => Err(invalid(
                    "volume",
                    n.as_str(),
                    "the plugin reports no mount point",
                )),
            }
        }
        "create" => {
            let (d, n) = (need_driver(a)?, need_name(a)?);
            manager
                .drivers()
                .driver(&d)
                .await?
                .create(n.as_str(), &a.opts)
                .await
        }
        "remove" => manager.remove(&need_driver(a)?, &need_name(a)?).await,
        "get" => {
            let (d, n) = (need_driver(a)?, need_name(a)?);
            match manager.drivers().driver(&d).await?.get(n.as_str()).await? {
                Some(v) => w(
                    out,
                    if v.name.is_empty() {
                        n.as_str()
                    } else {
                        &v.name
                    },
                ),
                None => Err(DvdiError::NoSuchVolume {
                    plugin: d.as_str().to_owned(),
                    volume: n.as_str().to_owned(),
                    cause: None,
                }),
            }
        }
        "list" => {
            let d = need_driver(a)?;
            for v in manager.drivers().driver(&d).await?.list().await? {
                w(out, &v.name)?;
            }
            Ok(())
        }
        "" => Err(invalid("command", "", "missing command")),
        other => Err(invalid("command", other, "unknown command")),
    }
}

/// Runs one dvdcli command. `args` are the arguments after the program name (the first is
/// the command); results go to `out`, errors to `err`. Returns the exit status: 0, or 1 on
/// any error (usage errors included), as dvdcli does.
pub async fn dvdcli<D: Drivers>(
    args: &[String],
    manager: &VolumeManager<D>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let parsed = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "error: {e}\n{USAGE}");
            return 1;
        }
    };
    if parsed.help {
        let _ = writeln!(out, "{USAGE}");
        return 0;
    }
    match run(&parsed, manager, out).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn flags() {
        let a = parse_args(&s(&[
            "mount",
            "--volumedriver=rexray",
            "--volumename",
            "v1",
            "--volumeopts=size=5",
            "--volumeopts",
            "label=a=b,c",
            "--explicitCreate=true",
        ]))
        .unwrap();
        assert_eq!(a.command, "mount");
        assert_eq!(a.driver.as_deref(), Some("rexray"));
        assert_eq!(a.name.as_deref(), Some("v1"));
        assert_eq!(a.opts.get("label").map(String::as_str), Some("a=b,c"));
        assert_eq!(a.opts.get("size").map(String::as_str), Some("5"));
        assert!(a.explicit);
        assert!(parse_args(&s(&["mount", "--volumeopts=novalue"])).is_err());
        assert!(parse_args(&s(&["mount", "--bogus=1"])).is_err());
        assert!(parse_args(&s(&["mount", "--volumename"])).is_err());
        assert!(parse_args(&s(&["mount", "extra", "x"])).is_err());
        assert!(parse_args(&s(&["mount", "--volumeopts=a=1", "--volumeopts=a=2"])).is_err());
        assert!(
            !parse_args(&s(&["mount", "--explicitcreate=false"]))
                .unwrap()
                .explicit
        );
        assert!(
            parse_args(&s(&["mount", "--explicitcreate"]))
                .unwrap()
                .explicit
        );
    }
}
