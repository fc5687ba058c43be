//! `CSI_VOLUME` volumes: a publication of the CSI volume manager, with the container as its
//! consumer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_csi::record::Mode;
use berth_mount::BindOptions;
use berth_resources::proto;

use super::{
    Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry, mode_ro,
};
use crate::container::error::{Result, csi_err, vol_err};

/// Plans `CSI_VOLUME` volume number `index`.
pub(super) fn plan(
    cx: &PlanCx<'_>,
    index: usize,
    v: &proto::Volume,
    s: &proto::volume::Source,
) -> Result<Planned> {
    let csi = s.csi_volume.clone().ok_or_else(|| {
        cx.err(
            &format!("volumes[{index}]"),
            "CSI_VOLUME without csi_volume",
        )
    })?;
    let vid = csi
        .static_provisioning
        .as_ref()
        .map(|sp| sp.volume_id.clone())
        .unwrap_or_default();
    let name = format!("CSI volume {}/{}", csi.plugin_name, vid);
    if cx.backends.csi.is_none() {
        return Err(cx.err(&name, "no CSI plugin configuration directory is set"));
    }
    let (root, rel) = cx.place(&name, &v.container_path)?;
    let mut planned = Planned::new(VolumeEntry {
        name,
        source: Source::Csi {
            plugin: csi.plugin_name.clone(),
            volume_id: vid,
        },
        root,
        path_in_root: rel,
        read_only: mode_ro(v.mode),
        bind: true,
    });
    planned.csi = Some(csi);
    Ok(planned)
}

/// Whether a volume asks for block access (the plugin publishes a device node at a file
/// target, bound as a file at the container path).
fn is_block(csi: &proto::volume::source::CsiVolume) -> bool {
    use proto::volume::source::csi_volume::volume_capability::AccessType;
    csi.static_provisioning
        .as_ref()
        .is_some_and(|sp| matches!(sp.volume_capability.access_type, Some(AccessType::Block(_))))
}

/// The CSI volume kind.
pub(super) struct Csi;

impl SourceKind for Csi {
    fn acquire<'a>(&'a self, cx: Acquire<'a>) -> BoxFuture<'a, Result<(PathBuf, BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let (Some(csi_plugins), Some(csi)) = (&cx.backends.csi, &cx.planned.csi) else {
                return Err(vol_err(cx.id, &v.name, "no CSI plugins"));
            };
            let mode = if v.read_only { Mode::Ro } else { Mode::Rw };
            let path = csi_plugins
                .publish(csi, cx.id, mode)
                .await
                .map_err(|source| csi_err(cx.id, &v.name, source))?;
            let mut opts = BindOptions::external_volume(v.read_only);
            if is_block(csi) {
                // A block volume is a device node: the task must be able to open it.
                opts.attrs.nodev = false;
            }
            Ok((path, opts))
        })
    }

    fn release<'a>(
        &'a self,
        backends: &'a Backends,
        id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Source::Csi { plugin, volume_id } = &v.source else {
                return Ok(());
            };
            let csi = backends
                .csi
                .as_ref()
                .ok_or_else(|| vol_err(id, &v.name, "no CSI plugins configured to release it"))?;
            csi.unpublish(plugin, volume_id, id)
                .await
                .map_err(|source| csi_err(id, &v.name, source))
        })
    }

    fn source_path<'a>(
        &'a self,
        backends: &'a Backends,
        _id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            let Source::Csi { plugin, volume_id } = &v.source else {
                return None;
            };
            let p = backends.csi.as_ref()?.plugin(plugin).await.ok()?;
            let dir = p.manager().mount_dir(volume_id).ok()?;
            Some(dir.join(if v.read_only { "target-ro" } else { "target" }))
        })
    }

    fn consumers(
        &self,
        backends: &Backends,
        _id: &str,
        v: &VolumeEntry,
        _users: &BTreeMap<&Path, Vec<String>>,
    ) -> Vec<String> {
        let Source::Csi { plugin, volume_id } = &v.source else {
            return Vec::new();
        };
        backends
            .csi
            .as_ref()
            .and_then(|c| c.plugin_now(plugin))
            .and_then(|p| p.manager().load(volume_id).ok().flatten())
            .map(|r| r.consumers.into_keys().collect())
            .unwrap_or_default()
    }
}
