//! `command` tasks run below the root (through chroot) with `creates` and `unless` guards.
#![allow(clippy::unwrap_used)]

mod apply_support;

use apply_support::*;

#[test]
fn guarded_commands_are_idempotent() {
    let host = Host::new();
    host.install_shell();
    host.env("GREETING=hello-secret\n");
    host.policy(
        "p.yaml",
        &format!("{HEADER}  secrets:\n    - name: GREETING\n  tasks:\n    - name: init\n      command:\n        argv: [/bin/sh, -c, \"echo initialised > /opt/.initialised\"]\n        creates: /opt/.initialised\n    - name: marker\n      command:\n        shell: \"echo $GREETING >> marker\"\n        cwd: /opt\n        env:\n          GREETING: \"${{secret:GREETING}}\"\n        unless: \"test -s /opt/marker\"\n"),
    );
    std::fs::create_dir_all(host.path("/opt")).unwrap();
    assert_idempotent(&host);
    assert_eq!(
        std::fs::read_to_string(host.path("/opt/.initialised")).unwrap(),
        "initialised\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/opt/marker")).unwrap(),
        "hello-secret\n"
    );
    let (_, out, err) = host.run(&["apply", "--dry-run"]);
    assert!(!out.contains("hello-secret") && !err.contains("hello-secret"));
}

#[test]
fn unguarded_commands_always_change_and_failures_report_stderr() {
    let host = Host::new();
    host.install_shell();
    host.policy(
        "p.yaml",
        &format!("{HEADER}  tasks:\n    - name: count\n      command:\n        shell: \"echo x >> /count\"\n    - name: bad\n      command:\n        shell: \"echo oops >&2; exit 3\"\n"),
    );
    for _ in 0..2 {
        let (code, report) = host.apply(&[]);
        assert_eq!(code, 1);
        assert_eq!(task(&report, "count")["status"], "changed");
        assert_eq!(
            task(&report, "count")["attributes"][0]["before"],
            "unguarded: runs on every apply"
        );
        assert_eq!(
            task(&report, "bad")["message"],
            "/bin/sh exited with 3: oops"
        );
    }
    assert_eq!(
        std::fs::read_to_string(host.path("/count")).unwrap(),
        "x\nx\n"
    );
    // A dry run does not run it.
    let (_, report) = host.apply(&["--dry-run"]);
    assert_eq!(task(&report, "count")["status"], "changed");
    assert_eq!(
        std::fs::read_to_string(host.path("/count")).unwrap(),
        "x\nx\n"
    );
}
