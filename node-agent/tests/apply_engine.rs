//! The execution model of `driftless apply`: `when`, `notify` handlers, `--only`/`--skip`,
//! failures stopping a policy, `ignoreErrors`, `Audit` mode, policy order, timeouts,
//! templates and root confinement, in temporary roots.
#![allow(clippy::unwrap_used)]

mod apply_support;

use apply_support::*;

fn file_task(name: &str, path: &str, content: &str) -> String {
    format!(
        "    - name: {name}\n      file:\n        path: {path}\n        content: \"{content}\"\n"
    )
}

#[test]
fn when_selects_tasks_from_facts_and_vars() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  vars:\n    role: web\n  tasks:\n    - name: yes\n      when: facts.hostname == 'web1' and vars.role == 'web'\n      file:\n        path: /etc/yes\n    - name: no\n      when: vars.role == 'db'\n      file:\n        path: /etc/no\n    - name: broken\n      when: vars.missing == 1\n      file:\n        path: /etc/broken\n"),
    );
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        statuses(&report),
        [
            ("yes".into(), "changed".into()),
            ("no".into(), "skipped".into()),
            ("broken".into(), "failed".into())
        ]
    );
    assert_eq!(task(&report, "no")["message"], "when is false");
    let msg = task(&report, "broken")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.starts_with("task \"broken\": when: undefined value"),
        "{msg}"
    );
    assert!(host.path("/etc/yes").exists() && !host.path("/etc/no").exists());
}

#[test]
fn handlers_run_once_at_the_end_in_handler_order() {
    let host = Host::new();
    std::fs::write(host.path("/etc/same"), "same").unwrap();
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  tasks:\n    - name: a\n      notify: [h2, h1]\n      file:\n        path: /etc/a\n    - name: b\n      notify: [h2]\n      file:\n        path: /etc/b\n    - name: c\n      notify: [h3]\n      file:\n        path: /etc/same\n        content: same\n  handlers:\n{}{}{}",
            file_task("h1", "/etc/h1", "1"),
            file_task("h2", "/etc/h2", "2"),
            file_task("h3", "/etc/h3", "3")
        ),
    );
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0, "{report:#}");
    let names: Vec<String> = statuses(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "c", "h1", "h2"]);
    assert_eq!(task(&report, "h1")["handler"], true);
    assert!(host.path("/etc/h1").exists() && host.path("/etc/h2").exists());
    assert!(
        !host.path("/etc/h3").exists(),
        "h3 ran although c did not change"
    );
    // Nothing changes the second time, so no handler runs.
    let (_, report) = host.apply(&[]);
    let names: Vec<String> = statuses(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn only_and_skip_select_by_name() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  tasks:\n{}{}{}",
            file_task("one", "/etc/one", "1"),
            file_task("two", "/etc/two", "2"),
            file_task("three", "/etc/three", "3")
        ),
    );
    let (_, report) = host.apply(&["--only", "one", "--only", "three", "--skip", "three"]);
    assert_eq!(
        statuses(&report),
        [
            ("one".into(), "changed".into()),
            ("two".into(), "skipped".into()),
            ("three".into(), "skipped".into())
        ]
    );
    assert_eq!(task(&report, "three")["message"], "--skip");
    assert!(host.path("/etc/one").exists());
    assert!(!host.path("/etc/two").exists() && !host.path("/etc/three").exists());
}

#[test]
fn a_failed_task_stops_its_policy_unless_ignore_errors() {
    let host = Host::new();
    host.policy(
        "a.yaml",
        &format!("{HEADER}  tasks:\n    - name: fails\n      lineInFile:\n        path: /etc/missing\n        line: x\n{}", file_task("after", "/etc/after", "x")),
    );
    host.policy(
        "b.yaml",
        &format!("apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: other\nspec:\n  tasks:\n    - name: tolerated\n      ignoreErrors: true\n      lineInFile:\n        path: /etc/missing\n        line: x\n{}", file_task("runs", "/etc/runs", "x")),
    );
    // A dry run changes nothing, so it goes on checking after a failure.
    let (code, report) = host.apply(&["--dry-run"]);
    assert_eq!(code, 1);
    assert_eq!(task(&report, "after")["status"], "changed");
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        statuses(&report),
        [
            ("fails".into(), "failed".into()),
            ("after".into(), "skipped".into()),
            ("tolerated".into(), "failed".into()),
            ("runs".into(), "changed".into())
        ]
    );
    assert_eq!(
        task(&report, "after")["message"],
        "task \"fails\" failed earlier"
    );
    assert!(!host.path("/etc/after").exists());
    assert!(host.path("/etc/runs").exists());
}

#[test]
fn audit_policies_are_only_checked() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  mode: Audit\n  tasks:\n{}",
            file_task("f", "/etc/audited", "x")
        ),
    );
    let before = host.snapshot();
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 0);
    assert_eq!(statuses(&report), [("f".into(), "changed".into())]);
    assert_eq!(report["policies"][0]["checkOnly"], true);
    assert_eq!(host.snapshot(), before);
    let (_, text, _) = host.run(&["apply"]);
    assert!(
        text.contains("[Audit: check only]")
            && text.contains("f [file] file:/etc/audited: would change"),
        "{text}"
    );
}

