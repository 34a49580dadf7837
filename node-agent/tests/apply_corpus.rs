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

/// Inputs too large for the corpus directory, generated here: each is refused with the line and
/// the limit it broke. How long a refusal takes is measured outside the tests (the figures are in
/// docs/decisions.md, "YAML library"); the parser refuses as it meets the first level too many.
#[test]
fn nesting_and_size_bombs_are_refused_naming_line_and_limit() {
    let cases = [
        (
            "100,000 nested flow sequences (200 KB)",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            "policy.yaml: invalid YAML: nesting deeper than 128 levels at line 1, column 129",
        ),
        (
            "50,000 nested flow mappings",
            format!("{}1{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
            "policy.yaml: invalid YAML: nesting deeper than 128 levels at line 1, column 513",
        ),
        (
            "1,000 indented block mappings",
            (0..1_000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect(),
            "policy.yaml: invalid YAML: nesting deeper than 128 levels at line 129, column 129",
        ),
        (
            "a 5 MiB file",
            format!("kind: ApplyPolicy\n#{}\n", "x".repeat(5 << 20)),
            "policy.yaml: file is larger than the limit of 4194304 bytes",
        ),
    ];
    let secrets = tempfile::tempdir().unwrap();
    let env = secrets.path().join("env");
    std::fs::write(&env, "").unwrap();
    for (what, text, expected) in cases {
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("policy.yaml"), text).unwrap();
        let (code, stderr) = run(&["validate"], config.path(), &env, None);
        let prefix = format!("{}: ", config.path().display());
        let got: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("found; nothing was applied"))
            .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
            .collect();
        assert_eq!((code, got), (1, vec![expected]), "{what}");
    }
}
