//! `driftless apply` with the file-like task types in a temporary root: every type applied
//! twice (the second run `unchanged`, the root byte-identical), real modes and owners, dry runs
//! that change nothing, secrets never printed.
#![allow(clippy::unwrap_used)]

mod apply_support;

use apply_support::*;

#[test]
fn file_inline_template_source_modes_and_owners_are_idempotent() {
    let host = Host::new();
    std::fs::write(host.config.path().join("motd.src"), "copied from source\n").unwrap();
    std::fs::write(host.config.path().join("motd.src.yaml.txt"), "").unwrap();
    host.policy(
        "files.yaml",
        &format!(
            "{HEADER}  vars:\n    admins: [alice, bob]\n  tasks:\n    - name: inline\n      file:\n        path: /etc/inline.conf\n        content: \"a=1\\n\"\n        mode: \"0640\"\n        owner: alice\n        group: staff\n    - name: templated\n      file:\n        path: /etc/motd\n        template: |\n          {{{{ facts.hostname }}}}: {{{{ vars.admins | join(\", \") }}}}\n    - name: copied\n      file:\n        path: /srv/deep/copied.txt\n        source: motd.src\n        owner: \"1001\"\n    - name: numeric\n      file:\n        path: /etc/empty\n        mode: \"2755\"\n"
        ),
    );
    std::fs::write(host.path("/etc/gone"), "old").unwrap();
    host.policy(
        "files2.yaml",
        "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: removal\nspec:\n  tasks:\n    - name: gone\n      file:\n        path: /etc/gone\n        state: absent\n",
    );
    assert_idempotent(&host);
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/inline.conf")).unwrap(),
        "a=1\n"
    );
    assert_eq!(mode(&host.path("/etc/inline.conf")), 0o640);
    assert_eq!(owner(&host.path("/etc/inline.conf")), (1001, 1001));
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/motd")).unwrap(),
        "web1: alice, bob\n"
    );
    assert_eq!(mode(&host.path("/etc/motd")), 0o644);
    assert_eq!(
        std::fs::read_to_string(host.path("/srv/deep/copied.txt")).unwrap(),
        "copied from source\n"
    );
    assert_eq!(owner(&host.path("/srv/deep/copied.txt")).0, 1001);
    assert_eq!(mode(&host.path("/etc/empty")), 0o2755);
    assert!(!host.path("/etc/gone").exists());

    // Drift on the mode only: changed in place, content untouched, reported before → after.
    std::fs::set_permissions(
        host.path("/etc/inline.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let (code, report) = host.apply(&["--dry-run"]);
    assert_eq!(code, 0);
    let t = task(&report, "inline");
    assert_eq!(t["status"], "changed");
    assert_eq!(
        t["attributes"],
        serde_json::json!([{"path": "mode", "before": "0666", "after": "0640"}])
    );
    assert_eq!(
        mode(&host.path("/etc/inline.conf")),
        0o666,
        "dry run changed the mode"
    );
    let (_, report) = host.apply(&[]);
    assert_eq!(task(&report, "inline")["status"], "changed");
    assert_eq!(mode(&host.path("/etc/inline.conf")), 0o640);
}

#[test]
fn dry_run_changes_nothing_and_shows_diffs() {
    let host = Host::new();
    std::fs::write(host.path("/etc/app.conf"), "port=80\nhost=a\n").unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: conf\n      file:\n        path: /etc/app.conf\n        content: \"port=8080\\nhost=a\\n\"\n    - name: dir\n      directory:\n        path: /opt/x\n"),
    );
    let before = host.snapshot();
    let (code, text, _) = host.run(&["apply", "--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(host.snapshot(), before, "a dry run wrote to the root");
    assert!(
        text.contains("-port=80\n") && text.contains("+port=8080\n"),
        "{text}"
    );
    assert!(text.contains("--- /etc/app.conf (live)"), "{text}");
    assert!(
        text.contains("+ dir [directory] directory:/opt/x: would change"),
        "{text}"
    );
    assert!(
        text.contains("2 would change, 0 unchanged, 0 failed, 0 skipped"),
        "{text}"
    );
}

#[test]
fn secret_content_never_appears_in_output() {
    let host = Host::new();
    host.env("TOKEN=s3cr3t-value\n");
    host.policy(
        "p.yaml",
        &format!("{HEADER}  secrets:\n    - name: TOKEN\n  tasks:\n    - name: token\n      file:\n        path: /etc/token\n        content: \"token=${{secret:TOKEN}}\\n\"\n        mode: \"0600\"\n    - name: line\n      lineInFile:\n        path: /etc/app.env\n        line: \"TOKEN=${{secret:TOKEN}}\"\n        create: true\n"),
    );
    for args in [
        &["apply", "--dry-run"][..],
        &["apply", "--dry-run", "--output", "json"],
        &["apply"],
        &["drift", "check"],
    ] {
        let (_, out, err) = host.run(args);
        assert!(
            !out.contains("s3cr3t") && !err.contains("s3cr3t"),
            "{args:?}: {out}{err}"
        );
        if args == ["apply", "--dry-run"] {
            assert!(out.contains("<redacted>"), "{out}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/token")).unwrap(),
        "token=s3cr3t-value\n"
    );
    assert_eq!(mode(&host.path("/etc/token")), 0o600);
    // Drift in secret content is reported without the content.
    std::fs::write(host.path("/etc/token"), "token=s3cr3t-valuX\n").unwrap();
    let (_, out, _) = host.run(&["apply", "--dry-run"]);
    assert!(
        out.contains("<redacted>") && !out.contains("s3cr3t"),
        "{out}"
    );
}

#[test]
fn directory_with_recursive_ownership_is_idempotent() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("/srv/data/sub")).unwrap();
    std::fs::write(host.path("/srv/data/sub/f"), "x").unwrap();
    std::fs::create_dir_all(host.path("/srv/old/inner")).unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: data\n      directory:\n        path: /srv/data\n        mode: \"0750\"\n        owner: alice\n        group: staff\n        recurse: true\n    - name: new\n      directory:\n        path: /srv/a/b/c\n    - name: old\n      directory:\n        path: /srv/old\n        state: absent\n"),
    );
    assert_idempotent(&host);
    assert_eq!(mode(&host.path("/srv/data")), 0o750);
    assert_eq!(owner(&host.path("/srv/data/sub/f")), (1001, 1001));
    assert_eq!(owner(&host.path("/srv/data/sub")), (1001, 1001));
    assert_eq!(mode(&host.path("/srv/a/b/c")), 0o755);
    assert!(!host.path("/srv/old").exists());
}

