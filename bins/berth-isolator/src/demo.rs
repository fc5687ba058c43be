//! `berth-isolator demo`: a persistent volume's life on one agent, with real mounts, in a
//! temporary work dir inside a private mount namespace (so nothing can leak onto the host):
//! CREATE the volume, prepare a container on it, write, clean up, prepare a second container,
//! read the data back, clean up, DESTROY, and show that nothing is left mounted. Every step is
//! printed and checked; a failed check ends the demo with an error.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use berth_agent::container::ContainerConfig;
use berth_resources::proto;
use serde_json::json;

use crate::agent::Settings;

const CONFIGURED: &str = "cpus:1;mem:256;disk(demo-role):128";

fn volume_json() -> serde_json::Value {
    json!({
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": 64},
        "reservations": [{"type": "STATIC", "role": "demo-role"}],
        "disk": {
            "persistence": {"id": "demo-volume", "principal": "demo"},
            "volume": {"mode": "RW", "container_path": "data"}
        }
    })
}

fn mounts_below(path: &Path) -> Result<Vec<String>> {
    let table = berth_mount::MountTable::read_current()?;
    Ok(table
        .mounts_at_or_below(path)
        .map(|e| e.mount_point().display().to_string())
        .collect())
}

/// Runs the demo, printing to `out`. Needs root.
///
/// # Errors
/// Not root, or any step failing its check.
pub fn run<W: Write + Send>(out: &mut W) -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the demo makes real bind mounts: run it as root (it works in a private mount namespace and a temporary directory, nothing touches the host)"
    );
    berth_mount::ns::in_private_mount_namespace(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(steps(out))
    })
    .context("private mount namespace")?
}

async fn steps<W: Write>(out: &mut W) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("berth-demo-").tempdir()?;
    let root = std::fs::canonicalize(tmp.path())?;
    let work = root.join("work");
    writeln!(
        out,
        "berth-isolator demo (temporary work dir {}, private mount namespace)",
        work.display()
    )?;

    let agent = crate::agent::open(Settings {
        work_dir: work.clone(),
        resources: Some(CONFIGURED.to_owned()),
        ..Settings::default()
    })
    .await?;
    writeln!(out, "\n1. agent resources (--resources {CONFIGURED})")?;

    // CREATE the volume on the statically reserved disk.
    let create: proto::offer::Operation = berth_resources::json::from_json_value(&json!({
        "type": "CREATE",
        "create": {"volumes": [volume_json()]}
    }))?;
    agent.apply_operation(create).await.context("CREATE")?;
    let volume: proto::Resource = berth_resources::json::from_json_value(&volume_json())?;
    let typed = berth_resources::Resource::from_proto(&volume)?;
    let dir = berth_agent::resources::volume_path(&work, &typed)?;
    ensure!(dir.is_dir(), "CREATE did not make {}", dir.display());
    writeln!(
        out,
        "2. CREATE persistent volume demo-volume (role demo-role, 64 MB): directory {}",
        dir.display()
    )?;
    let usage = agent.usage().await;
    let u = usage
        .iter()
        .find(|u| u.persistence_id.as_deref() == Some("demo-volume"))
        .context("no usage reported for demo-volume")?;
    ensure!(
        u.limit_bytes == Some(64 << 20),
        "limit reported: {:?}",
        u.limit_bytes
    );
    match u.enforcement {
        berth_agent::agent::usage::Enforcement::ProjectQuota => writeln!(
            out,
            "   its 64 MB are enforced by a project quota: a task writing more gets ENOSPC/EDQUOT"
        )?,
        other => writeln!(
            out,
            "   its 64 MB are measured ({}), not enforced: this work dir's filesystem has no \
             project quotas (XFS or ext4 mounted prjquota would enforce them)",
            other.as_str()
        )?,
    }

    // Container 1 writes.
    let sandbox1 = root.join("sandbox-1");
    std::fs::create_dir_all(&sandbox1)?;
    let cfg = |id: &str, sandbox: &Path| ContainerConfig {
        container_id: id.to_owned(),
        sandbox: sandbox.to_owned(),
        rootfs: None,
        resources: vec![volume.clone()],
        volumes: Vec::new(),
        environment: std::collections::BTreeMap::new(),
        parent: None,
    };
    let mounts = agent.prepare(&cfg("demo-1", &sandbox1)).await?;
    let target = &mounts.first().context("no mount")?.target;
    writeln!(
        out,
        "3. prepare demo-1: {} bind-mounted at {}",
        dir.display(),
        target.display()
    )?;
    std::fs::write(target.join("hello.txt"), b"written by demo-1\n")?;
    writeln!(
        out,
        "   demo-1 wrote {}",
        target.join("hello.txt").display()
    )?;
    agent.cleanup("demo-1").await?;
    let left = mounts_below(&sandbox1)?;
    ensure!(left.is_empty(), "mounts left after cleanup: {left:?}");
    writeln!(
        out,
        "4. cleanup demo-1: unmounted, nothing mounted under {}",
        sandbox1.display()
    )?;

    // Container 2 reads.
    let sandbox2 = root.join("sandbox-2");
    std::fs::create_dir_all(&sandbox2)?;
    let mounts = agent.prepare(&cfg("demo-2", &sandbox2)).await?;
    let target = &mounts.first().context("no mount")?.target;
    let text = std::fs::read_to_string(target.join("hello.txt"))?;
    ensure!(text == "written by demo-1\n", "data lost: {text:?}");
    writeln!(
        out,
        "5. prepare demo-2 on the same volume: reads {:?} — the data survived",
        text.trim_end()
    )?;

    // DESTROY while in use is refused; after cleanup it goes through.
    let destroy: proto::offer::Operation = berth_resources::json::from_json_value(&json!({
        "type": "DESTROY",
        "destroy": {"volumes": [volume_json()]}
    }))?;
    match agent.apply_operation(destroy.clone()).await {
        Ok(_) => bail!("DESTROY of a volume in use was accepted"),
        Err(e) => writeln!(out, "6. DESTROY while demo-2 uses it is refused: {e:#}")?,
    }
    agent.cleanup("demo-2").await?;
    writeln!(out, "7. cleanup demo-2")?;
    agent.apply_operation(destroy).await.context("DESTROY")?;
    ensure!(!dir.exists(), "DESTROY left {}", dir.display());
    writeln!(out, "8. DESTROY: directory {} removed", dir.display())?;

    let left = mounts_below(&root)?;
    ensure!(left.is_empty(), "mounts left: {left:?}");
    let status = agent.isolator().status()?;
    ensure!(status.is_empty(), "containers left: {status:?}");
    writeln!(
        out,
        "9. nothing is left mounted under {} and no container record remains",
        root.display()
    )?;
    agent.shutdown().await;
    Ok(())
}
