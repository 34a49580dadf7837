//! `user` and `group` against real account files in a temporary root, checked with the real
//! `pwck -r -R ROOT` and `grpck -r -R ROOT` (Debian's `passwd` package).

#![allow(clippy::unwrap_used)]

mod system_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use driftless_crds::apply_policy::{GroupTask, UserTask};
use system_support::{apply, attribute, check, converges, require_tool, secrets};

const SCRIPT: &str = ".ci/tools/apply.sh";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["etc/skel/.config", "root", "usr/sbin", "bin", "home"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for shell in ["bin/bash", "bin/sh", "usr/sbin/nologin"] {
        std::fs::write(root.join(shell), "").unwrap();
        std::fs::set_permissions(root.join(shell), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(root.join("etc/skel/.profile"), "# profile\n").unwrap();
    std::fs::write(root.join("etc/skel/.config/app"), "x\n").unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        std::fs::write(root.join("etc").join(name), text).unwrap();
        std::fs::set_permissions(
            root.join("etc").join(name),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
    };
    write(
        "passwd",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
        0o644,
    );
    write(
        "shadow",
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
        0o640,
    );
    write("group", "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n", 0o644);
    write("gshadow", "root:*::\ndaemon:*::\nsudo:*::\n", 0o640);
    write(
        "login.defs",
        "# test\nUID_MIN 1000\nUID_MAX 60000\nSYS_UID_MIN 100\nSYS_UID_MAX 999\nGID_MIN 1000\nGID_MAX 60000\nHOME_MODE 0750\n",
        0o644,
    );
    dir
}

fn pwck_grpck(root: &Path) {
    require_tool("pwck", SCRIPT);
    require_tool("grpck", SCRIPT);
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .args(["-r", "-R"])
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} found problems: {}{}\nfiles:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
            std::fs::read_to_string(root.join("etc/group")).unwrap()
        );
    }
}

fn user(yaml: &str) -> UserTask {
    serde_saphyr::from_str(yaml).unwrap()
}

fn group(yaml: &str) -> GroupTask {
    serde_saphyr::from_str(yaml).unwrap()
}

fn line(root: &Path, file: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(root.join("etc").join(file))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(str::to_owned)
}

