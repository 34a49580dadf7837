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
        "directory:\n  + directory:/opt/app  [base/app]\n      mode: (none) → 0755\nfile:\n  ~ file:/etc/motd  [base/motd]\n      content: sha256:f7f39f98aa773354 → sha256:77f44b9024fd19a6\n      --- /etc/motd (live)\n      +++ /etc/motd (desired)\n      @@ -1 +1 @@\n      -hacked\n      +welcome\n  - file:/etc/stale  [base/stale]\n      content: sha256:2d711642b726b044 → (none)\n      --- /etc/stale (live)\n      +++ /etc/stale (desired)\n      @@ -1 +0,0 @@\n      -x\n      \\ No newline at end of file\ndrifted: 1 to add, 1 to change, 1 to remove\n"
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
        "refused directory:/opt/app: host.yaml (document 1): spec.tasks[2].directory: --prefer-system does not apply to directory tasks (only file content, lineInFile, sysctl value and package version); use --prefer-manifest or edit the policy\n"
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

/// The diff of every changed task, by resource, from `apply --dry-run --output json` and
/// `drift check --output json`.
fn diffs(json: &serde_json::Value, tasks: bool) -> std::collections::BTreeMap<String, String> {
    let list: Vec<&serde_json::Value> = if tasks {
        json["policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["tasks"].as_array().unwrap())
            .collect()
    } else {
        json["items"].as_array().unwrap().iter().collect()
    };
    list.iter()
        .filter_map(|t| {
            let address = if tasks { &t["resource"] } else { &t["address"] };
            Some((address.as_str()?.to_owned(), t["diff"].as_str()?.to_owned()))
        })
        .collect()
}

#[test]
fn check_shows_the_diffs_apply_dry_run_shows() {
    let host = Host::new();
    host.env("DB_PASSWORD=opensesame\n");
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  secrets: [{{name: DB_PASSWORD}}]\n  tasks:\n    - name: motd\n      file: {{path: /etc/motd, content: \"welcome\\nto web1\\n\"}}\n    - name: app\n      file:\n        path: /etc/app.conf\n        content: |\n          port=2\n          password=${{secret:DB_PASSWORD}}\n          user=app\n    - name: journald\n      lineInFile: {{path: /etc/journald.conf, regexp: \"^SystemMaxUse=\", line: SystemMaxUse=1G, create: true}}\n"
        ),
    );
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0, "{report:#}");
    std::fs::write(host.path("/etc/motd"), "welcome\nto the new host\n").unwrap();
    std::fs::write(
        host.path("/etc/app.conf"),
        "port=1\npassword=opensesame\nuser=app\n",
    )
    .unwrap();
    std::fs::write(host.path("/etc/journald.conf"), "# j\nSystemMaxUse=2G\n").unwrap();

    let (_, apply_json) = host.apply(&["--dry-run"]);
    let (_, check_json, _) = host.run(&["drift", "check", "--output", "json"]);
    let check_json: serde_json::Value = serde_json::from_str(&check_json).unwrap();
    let from_apply = diffs(&apply_json, true);
    let from_check = diffs(&check_json, false);
    assert_eq!(from_check, from_apply);
    assert_eq!(from_check.len(), 3, "{from_check:#?}");
    assert_eq!(
        from_check["file:/etc/motd"],
        "--- /etc/motd (live)\n+++ /etc/motd (desired)\n@@ -1,2 +1,2 @@\n welcome\n-to the new host\n+to web1\n"
    );
    // Only the secret is masked: the changed line next to it stays visible.
    assert_eq!(
        from_check["file:/etc/app.conf"],
        "--- /etc/app.conf (live)\n+++ /etc/app.conf (desired)\n@@ -1,3 +1,3 @@\n-port=1\n+port=2\n password=<redacted>\n user=app\n"
    );

    let (_, apply_text, _) = host.run(&["apply", "--dry-run"]);
    let (code, check_text, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{check_text}");
    for diff in from_apply.values() {
        let indented: String = diff.lines().map(|l| format!("      {l}\n")).collect();
        assert!(apply_text.contains(&indented), "{apply_text}");
        assert!(check_text.contains(&indented), "{check_text}");
    }
    for out in [&apply_text, &check_text, &check_json.to_string()] {
        assert!(!out.contains("opensesame"), "{out}");
    }
    assert!(
        check_text.contains("  ~ file:/etc/app.conf  [test/app]\n      content: <redacted> → <redacted>\n      --- /etc/app.conf (live)\n"),
        "{check_text}"
    );
}

/// Drifts `/etc/motd` and the swappiness, resolves with `--prefer-system`, and returns the
/// policy file's new text; asserts the host is in sync with it afterwards.
fn resolve_in(name: &str, policy: &str) -> String {
    let host = Host::new();
    std::fs::create_dir_all(host.path("/proc/sys/vm")).unwrap();
    std::fs::write(host.path("/proc/sys/vm/swappiness"), "10\n").unwrap();
    host.policy(name, policy);
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0, "{report:#}");
    std::fs::write(host.path("/etc/motd"), "hello\nfrom the host\n").unwrap();
    std::fs::write(host.path("/proc/sys/vm/swappiness"), "60\n").unwrap();
    let (code, out, err) = host.run(&["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("wrote {name}: test/motd file.content set to the live value\nwrote {name}: test/swap sysctl.value set to the live value\n")
    );
    let (code, out, _) = host.run(&["drift", "check", "--detailed-exitcode"]);
    assert_eq!(code, 0, "{out}");
    std::fs::read_to_string(host.config.path().join(name)).unwrap()
}

#[test]
fn resolve_prefer_system_edits_flow_style_yaml() {
    let policy = format!("{HEADER}  tasks:\n    # the login banner\n    - name: motd\n      file: {{path: /etc/motd, content: \"hello\\n\"}}  # short\n    - {{name: swap, sysctl: {{name: vm.swappiness, value: \"10\", persist: false}}}}\n");
    let out = resolve_in("p.yaml", &policy);
    assert_eq!(
        out,
        policy
            .replace(
                r#"content: "hello\n"}"#,
                r#"content: "hello\nfrom the host\n"}"#
            )
            .replace(r#"value: "10""#, r#"value: "60""#)
    );
}

#[test]
fn resolve_prefer_system_edits_block_yaml_in_any_key_order() {
    // `name` after the task type, a quoted one-line value with a comment: the value becomes a
    // literal block and the comment moves after its header.
    let policy = format!("{HEADER}  tasks:\n    - file:\n        path: /etc/motd\n        content: \"hello\\n\"  # banner\n        mode: \"0644\"\n      name: motd\n    - sysctl:\n        name: vm.swappiness\n        value: '10'\n        persist: false\n      name: swap\n");
    let out = resolve_in("p.yaml", &policy);
    assert_eq!(
        out,
        policy
            .replace(
                "        content: \"hello\\n\"  # banner\n",
                "        content: |  # banner\n          hello\n          from the host\n"
            )
            .replace("value: '10'", "value: '60'")
    );
}

#[test]
fn resolve_prefer_system_edits_json() {
    let policy = r#"{
  "apiVersion": "driftless.dev/v1alpha1",
  "kind": "ApplyPolicy",
  "metadata": {"name": "test"},
  "spec": {
    "tasks": [
      {"name": "motd", "file": {"path": "/etc/motd", "content": "hello\n"}},
      {
        "name": "swap",
        "sysctl": {"name": "vm.swappiness", "value": "10", "persist": false}
      }
    ]
  }
}
"#;
    let out = resolve_in("p.json", policy);
    assert_eq!(
        out,
        policy
            .replace(
                r#""content": "hello\n""#,
                r#""content": "hello\nfrom the host\n""#
            )
            .replace(r#""value": "10""#, r#""value": "60""#)
    );
}

#[test]
fn resolve_prefer_system_edits_toml() {
    let policy = "# Host policy, in TOML\napiVersion = \"driftless.dev/v1alpha1\"\nkind = \"ApplyPolicy\"\n\n[metadata]\nname = \"test\"\n\n[[spec.tasks]]\nname = \"motd\"\n[spec.tasks.file]\npath = \"/etc/motd\"\ncontent = \"\"\"\nhello\n\"\"\"  # the banner\n\n[[spec.tasks]]\nname = \"swap\"\nsysctl = { name = \"vm.swappiness\", value = \"10\", persist = false }  # tuned\n";
    let out = resolve_in("p.toml", policy);
    assert_eq!(
        out,
        policy
            .replace(
                "\"\"\"\nhello\n\"\"\"",
                "\"\"\"\nhello\nfrom the host\n\"\"\""
            )
            .replace("value = \"10\"", "value = \"60\"")
    );
}

#[test]
fn resolve_prefer_system_says_what_to_edit_by_hand() {
    let host = Host::new();
    let policy = format!("{HEADER}  tasks:\n    - name: other\n      file: {{path: /etc/other, content: x}}\n---\n{HEADER}  vars:\n    banner: &banner \"hello\\n\"\n  tasks:\n    - name: motd\n      file: {{path: /etc/motd, content: *banner}}\n")
        .replacen("name: test", "name: first", 1);
    host.policy("p.yaml", &policy);
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0, "{report:#}");
    std::fs::write(host.path("/etc/motd"), "changed\n").unwrap();
    let (code, out, _) = host.run(&["drift", "resolve", "--prefer-system"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "refused file:/etc/motd: p.yaml (document 2): spec.tasks[0].file.content: is an alias (*NAME) of another node, not a value written out here; set spec.tasks[0].file.content to the content of the live file /etc/motd by hand\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.config.path().join("p.yaml")).unwrap(),
        policy
    );
}