#[test]
fn symlink_is_idempotent_and_force_replaces() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("/opt/app")).unwrap();
    std::fs::write(host.path("/opt/app/current"), "a file in the way").unwrap();
    std::os::unix::fs::symlink("/old", host.path("/opt/wrong")).unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: link\n      symlink:\n        path: /opt/app/current\n        target: /opt/app/releases/1.0.0\n        force: true\n    - name: fix\n      symlink:\n        path: /opt/wrong\n        target: ../right\n    - name: new\n      symlink:\n        path: /opt/new/link\n        target: /etc/motd\n"),
    );
    let first = assert_idempotent(&host);
    assert_eq!(task(&first, "link")["replace"], true);
    assert_eq!(task(&first, "fix")["attributes"][0]["before"], "/old");
    assert_eq!(
        std::fs::read_link(host.path("/opt/app/current"))
            .unwrap()
            .to_str(),
        Some("/opt/app/releases/1.0.0")
    );
    assert_eq!(
        std::fs::read_link(host.path("/opt/wrong"))
            .unwrap()
            .to_str(),
        Some("../right")
    );
    assert_eq!(
        std::fs::read_link(host.path("/opt/new/link"))
            .unwrap()
            .to_str(),
        Some("/etc/motd")
    );

    // Without force, a file in the way is an error naming the fix.
    let host = Host::new();
    std::fs::write(host.path("/etc/x"), "").unwrap();
    host.policy("p.yaml", &format!("{HEADER}  tasks:\n    - name: link\n      symlink:\n        path: /etc/x\n        target: /y\n"));
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        task(&report, "link")["message"],
        "/etc/x exists and is not a symbolic link; set force: true to replace it"
    );
}

