//! The malformed-policy corpus: every file in `tests/corpus/` is refused by `driftless validate`
//! with exactly the messages in its `# expect:` header lines (and `driftless apply` refuses it
//! too, changing nothing).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], config: &Path, env: &Path, root: Option<&Path>) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_driftless"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--env-file")
        .arg(env);
    if let Some(root) = root {
        command.arg("--root").arg(root);
    }
    let out = command
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ENV_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_malformed_policy_is_refused_with_its_exact_message() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus has only {} files",
        files.len()
    );
    let secrets = tempfile::tempdir().unwrap();
    let env = secrets.path().join("env");
    std::fs::write(&env, "").unwrap();
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_owned)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("policy.yaml"), &text).unwrap();
        let (code, stderr) = run(&["validate"], config.path(), &env, None);
        let prefix = format!("{}: ", config.path().display());
        let got: Vec<String> = stderr
            .lines()
            .filter(|l| !l.contains("found; nothing was applied"))
            .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_owned())
            .collect();
        if code != 1 || got != expected {
            failures.push(format!(
                "{}: exit {code}\n  expected: {expected:#?}\n  got: {got:#?}",
                file.file_name().unwrap().to_string_lossy()
            ));
            continue;
        }
        let root = tempfile::tempdir().unwrap();
        let (code, _) = run(&["apply"], config.path(), &env, Some(root.path()));
        assert_eq!(code, 1, "{}: apply did not refuse it", file.display());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "{}: apply wrote to the root",
            file.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
