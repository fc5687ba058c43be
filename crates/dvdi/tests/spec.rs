//! The three volume specs: the DVDI environment contract (README examples, suffixes, strict
//! validation), Mesos `DOCKER_VOLUME`, Marathon external volumes; and a property test that
//! no environment makes the parser panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_dvdi::spec::{
    from_env, from_marathon, from_marathon_app, from_mesos, from_mesos_environment,
};
use berth_dvdi::{DvdiError, Mode};
use berth_resources::proto;
use proptest::prelude::*;
use serde_json::json;

fn env(vars: &[(&str, &str)]) -> Result<berth_dvdi::spec::EnvVolumes, DvdiError> {
    from_env(vars.iter().copied())
}

fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn readme_examples() {
    let r = env(&[
        ("PATH", "/bin"),
        ("DVDI_VOLUME_NAME", "VolXYZ"),
        ("DVDI_VOLUME_DRIVER", "rexray"),
        (
            "DVDI_VOLUME_OPTS",
            "size=5,iops=150,volumetype=io1,newfstype=xfs,overwritefs=true",
        ),
        ("DVDI_VOLUME_CONTAINERPATH", "/tmp/ebs-auto"),
    ])
    .unwrap();
    assert_eq!(r.volumes.len(), 1);
    let v = &r.volumes[0];
    assert_eq!((v.driver.as_str(), v.name.as_str()), ("rexray", "VolXYZ"));
    assert_eq!(
        v.options,
        map(&[
            ("size", "5"),
            ("iops", "150"),
            ("volumetype", "io1"),
            ("newfstype", "xfs"),
            ("overwritefs", "true")
        ])
    );
    assert_eq!(v.container_path, Some(PathBuf::from("/tmp/ebs-auto")));
    assert_eq!((v.mode, v.explicit_create), (Mode::Rw, Some(false)));

    let r = env(&[
        ("DVDI_VOLUME_NAME", "testing"),
        ("DVDI_VOLUME_DRIVER", "platform1"),
        ("DVDI_VOLUME_NAME1", "testing2"),
        ("DVDI_VOLUME_DRIVER1", "platform2"),
        ("DVDI_VOLUME_OPTS1", "size=6"),
        ("DVDI_VOLUME_NAME9", "nine"),
        ("DVDI_VOLUME_EXPLICITCREATE9", " TRUE "),
    ])
    .unwrap();
    let got: Vec<(&str, &str)> = r
        .volumes
        .iter()
        .map(|v| (v.driver.as_str(), v.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("platform1", "testing"),
            ("platform2", "testing2"),
            ("rexray", "nine")
        ]
    );
    assert_eq!(r.volumes[2].explicit_create, Some(true));
    assert!(r.volumes[0].container_path.is_none());
    assert!(r.warnings.is_empty());
}