#[test]
fn groups_and_users_converge_and_pass_pwck() {
    let dir = setup();
    let root = dir.path();
    let lookup = secrets(&[("ALICE_HASH", "$6$rounds=5000$salt$abcdefghijklmnop")]);
    pwck_grpck(root);

    let ops = converges(&group("name: ops\nsystem: true\n"), root, &lookup);
    assert_eq!(attribute(&ops, "gid"), (None, Some("999".into())));
    let devs = converges(&group("name: devs\ngid: 2500\n"), root, &lookup);
    assert_eq!(attribute(&devs, "gid"), (None, Some("2500".into())));
    assert_eq!(line(root, "gshadow", "devs").as_deref(), Some("devs:!::"));

    let alice = user(
        "name: alice\nshell: /bin/bash\ngroups: [ops, sudo]\ncreateHome: true\ncomment: Alice\npasswordHash: ${secret:ALICE_HASH}\n",
    );
    let first = converges(&alice, root, &lookup);
    assert_eq!(attribute(&first, "uid"), (None, Some("1000".into())));
    assert_eq!(
        attribute(&first, "passwordHash"),
        (None, Some("<redacted>".into()))
    );
    assert!(!format!("{first:?}").contains("abcdefghijklmnop"));
    assert_eq!(
        line(root, "passwd", "alice").as_deref(),
        Some("alice:x:1000:1000:Alice:/home/alice:/bin/bash")
    );
    assert_eq!(
        line(root, "group", "alice").as_deref(),
        Some("alice:x:1000:")
    );
    assert_eq!(
        line(root, "group", "ops").as_deref(),
        Some("ops:x:999:alice")
    );
    assert_eq!(
        line(root, "group", "sudo").as_deref(),
        Some("sudo:x:27:alice")
    );
    assert_eq!(
        line(root, "gshadow", "sudo").as_deref(),
        Some("sudo:*::alice")
    );
    assert!(line(root, "shadow", "alice")
        .unwrap()
        .starts_with("alice:$6$rounds=5000$salt$abcdefghijklmnop:"));
    // Home from /etc/skel, owned by the user, HOME_MODE.
    let home = root.join("home/alice");
    let meta = std::fs::metadata(&home).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (1000, 1000, 0o750)
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".profile")).unwrap(),
        "# profile\n"
    );
    assert_eq!(
        std::fs::metadata(home.join(".config/app")).unwrap().uid(),
        1000
    );
    // Modes of the files are kept, backups written, no lock left behind.
    let shadow_mode = std::fs::metadata(root.join("etc/shadow")).unwrap().mode() & 0o777;
    assert_eq!(shadow_mode, 0o640);
    assert!(root.join("etc/passwd-").exists());
    assert!(!root.join("etc/passwd.lock").exists());

    // A system user without a home: uid from the system range, nologin.
    let svc = converges(
        &user("name: svc-web\nsystem: true\nshell: /usr/sbin/nologin\nhome: /usr/sbin\n"),
        root,
        &lookup,
    );
    assert_eq!(attribute(&svc, "uid"), (None, Some("999".into())));
    pwck_grpck(root);

    // Drift made by hand is put back: a changed shell and an extra group.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        passwd.replace("/home/alice:/bin/bash", "/home/alice:/bin/sh"),
    )
    .unwrap();
    let group_file = std::fs::read_to_string(root.join("etc/group")).unwrap();
    std::fs::write(
        root.join("etc/group"),
        group_file.replace("devs:x:2500:", "devs:x:2500:alice"),
    )
    .unwrap();
    let fixed = converges(&alice, root, &lookup);
    assert_eq!(
        attribute(&fixed, "shell"),
        (Some("/bin/sh".into()), Some("/bin/bash".into()))
    );
    assert_eq!(
        attribute(&fixed, "groups"),
        (Some("devs,ops,sudo".into()), Some("ops,sudo".into()))
    );

    // A new hash from the secret is applied and reported redacted.
    let rotated = secrets(&[("ALICE_HASH", "$6$rounds=5000$salt$rotatedhashvalue")]);
    let dry = check(&alice, root, &rotated).unwrap();
    assert_eq!(
        attribute(&dry, "passwordHash"),
        (Some("<redacted>".into()), Some("<redacted>".into()))
    );
    converges(&alice, root, &rotated);
    assert!(line(root, "shadow", "alice")
        .unwrap()
        .contains("rotatedhashvalue"));
    pwck_grpck(root);

    // Removal: the user, its private group and its memberships go; the home stays.
    let gone = converges(&user("name: alice\nstate: absent\n"), root, &lookup);
    assert_eq!(
        gone.change,
        Some(driftless_crds::drift_report::ChangeType::Removed)
    );
    assert_eq!(line(root, "passwd", "alice"), None);
    assert_eq!(line(root, "shadow", "alice"), None);
    assert_eq!(line(root, "group", "alice"), None);
    assert_eq!(line(root, "group", "ops").as_deref(), Some("ops:x:999:"));
    assert!(home.exists());
    converges(&group("name: devs\nstate: absent\n"), root, &lookup);
    assert_eq!(line(root, "group", "devs"), None);
    pwck_grpck(root);
}

#[test]
fn literal_hashes_conflicts_and_locks_are_refused() {
    let dir = setup();
    let root = dir.path();
    let none = secrets(&[]);
    let literal = user("name: eve\npasswordHash: $6$salt$literal\n");
    assert_eq!(
        apply(&literal, root, &none).unwrap_err(),
        "user.passwordHash must come from a secret (${secret:NAME}); a literal hash in the policy is refused"
    );
    let missing = user("name: eve\npasswordHash: ${secret:NOPE}\n");
    assert_eq!(
        apply(&missing, root, &none).unwrap_err(),
        "user.passwordHash: ${secret:NOPE}: no secret named \"NOPE\" is defined"
    );
    assert_eq!(
        apply(&user("name: eve\nuid: 0\n"), root, &none).unwrap_err(),
        "uid 0 is already used by user root"
    );
    assert_eq!(
        apply(&user("name: eve\ngroups: [nope]\n"), root, &none).unwrap_err(),
        "group nope does not exist (add a group task before this one)"
    );
    // Another program (here: this test, by PID 1's number, which is alive) holds the lock.
    std::fs::write(root.join("etc/group.lock"), "1").unwrap();
    let started = std::time::Instant::now();
    let err = apply(&group("name: ops\n"), root, &none);
    // The plan succeeds, execution waits for the lock and then gives up.
    let err = err.unwrap_err();
    assert!(err.contains("group.lock is held by process 1"), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    assert_eq!(line(root, "group", "ops"), None);
    assert!(
        !root.join("etc/passwd.lock").exists(),
        "locks taken are released"
    );
}
