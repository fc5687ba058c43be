//! Docker volume-driver volumes: `DOCKER_VOLUME` and the DVDI environment contract
//! (`DVDI_VOLUME_NAME`, `_DRIVER`, `_OPTS`, `_CONTAINERPATH`, `_EXPLICITCREATE`, suffixes
//! 1-9): one Mount per consumer, with the container as the consumer `ID`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_mount::BindOptions;
use berth_resources::proto;

use super::{
    Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry, mode_ro,
};
use crate::container::error::{Result, dvdi_err, vol_err};

/// Plans `DOCKER_VOLUME` volume number `index`.
pub(super) fn plan(cx: &PlanCx<'_>, index: usize, v: &proto::Volume) -> Result<Planned> {
    let at = format!("volumes[{index}]");
    let dv = berth_dvdi::spec::from_mesos(v)
        .map_err(|e| cx.err(&at, e.to_string()))?
        .ok_or_else(|| cx.err(&at, "DOCKER_VOLUME without docker_volume"))?;
    let name = format!("Docker volume {}/{}", dv.driver.as_str(), dv.name.as_str());
    let (root, rel) = cx.place(&name, &v.container_path)?;
    let mut planned = Planned::new(VolumeEntry {
        name,
        source: Source::Docker {
            driver: dv.driver.as_str().to_owned(),
            name: dv.name.as_str().to_owned(),
        },
        root,
        path_in_root: rel,
        read_only: mode_ro(v.mode),
        bind: true,
    });
    planned.docker = Some(dv);
    Ok(planned)
}

/// Plans the volumes of the DVDI environment contract.
pub(crate) fn plan_env(cx: &PlanCx<'_>) -> Result<Vec<Planned>> {
    let env = berth_dvdi::spec::from_env(
        cx.cfg
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| cx.err("DVDI_VOLUME_* environment", e.to_string()))?;
    for w in &env.warnings {
        tracing::warn!(container = %cx.id(), warning = %w, "DVDI environment");
    }
    let mut out = Vec::with_capacity(env.volumes.len());
    for dv in env.volumes {
        let name = format!(
            "Docker volume {}/{} (DVDI environment)",
            dv.driver.as_str(),
            dv.name.as_str()
        );
        let read_only = dv.mode == berth_dvdi::Mode::Ro;
        let (root, rel, bind) = match &dv.container_path {
            Some(p) => {
                let text = p
                    .to_str()
                    .ok_or_else(|| cx.err(&name, "container path is not UTF-8"))?;
                let (root, rel) = cx.place(&name, text)?;
                (root, rel, true)
            }
            // The DVDI contract without a container path: the task uses the host mount point.
            None => (cx.cfg.sandbox.clone(), PathBuf::new(), false),
        };
        let mut planned = Planned::new(VolumeEntry {
            name,
            source: Source::Docker {
                driver: dv.driver.as_str().to_owned(),
                name: dv.name.as_str().to_owned(),
            },
            root,
            path_in_root: rel,
            read_only,
            bind,
        });
        planned.docker = Some(dv);
        out.push(planned);
    }
    Ok(out)
}

/// The Docker volume-driver kind.
pub(super) struct Docker;

impl SourceKind for Docker {
    fn acquire<'a>(&'a self, cx: Acquire<'a>) -> BoxFuture<'a, Result<(PathBuf, BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let (Some(docker), Some(dv)) = (&cx.backends.docker, &cx.planned.docker) else {
                return Err(vol_err(
                    cx.id,
                    &v.name,
                    "Docker volume drivers are not configured",
                ));
            };
            let path = docker
                .mount(dv, cx.id)
                .await
                .map_err(|source| dvdi_err(cx.id, &v.name, source))?;
            Ok((path, BindOptions::external_volume(v.read_only)))
        })
    }

    fn release<'a>(
        &'a self,
        backends: &'a Backends,
        id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Source::Docker { driver, name } = &v.source else {
                return Ok(());
            };
            let docker = backends.docker.as_ref().ok_or_else(|| {
                vol_err(
                    id,
                    &v.name,
                    "no Docker volume drivers configured to release it",
                )
            })?;
            docker
                .unmount(driver, name, id)
                .await
                .map_err(|source| dvdi_err(id, &v.name, source))
        })
    }

    fn source_path<'a>(
        &'a self,
        backends: &'a Backends,
        id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            let Source::Docker { driver, name } = &v.source else {
                return None;
            };
            backends.docker.as_ref()?.mountpoint(driver, name, id)
        })
    }

    fn consumers(
        &self,
        backends: &Backends,
        _id: &str,
        v: &VolumeEntry,
        _users: &BTreeMap<&Path, Vec<String>>,
    ) -> Vec<String> {
        let Source::Docker { driver, name } = &v.source else {
            return Vec::new();
        };
        backends
            .docker
            .as_ref()
            .map(|d| d.consumers(driver, name))
            .unwrap_or_default()
    }
}