#[test]
fn line_in_file_is_idempotent() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("/etc/systemd")).unwrap();
    std::fs::write(
        host.path("/etc/systemd/journald.conf"),
        "[Journal]\n#SystemMaxUse=\n#Storage=auto\n",
    )
    .unwrap();
    std::fs::write(
        host.path("/etc/ssh_config"),
        "Host *\n  ForwardAgent yes\nMatch all\n",
    )
    .unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: journald\n      lineInFile:\n        path: /etc/systemd/journald.conf\n        regexp: \"^#?SystemMaxUse=\"\n        line: SystemMaxUse=500M\n    - name: after\n      lineInFile:\n        path: /etc/ssh_config\n        line: \"  Compression yes\"\n        insertAfter: \"^Host \"\n    - name: remove\n      lineInFile:\n        path: /etc/ssh_config\n        regexp: ForwardAgent\n        state: absent\n    - name: create\n      lineInFile:\n        path: /etc/new.conf\n        line: a=1\n        create: true\n"),
    );
    assert_idempotent(&host);
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/systemd/journald.conf")).unwrap(),
        "[Journal]\nSystemMaxUse=500M\n#Storage=auto\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/ssh_config")).unwrap(),
        "Host *\n  Compression yes\nMatch all\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/new.conf")).unwrap(),
        "a=1\n"
    );
}

#[test]
fn line_in_file_without_create_fails_clearly() {
    let host = Host::new();
    host.policy("p.yaml", &format!("{HEADER}  tasks:\n    - name: l\n      lineInFile:\n        path: /etc/missing\n        line: x\n"));
    let (code, report) = host.apply(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        task(&report, "l")["message"],
        "/etc/missing does not exist (set create: true to create it)"
    );
}

#[test]
fn block_in_file_is_idempotent() {
    let host = Host::new();
    std::fs::write(
        host.path("/etc/hosts"),
        "127.0.0.1 localhost\n# BEGIN OLD\nstale\n# END OLD\n",
    )
    .unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: hosts\n      blockInFile:\n        path: /etc/hosts\n        block: |\n          10.0.0.10 db.internal\n          10.0.0.11 cache.internal\n    - name: remove-old\n      blockInFile:\n        path: /etc/hosts\n        marker: \"# {{mark}} OLD\"\n        state: absent\n    - name: top\n      blockInFile:\n        path: /etc/profile\n        marker: \"## {{mark}} env\"\n        block: \"export A=1\"\n        insertBefore: BOF\n        create: true\n"),
    );
    assert_idempotent(&host);
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n# BEGIN DRIFTLESS MANAGED BLOCK\n10.0.0.10 db.internal\n10.0.0.11 cache.internal\n# END DRIFTLESS MANAGED BLOCK\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/profile")).unwrap(),
        "## BEGIN env\nexport A=1\n## END env\n"
    );
}

#[test]
fn cron_is_idempotent() {
    let host = Host::new();
    std::fs::write(host.path("/etc/cron.d/old-job"), "* * * * * root true\n").unwrap();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: cleanup\n      cron:\n        name: driftless-cleanup\n        schedule: \"30 3 * * *\"\n        command: find /tmp -xdev -mtime +7 -delete\n        env:\n          MAILTO: ops@example.com\n    - name: old\n      cron:\n        name: old-job\n        state: absent\n"),
    );
    assert_idempotent(&host);
    let path = host.path("/etc/cron.d/driftless-cleanup");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# Managed by Driftless (task cleanup); local changes are overwritten.\nMAILTO=ops@example.com\n30 3 * * * root find /tmp -xdev -mtime +7 -delete\n"
    );
    assert_eq!(mode(&path), 0o644);
    assert_eq!(owner(&path), (0, 0));
    assert!(!host.path("/etc/cron.d/old-job").exists());
}