#[test]
fn policies_apply_in_file_order() {
    let host = Host::new();
    let policy = |name: &str, content: &str| {
        format!("apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: {name}\nspec:\n  tasks:\n{}", file_task(&format!("t-{name}"), "/etc/order", content))
    };
    host.policy("20-second.yaml", &policy("second", "second"));
    host.policy("10-first.yaml", &policy("first", "first"));
    let (_, report) = host.apply(&[]);
    let order: Vec<&str> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["first", "second"]);
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/order")).unwrap(),
        "second"
    );
}

#[test]
fn paths_escaping_the_root_are_refused() {
    let host = Host::new();
    // Lexical escapes never start: the configuration is refused.
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: dotdot\n      file:\n        path: /etc/../../../escaped\n"),
    );
    let (code, _, stderr) = host.run(&["apply"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("p.yaml: ApplyPolicy/test: spec.tasks[0].file.path: \"/etc/../../../escaped\" escapes the host root through \"..\""),
        "{stderr}"
    );
    // Escapes through a symlink in the root are refused when the task runs.
    std::os::unix::fs::symlink("../../../../../../../../tmp", host.path("/etc/out")).unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: link\n      ignoreErrors: true\n      file:\n        path: /etc/out/escaped\n    - name: line\n      lineInFile:\n        path: /etc/out/escaped-too\n        line: x\n        create: true\n"),
    );
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    let root = host.root.path().display().to_string();
    assert_eq!(
        task(&report, "link")["message"],
        format!("\"/etc/out/escaped\" escapes the host root {root}: symlink /etc/out points to ../../../../../../../../tmp, outside the root")
    );
    assert_eq!(task(&report, "line")["status"], "failed");
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    assert!(!std::path::Path::new("/tmp/escaped-too").exists());
    // An absolute symlink is a host path: it stays below the root.
    std::os::unix::fs::symlink("/srv", host.path("/etc/abs")).unwrap();
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  tasks:\n{}",
            file_task("abs", "/etc/abs/inside", "x")
        ),
    );
    let (code, _) = host.apply(&[]);
    assert_eq!(code, 0);
    assert!(host.path("/srv/inside").exists());
}

#[test]
fn template_errors_name_the_task_and_field() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: motd\n      file:\n        path: /etc/motd\n        template: \"{{{{ vars.nope }}}}\"\n"),
    );
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    let msg = task(&report, "motd")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.starts_with("task \"motd\": file.template: undefined value"),
        "{msg}"
    );

    // A template that does not even parse: the apply never starts.
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n{}    - name: motd\n      file:\n        path: /etc/motd\n        template: \"{{% if %}}\"\n", file_task("first", "/etc/first", "x")),
    );
    let (code, stdout, stderr) = host.run(&["apply"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("p.yaml: ApplyPolicy/test: spec.tasks[1].file.template: not a valid template: syntax error"), "{stderr}");
    assert!(
        !host.path("/etc/first").exists(),
        "a policy with a bad template started"
    );
}

#[test]
fn timeouts_kill_commands() {
    let host = Host::new();
    host.install_shell();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: spin\n      timeout: 300ms\n      command:\n        shell: \"while :; do :; done\"\n"),
    );
    let started = std::time::Instant::now();
    let (code, report) = host.apply(&[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(code, 1);
    let msg = task(&report, "spin")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.starts_with("/bin/sh was killed after") && msg.ends_with("the task's timeout ran out"),
        "{msg}"
    );
}

#[test]
fn the_standalone_example_dry_run_reports_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["apply", "--dry-run", "--config"])
        .arg(repo.join("config/examples/standalone"))
        .arg("--env-file")
        .arg(repo.join("config/examples/standalone.env"))
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ApplyPolicy/base (host.yaml (document 1)) [Enforce, dry run]",
        "  + motd [file] file:/etc/motd: would change",
        "  + app-dir [directory] directory:/opt/app: would change",
        "      target: (none) → /opt/app/releases/1.0.0",
        "  + backup-token [file] file:/etc/backup/token: would change",
        "      +SystemMaxUse=500M",
        "      +10.0.0.10 db.internal",
        "  + nightly-cleanup [cron] cron:/etc/cron.d/driftless-cleanup: would change",
        "  ~ initialise-app [command] command:/bin/sh: would change",
        "ApplyPolicy/accounts (host.yaml (document 2)) [Audit: check only]",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("example-token-not-secret"), "{text}");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "the dry run wrote to the root"
    );
}

#[test]
fn only_keeps_the_handlers_of_selected_tasks() {
    let host = Host::new();
    host.policy(
        "p.yaml",
        &format!(
            "{HEADER}  tasks:\n    - name: a\n      notify: [h]\n      file:\n        path: /etc/a\n{}  handlers:\n{}",
            file_task("b", "/etc/b", "b"),
            file_task("h", "/etc/h", "h")
        ),
    );
    let (_, report) = host.apply(&["--only", "a"]);
    assert_eq!(
        statuses(&report),
        [
            ("a".into(), "changed".into()),
            ("b".into(), "skipped".into()),
            ("h".into(), "changed".into())
        ]
    );
    assert!(host.path("/etc/h").exists());
}
