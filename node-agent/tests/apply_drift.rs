//! `driftless drift check` and `drift resolve` against temporary roots.
#![allow(clippy::unwrap_used)]

mod apply_support;

use apply_support::*;

const POLICY: &str = "# Host policy; comments survive resolve.\napiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: base\nspec:\n  tasks:\n    - name: motd\n      file:\n        path: /etc/motd\n        content: |\n          welcome\n        mode: \"0644\" # world-readable\n    - name: journald\n      lineInFile:\n        path: /etc/journald.conf\n        regexp: \"^#?SystemMaxUse=\"\n        line: SystemMaxUse=500M\n        create: true\n    - name: app\n      directory:\n        path: /opt/app\n        mode: \"0755\"\n    - name: stale\n      file:\n        path: /etc/stale\n        state: absent\n";

fn synced() -> Host {
    let host = Host::new();
    host.policy("host.yaml", POLICY);
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0, "{report:#}");
    host
}

#[test]
fn check_reports_drift_grouped_with_exit_codes() {
    let host = synced();
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "in sync: 0 to add, 0 to change, 0 to remove\n")
    );

    std::fs::write(host.path("/etc/motd"), "hacked\n").unwrap();
    std::fs::remove_dir(host.path("/opt/app")).unwrap();
    std::fs::write(host.path("/etc/stale"), "x").unwrap();
    let before = host.snapshot();
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(host.snapshot(), before, "drift check changed the root");
    assert_eq!(
        out,
        "directory:\n  + directory:/opt/app  [base/app]\n      mode: (none) → 0755\nfile:\n  ~ file:/etc/motd  [base/motd]\n      content: sha256:f7f39f98aa773354 → sha256:77f44b9024fd19a6\n  - file:/etc/stale  [base/stale]\n      content: sha256:2d711642b726b044 → (none)\ndrifted: 1 to add, 1 to change, 1 to remove\n"
    );
    let (code, _, _) = host.run(&["drift", "check"]);
    assert_eq!(code, 0, "without --detailed-exitcode drift is not an error");

    let (_, json, _) = host.run(&["drift", "check", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["status"], "Drifted");
    let item: driftless_crds::drift_report::DriftItem =
        serde_json::from_value(json["items"][0].clone()).unwrap();
    assert_eq!(item.address, "file:/etc/motd");
    assert_eq!(item.domain, "file");
    assert_eq!(item.source.as_deref(), Some("base/motd"));
    assert_eq!(
        item.change,
        driftless_crds::drift_report::ChangeType::Changed
    );
    assert_eq!(item.attributes[0].path, "content");
}

#[test]
fn check_errors_exit_1() {
    let host = Host::new();
    host.policy("p.yaml", &format!("{HEADER}  tasks:\n    - name: l\n      lineInFile:\n        path: /etc/missing\n        line: x\n"));
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("error: test/l: /etc/missing does not exist (set create: true to create it)"),
        "{out}"
    );
}

#[test]
fn ignored_drift_is_not_reported_nor_enforced() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: motd\n      file:\n        path: /etc/motd\n        content: managed\n        mode: \"0644\"\n    - name: issue\n      file:\n        path: /etc/issue\n        content: managed\n  ignore:\n    - resource: \"file:/etc/motd\"\n      path: mode\n      reason: login banners chmod it\n    - task: iss*\n"),
    );
    std::fs::write(host.path("/etc/issue"), "local").unwrap();
    let (_, report) = host.apply(&[]);
    assert_eq!(task(&report, "issue")["status"], "unchanged");
    assert_eq!(task(&report, "issue")["message"], "drift ignored: ignored");
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/issue")).unwrap(),
        "local"
    );
    std::fs::set_permissions(
        host.path("/etc/motd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "in sync: 0 to add, 0 to change, 0 to remove\n")
    );
    std::fs::write(host.path("/etc/motd"), "changed").unwrap();
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("~ file:/etc/motd") && out.contains("content:") && !out.contains("mode:"),
        "{out}"
    );
}

#[test]
fn resolve_prefer_manifest_applies() {
    let host = synced();
    std::fs::write(host.path("/etc/motd"), "hacked\n").unwrap();
    let (code, out, _) = host.run(&["drift", "resolve", "--prefer-manifest"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/motd")).unwrap(),
        "welcome\n"
    );
    let (code, _, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 0);
}

#[test]
fn resolve_prefer_system_writes_live_values_back() {
    let host = synced();
    std::fs::write(host.path("/etc/motd"), "welcome to\nthe new host\n").unwrap();
    std::fs::write(host.path("/etc/journald.conf"), "SystemMaxUse=2G\n").unwrap();
    let (code, out, _) = host.run(&["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "wrote host.yaml: base/motd file.content set to the live value\nwrote host.yaml: base/journald lineInFile.line set to the live value\n"
    );
    let policy = std::fs::read_to_string(host.config.path().join("host.yaml")).unwrap();
    assert_eq!(
        policy,
        POLICY
            .replace(
                "          welcome\n",
                "          welcome to\n          the new host\n"
            )
            .replace("line: SystemMaxUse=500M", "line: SystemMaxUse=2G")
    );
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn resolve_prefer_system_refuses_other_drift() {
    let host = synced();
    std::fs::set_permissions(
        host.path("/opt/app"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (code, out, _) = host.run(&["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "refused directory:/opt/app: --prefer-system does not apply to directory tasks (only file content, lineInFile, sysctl value and package version); use --prefer-manifest or edit the policy\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.config.path().join("host.yaml")).unwrap(),
        POLICY
    );
}

#[test]
fn resolve_prefer_system_takes_the_live_sysctl_value() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("/proc/sys/vm")).unwrap();
    std::fs::write(host.path("/proc/sys/vm/swappiness"), "60\n").unwrap();
    let policy = format!("{HEADER}  tasks:\n    - name: swappiness\n      sysctl:\n        name: vm.swappiness\n        value: \"10\" # low\n");
    host.policy("p.yaml", &policy);
    let (code, out, _) = host.run(&["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "wrote p.yaml: test/swappiness sysctl.value set to the live value\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.config.path().join("p.yaml")).unwrap(),
        policy.replace("value: \"10\" # low", "value: \"60\" # low")
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/proc/sys/vm/swappiness")).unwrap(),
        "60\n"
    );
}
