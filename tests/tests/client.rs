//! The client commands that need no cluster: `client config` and `completion`.

use std::process::Command;

use lifeboat_tests::bin::{Run, lifeboat_exe};

fn lifeboat(config: &std::path::Path, args: &[&str]) -> Run {
    Run::from_output(
        Command::new(lifeboat_exe())
            .args(args)
            .env("LIFEBOAT_CONFIG", config)
            .output()
            .expect("run lifeboat"),
    )
}

#[test]
fn client_config_is_kept_between_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nested/config.json");
    let out = lifeboat(&config, &["client", "config", "get"]).ok().stdout;
    assert!(out.contains("features: <NOT SET>"), "{out}");
    lifeboat(
        &config,
        &[
            "client",
            "config",
            "set",
            "features=EnableCSI,EnableAPIGroupVersions",
            "namespace=backup",
        ],
    )
    .ok();
    let out = lifeboat(&config, &["client", "config", "get", "features"])
        .ok()
        .stdout;
    assert_eq!(out.trim(), "features: EnableCSI,EnableAPIGroupVersions");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("saved")).expect("JSON");
    assert_eq!(saved["namespace"], "backup");

    // Bad settings name what is wrong and change nothing.
    let err = lifeboat(&config, &["client", "config", "set", "colour=yes"])
        .fails()
        .stderr;
    assert!(err.contains("unknown client config key `colour`"), "{err}");
    let err = lifeboat(&config, &["client", "config", "set", "features"])
        .fails()
        .stderr;
    assert!(err.contains("is not KEY=VALUE"), "{err}");
}

#[test]
fn completion_scripts_cover_the_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    for shell in ["bash", "zsh", "fish"] {
        let out = lifeboat(&config, &["completion", shell]).ok().stdout;
        for word in [
            "backup-location",
            "snapshot-location",
            "install",
            "client",
            "schedule",
            "from-schedule",
        ] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let err = lifeboat(&config, &["completion", "tcsh"]).stderr;
    assert!(err.contains("tcsh"), "{err}");
}