#[test]
fn env_is_strict() {
    let bad: &[&[(&str, &str)]] = &[
        &[("DVDI_VOLUME_NAME10", "v")],
        &[("DVDI_VOLUME_DRIVERS", "x"), ("DVDI_VOLUME_NAME", "v")],
        &[("DVDI_VOLUME_NAME0", "v")],
        &[("DVDI_VOLUME_FOO", "v")],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_OPTS", "novalue")],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_OPTS", "a=1,,b=2")],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_OPTS", "a=1,a=2")],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_OPTS", "=x")],
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "relative/path"),
        ],
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/tmp/../etc"),
        ],
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/tmp/x\n;reboot"),
        ],
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_EXPLICITCREATE", "yes"),
        ],
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_DRIVER", "../../bin/sh"),
        ],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_DRIVER", "a;b")],
        &[("DVDI_VOLUME_NAME", ".."), ("DVDI_VOLUME_DRIVER", "d")],
        &[("DVDI_VOLUME_NAME", "a\u{7}b")],
        &[("DVDI_VOLUME_DRIVER1", "d")],
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_NAME1", "v")],
    ];
    for vars in bad {
        match env(vars) {
            Err(DvdiError::Invalid { what, .. }) => assert!(
                what.starts_with("DVDI_VOLUME_") || what.contains("name"),
                "{vars:?}: {what}"
            ),
            other => panic!("{vars:?}: {other:?}"),
        }
    }
    // The error names the variable and never echoes option values.
    match env(&[
        ("DVDI_VOLUME_NAME2", "v"),
        ("DVDI_VOLUME_OPTS2", "password"),
    ]) {
        Err(e @ DvdiError::Invalid { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("DVDI_VOLUME_OPTS2"), "{msg}");
            assert!(!msg.contains("password"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_is_better_than_the_module_where_it_was_unsafe() {
    // v2 driver names with '/' and ':' (the module's blacklist refused them).
    let r = env(&[
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_DRIVER", "rexray/ebs:latest"),
    ])
    .unwrap();
    assert_eq!(r.volumes[0].driver.as_str(), "rexray/ebs:latest");
    // Values keep '=' (dvdcli truncated them).
    let r = env(&[
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_OPTS", "label=a=b,size=1"),
    ])
    .unwrap();
    assert_eq!(
        r.volumes[0].options,
        map(&[("label", "a=b"), ("size", "1")])
    );
    // A task never chooses the executable: DVDCLI is ignored with a warning.
    let r = env(&[
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_DVDCLI", "/tmp/evil"),
        ("DVDI_VOLUME_DVDCLI3", "/x"),
    ])
    .unwrap();
    assert_eq!(r.volumes.len(), 1);
    assert_eq!(r.warnings.len(), 2);
    assert!(
        r.warnings[0].contains("DVDI_VOLUME_DVDCLI is ignored"),
        "{}",
        r.warnings[0]
    );
    // An empty NAME disables its slot; an empty CONTAINERPATH means no isolation.
    let r = env(&[
        ("DVDI_VOLUME_NAME", ""),
        ("DVDI_VOLUME_NAME1", "v"),
        ("DVDI_VOLUME_CONTAINERPATH1", ""),
    ])
    .unwrap();
    assert_eq!(r.volumes.len(), 1);
    assert!(r.volumes[0].container_path.is_none());
}

#[test]
fn mesos_environment() {
    use proto::environment::{Variable, variable::Type};
    let var = |n: &str, v: &str, t: Type| Variable {
        name: n.into(),
        r#type: Some(t as i32),
        value: Some(v.into()),
        secret: None,
    };
    let e = proto::Environment {
        variables: vec![
            var("DVDI_VOLUME_NAME", "v", Type::Value),
            var("HOME", "/root", Type::Value),
        ],
    };
    assert_eq!(
        from_mesos_environment(&e).unwrap().volumes[0].name.as_str(),
        "v"
    );
    let e = proto::Environment {
        variables: vec![var("DVDI_VOLUME_NAME", "v", Type::Secret)],
    };
    assert!(from_mesos_environment(&e).is_err());
}

fn mesos_volume(
    driver: Option<&str>,
    name: &str,
    params: &[(&str, &str)],
    mode: proto::volume::Mode,
) -> proto::Volume {
    use proto::volume::{Source, source};
    proto::Volume {
        container_path: "data".into(),
        host_path: None,
        mode: mode as i32,
        image: None,
        source: Some(Source {
            r#type: Some(source::Type::DockerVolume as i32),
            docker_volume: Some(source::DockerVolume {
                driver: driver.map(str::to_owned),
                name: name.into(),
                driver_options: Some(proto::Parameters {
                    parameter: params
                        .iter()
                        .map(|(k, v)| proto::Parameter {
                            key: (*k).into(),
                            value: (*v).into(),
                        })
                        .collect(),
                }),
            }),
            ..Source::default()
        }),
    }
}

#[test]
fn mesos_docker_volume() {
    let v = from_mesos(&mesos_volume(
        Some("rexray/ebs:latest"),
        "pg",
        &[("size", "5"), ("size", "6"), ("k", "a,b=c")],
        proto::volume::Mode::Ro,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(
        (v.driver.as_str(), v.name.as_str(), v.mode),
        ("rexray/ebs:latest", "pg", Mode::Ro)
    );
    assert_eq!(
        v.options,
        map(&[("size", "6"), ("k", "a,b=c")]),
        "last duplicate wins, as in Mesos"
    );
    assert_eq!(v.container_path, Some(PathBuf::from("data")));
    assert_eq!(v.explicit_create, None);
    assert!(
        from_mesos(&mesos_volume(None, "pg", &[], proto::volume::Mode::Rw)).is_err(),
        "driver required"
    );
    assert!(from_mesos(&mesos_volume(Some("d"), "", &[], proto::volume::Mode::Rw)).is_err());
    let mut bad_path = mesos_volume(Some("d"), "v", &[], proto::volume::Mode::Rw);
    bad_path.container_path = "../escape".into();
    assert!(from_mesos(&bad_path).is_err());
    let mut other = mesos_volume(Some("d"), "v", &[], proto::volume::Mode::Rw);
    other.source.as_mut().unwrap().r#type = Some(proto::volume::source::Type::SandboxPath as i32);
    assert_eq!(from_mesos(&other).unwrap(), None);
}

#[test]
fn marathon_external_volumes() {
    let vol = json!({
        "containerPath": "test-rexray-volume",
        "external": {"size": 100, "name": "my-test-vol", "provider": "dvdi",
                     "options": {"dvdi/driver": "rexray", "dvdi/volumetype": " io1 ", "dvdi/size": "7", "other/x": "y"}},
        "mode": "RW"
    });
    let v = from_marathon(&vol).unwrap().unwrap();
    assert_eq!(
        (v.driver.as_str(), v.name.as_str()),
        ("rexray", "my-test-vol")
    );
    assert_eq!(
        v.options,
        map(&[("size", "100"), ("volumetype", "io1")]),
        "size overrides dvdi/size; values trimmed"
    );
    assert_eq!(v.container_path, Some(PathBuf::from("test-rexray-volume")));
    assert_eq!((v.mode, v.explicit_create), (Mode::Rw, Some(false)));

    let ro = json!({"containerPath": "/abs", "mode": "RO", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}});
    assert_eq!(from_marathon(&ro).unwrap().unwrap().mode, Mode::Ro);
    assert_eq!(
        from_marathon(&json!({"containerPath": "x", "persistent": {"size": 1}})).unwrap(),
        None
    );
    assert_eq!(
        from_marathon(&json!({"containerPath": "x", "external": {"name": "n", "provider": "csi"}}))
            .unwrap(),
        None
    );
    for bad in [
        json!({"containerPath": "x", "external": {"name": "n", "provider": "dvdi"}}),
        json!({"containerPath": "x", "external": {"name": "", "provider": "dvdi", "options": {"dvdi/driver": "d"}}}),
        json!({"containerPath": "x", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d", "nonamespace": "1"}}}),
        json!({"containerPath": "x", "external": {"name": "n", "provider": "dvdi", "size": 0, "options": {"dvdi/driver": "d"}}}),
        json!({"containerPath": "..", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}}),
        json!({"containerPath": "x", "mode": "RX", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}}),
        json!({"external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}}),
    ] {
        assert!(
            matches!(from_marathon(&bad), Err(DvdiError::Invalid { .. })),
            "{bad}"
        );
    }

    let app = json!({"id": "/hello-play", "container": {"type": "MESOS", "volumes": [vol, ro, {"containerPath": "p", "persistent": {"size": 1}}]}});
    assert_eq!(from_marathon_app(&app).unwrap().len(), 2);
    let dup = json!({"container": {"volumes": [
        {"containerPath": "a", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}},
        {"containerPath": "b", "external": {"name": "n", "provider": "dvdi", "options": {"dvdi/driver": "d"}}}]}});
    assert!(from_marathon_app(&dup).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any environment (names near the contract, arbitrary values) parses or is refused with
    /// a typed error; a parsed volume always has valid names and absolute container paths.
    #[test]
    fn env_never_panics(vars in proptest::collection::vec(
        ("DVDI_VOLUME_(NAME|DRIVER|OPTS|CONTAINERPATH|EXPLICITCREATE|DVDCLI|X)[0-9]?", "\\PC{0,12}|[=,/.: a-z]{0,12}"),
        0..6,
    )) {
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Ok(r) = from_env(refs) {
            for v in r.volumes {
                prop_assert!(!v.name.as_str().is_empty());
                if let Some(p) = v.container_path {
                    prop_assert!(p.is_absolute());
                }
            }
        }
    }
}
