//! `service` against the real `systemctl --root=DIR` on unit files written into a temporary
//! root. Starting and stopping need systemd as PID 1 and `--root /`: that test runs only there
//! and prints why it is skipped elsewhere.

#![allow(clippy::unwrap_used)]

mod system_support;

use std::path::Path;

use driftless_agent::apply::backends::systemd::systemd_running;
use driftless_crds::apply_policy::ServiceTask;
use system_support::{apply, attribute, converges, require_tool, secrets};

const SCRIPT: &str = ".ci/tools/apply.sh";

fn service(yaml: &str) -> ServiceTask {
    serde_saphyr::from_str(yaml).unwrap()
}

fn unit_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("dl-web.service"),
        "[Unit]\nDescription=test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::fs::write(
        units.join("dl-static.service"),
        "[Unit]\nDescription=no install section\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    dir
}

fn wants_link(root: &Path) -> std::path::PathBuf {
    root.join("etc/systemd/system/multi-user.target.wants/dl-web.service")
}

#[test]
fn enable_and_disable_with_systemctl_root() {
    require_tool("systemctl", SCRIPT);
    let dir = unit_root();
    let root = dir.path();
    let none = secrets(&[]);
    let enabled = converges(&service("name: dl-web\nenabled: true\n"), root, &none);
    assert_eq!(enabled.resource, "service:dl-web.service");
    assert_eq!(
        attribute(&enabled, "enabled"),
        (Some("false".into()), Some("true".into()))
    );
    assert!(
        wants_link(root).is_symlink(),
        "systemctl enable made the wants link"
    );
    let disabled = converges(
        &service("name: dl-web.service\nenabled: false\n"),
        root,
        &none,
    );
    assert_eq!(
        attribute(&disabled, "enabled"),
        (Some("true".into()), Some("false".into()))
    );
    assert!(!wants_link(root).exists());
}

#[test]
fn units_that_cannot_be_managed_fail_clearly() {
    require_tool("systemctl", SCRIPT);
    let dir = unit_root();
    let root = dir.path();
    let none = secrets(&[]);
    assert_eq!(
        apply(&service("name: dl-static\nenabled: true\n"), root, &none).unwrap_err(),
        "unit dl-static.service is static: it has no [Install] section to enable or disable"
    );
    assert_eq!(
        apply(&service("name: nope\nenabled: true\n"), root, &none).unwrap_err(),
        format!(
            "unit nope.service has no unit file below {}",
            root.display()
        )
    );
    // Running state is never touched below a root other than `/`.
    assert_eq!(
        apply(&service("name: dl-web\nstate: started\n"), root, &none).unwrap_err(),
        format!(
            "checking whether dl-web.service runs needs the live system: it is only done with --root / (the root is {})",
            root.display()
        )
    );
}

#[test]
fn start_and_stop_on_a_live_systemd() {
    if !systemd_running() || !nix_root() {
        // Straight to stderr, past the test harness's capture: CI counts these lines as skips.
        let line = format!(
            "skipped: start_and_stop_on_a_live_systemd: needs systemd as PID 1 and root privileges (PID 1 here is {:?})\n",
            std::fs::read_to_string("/proc/1/comm")
                .unwrap_or_default()
                .trim()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        return;
    }
    let none = secrets(&[]);
    let unit = Path::new("/etc/systemd/system/driftless-test-sleep.service");
    std::fs::write(
        unit,
        "[Unit]\nDescription=Driftless test\n[Service]\nExecStart=/bin/sleep 300\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let root = Path::new("/");
    let start = service("name: driftless-test-sleep\nstate: started\ndaemonReload: true\n");
    let first = converges(&start, root, &none);
    assert_eq!(
        attribute(&first, "state"),
        (Some("stopped".into()), Some("started".into()))
    );
    let stop = service("name: driftless-test-sleep\nstate: stopped\n");
    converges(&stop, root, &none);
    std::fs::remove_file(unit).unwrap();
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
