//! `package` against real dpkg and apt: `.deb` packages built here with `dpkg-deb --build`
//! (versions 1.0 and 2.0 of a tiny package) in a local file repository, installed into a
//! temporary root with its own dpkg database. No network.

#![allow(clippy::unwrap_used)]

mod system_support;

use std::path::Path;
use std::process::Command;

use driftless_agent::apply::backends::{dpkg::Apt, PackageBackend};
use driftless_agent::host::HostPaths;
use driftless_crds::apply_policy::{PackageManager, PackageTask};
use driftless_crds::common::Presence;
use sha2::{Digest, Sha256};
use system_support::{apply, attribute, check, converges, require_tool, secrets};

const SCRIPT: &str = ".ci/tools/apply.sh";

fn build_deb(work: &Path, repo: &Path, version: &str) -> String {
    let tree = work.join(format!("pkg-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/share/dltest")).unwrap();
    let control = format!(
        "Package: dltest\nVersion: {version}\nArchitecture: all\nMaintainer: Driftless tests <tests@driftless.dev>\nDescription: Driftless package test fixture\n"
    );
    std::fs::write(tree.join("DEBIAN/control"), &control).unwrap();
    std::fs::write(
        tree.join("usr/share/dltest/version"),
        format!("{version}\n"),
    )
    .unwrap();
    let file = format!("dltest_{version}_all.deb");
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(repo.join(&file))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let bytes = std::fs::read(repo.join(&file)).unwrap();
    format!(
        "{control}Filename: ./{file}\nSize: {}\nSHA256: {}\n",
        bytes.len(),
        hex::encode(Sha256::digest(&bytes))
    )
}

/// A temporary root with an empty dpkg database and apt configured for a local repository
/// holding dltest 1.0 and 2.0.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    require_tool("dpkg-deb", SCRIPT);
    require_tool("apt-get", SCRIPT);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let stanzas = [
        build_deb(work.path(), &repo, "1.0"),
        build_deb(work.path(), &repo, "2.0"),
    ];
    std::fs::write(repo.join("Packages"), stanzas.join("\n")).unwrap();
    let root = work.path().join("root");
    for dir in [
        "var/lib/dpkg/updates",
        "var/lib/dpkg/info",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log",
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list"),
        format!("deb [trusted=yes] file:{} ./\n", repo.display()),
    )
    .unwrap();
    (work, root)
}

fn task(state: Presence, version: Option<&str>) -> PackageTask {
    PackageTask {
        name: "dltest".into(),
        state,
        version: version.map(Into::into),
        manager: PackageManager::Auto,
    }
}

fn installed_file(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("usr/share/dltest/version")).ok()
}

#[test]
fn present_pinned_and_absent_with_real_dpkg() {
    let (_work, root) = setup();
    let none = secrets(&[]);
    let apt = Apt::new(&HostPaths::under(&root));

    // Dry run: reports the install, changes nothing.
    let dry = check(&task(Presence::Present, None), &root, &none).unwrap();
    assert!(dry.is_change());
    assert_eq!(installed_file(&root), None);

    // Present, any version: apt installs the candidate (2.0); then unchanged.
    let first = converges(&task(Presence::Present, None), &root, &none);
    assert_eq!(attribute(&first, "version"), (None, Some("any".into())));
    assert_eq!(installed_file(&root).as_deref(), Some("2.0\n"));
    let state = apt.query("dltest").unwrap();
    assert_eq!(state.version.as_deref(), Some("2.0"));
    assert!(!state.held);

    // Pinned to 1.0: downgraded and held; then unchanged.
    let pinned = converges(&task(Presence::Present, Some("1.0")), &root, &none);
    assert_eq!(
        attribute(&pinned, "version"),
        (Some("2.0".into()), Some("1.0".into()))
    );
    assert_eq!(installed_file(&root).as_deref(), Some("1.0\n"));
    let state = apt.query("dltest").unwrap();
    assert_eq!(state.version.as_deref(), Some("1.0"));
    assert!(state.held, "a pinned version is held");

    // A hold released by hand is drift.
    apt.set_held("dltest", "1.0", false).unwrap();
    let drift = converges(&task(Presence::Present, Some("1.0")), &root, &none);
    assert_eq!(
        attribute(&drift, "held"),
        (Some("false".into()), Some("true".into()))
    );

    // An unpinned task accepts whatever version is installed.
    let any = apply(&task(Presence::Present, None), &root, &none).unwrap();
    assert!(!any.is_change());

    // Absent: removed (held or not); then unchanged.
    let removed = converges(&task(Presence::Absent, None), &root, &none);
    assert_eq!(attribute(&removed, "version"), (Some("1.0".into()), None));
    assert_eq!(installed_file(&root), None);
    assert_eq!(apt.query("dltest").unwrap().version, None);
}

#[test]
fn unknown_packages_and_hosts_without_a_manager_fail_clearly() {
    let (_work, root) = setup();
    let none = secrets(&[]);
    let mut missing = task(Presence::Present, None);
    missing.name = "no-such-package".into();
    let err = apply(&missing, &root, &none).unwrap_err();
    assert!(
        err.contains("apt-get") && err.contains("no-such-package"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = apply(&task(Presence::Present, None), empty.path(), &none).unwrap_err();
    assert!(err.starts_with("no package manager found below"), "{err}");
}

/// Runs the real `driftless` binary against the temporary root and a config directory.
fn driftless(root: &Path, config: &Path, args: &[&str]) -> (i32, String) {
    let env = config.with_extension("env");
    std::fs::write(&env, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--env-file")
        .arg(&env)
        .arg("--root")
        .arg(root)
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ENV_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prefer_system_writes_the_installed_version_back() {
    let (work, root) = setup();
    let config = work.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let policy = "# Pinned packages.\napiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: pkgs\nspec:\n  tasks:\n    - name: dltest\n      package:\n        name: dltest\n        version: \"1.0\" # the tested one\n";
    std::fs::write(config.join("pkgs.yaml"), policy).unwrap();

    // The policy pins 1.0; someone installed 2.0 by hand.
    converges(&task(Presence::Present, Some("2.0")), &root, &secrets(&[]));
    assert_eq!(installed_file(&root).as_deref(), Some("2.0\n"));
    let (code, out) = driftless(&root, &config, &["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("~ package:dltest  [pkgs/dltest]"), "{out}");

    let (code, out) = driftless(&root, &config, &["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "wrote pkgs.yaml: pkgs/dltest package.version set to the live value\n"
    );
    assert_eq!(
        std::fs::read_to_string(config.join("pkgs.yaml")).unwrap(),
        policy.replace(
            "version: \"1.0\" # the tested one",
            "version: \"2.0\" # the tested one"
        )
    );
    // The host was not touched, and is now in sync with the policy.
    assert_eq!(installed_file(&root).as_deref(), Some("2.0\n"));
    let (code, out) = driftless(&root, &config, &["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
}
