use std::path::Path;

use super::*;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/standalone")
}

fn secrets(pairs: &[(&str, &str)]) -> StandaloneSecrets {
    StandaloneSecrets::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        EnvFile::default(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn errors(dir: &Path) -> Vec<String> {
    load(dir, &secrets(&[]))
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn loads_the_standalone_example() {
    let config = load(&example_dir(), &secrets(&[("BACKUP_TOKEN", "t")])).unwrap();
    let counts = config.counts();
    assert_eq!(counts["ApplyPolicy"], 2);
    assert_eq!(counts["FactsPolicy"], 1);
    assert_eq!(counts["LogPipeline"], 1);
    assert_eq!(counts["DriftScan"], 1);
    let scan = config.of_kind("DriftScan").next().unwrap();
    assert_eq!(scan.origin.file, Path::new("scans/infra.json"));
    let accounts = config
        .of_kind("ApplyPolicy")
        .find(|l| l.resource.name() == "accounts")
        .unwrap();
    assert_eq!(accounts.origin.to_string(), "host.yaml (document 2)");
}

#[test]
fn missing_secret_names_the_reference_and_where_to_put_it() {
    let got: Vec<String> = load(&example_dir(), &secrets(&[]))
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "host.yaml (document 1): ApplyPolicy/base: spec.tasks[3].file.content: \
          ${secret:BACKUP_TOKEN} has no value: set the environment variable BACKUP_TOKEN or add \
          it to an env file (--env-file)"
        ]
    );
}

#[test]
fn reports_every_problem_in_every_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        r#"
apiVersion: driftless.dev/v1alpha1
kind: ApplyPolicy
metadata: {name: web}
spec:
  tasks:
    - name: motd
      file: {path: /etc/motd, mode: "0x644"}
    - name: both
      file: {path: /a}
      directory: {path: /b}
    - name: none
---
apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {name: logs}
spec:
  sources: [{name: app, include: ["/var/log/*.log"], format: regex}]
  sinks: [{name: out, file: {directory: /tmp/x}, colour: red}]
"#,
    );
    write(
        dir.path(),
        "nested/b.toml",
        "apiVersion = \"driftless.dev/v1alpha1\"\nkind = \"Widget\"\n[metadata]\nname = \"w\"\n",
    );
    write(dir.path(), "c.json", "{\"apiVersion\": ");
    write(dir.path(), "README.md", "not configuration");
    assert_eq!(
        errors(dir.path()),
        [
            "a.yaml (document 1): ApplyPolicy/web: spec.tasks[0].file.mode: \"0x644\" is not an octal mode such as \"0644\"",
            "a.yaml (document 1): ApplyPolicy/web: spec.tasks[1]: exactly one task type must be set, one of: file, directory, symlink, lineInFile, blockInFile, package, service, sysctl, user, group, kernelModule, mount, cron, command, plugin",
            "a.yaml (document 1): ApplyPolicy/web: spec.tasks[2]: exactly one task type must be set, one of: file, directory, symlink, lineInFile, blockInFile, package, service, sysctl, user, group, kernelModule, mount, cron, command, plugin",
            "a.yaml (document 2): LogPipeline/logs: spec.sinks[0].colour: unknown field; expected one of: file, http, name, s3, syslog",
            "a.yaml (document 2): LogPipeline/logs: spec.sources[0]: regex must be set exactly when format is regex",
            "c.json: invalid JSON: EOF while parsing a value at line 1 column 15",
            "nested/b.toml: Widget/w: kind: unknown kind \"Widget\"; expected one of ApplyPolicy, FactsPolicy, LogPipeline, DriftScan",
        ]
    );
}

#[test]
fn rules_run_once_structure_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "logs.yaml",
        r#"
apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {name: logs}
spec:
  sources:
    - {name: app, include: ["/var/log/*.log"], format: regex}
    - {name: app, kubernetes: true, multiline: {startPattern: "^x", continuationPattern: "^ "}}
  sinks: [{name: out, file: {directory: /tmp/x}}]
"#,
    );
    assert_eq!(
        errors(dir.path()),
        [
            "logs.yaml: LogPipeline/logs: spec.sources[0]: regex must be set exactly when format is regex",
            "logs.yaml: LogPipeline/logs: spec.sources[1].multiline: exactly one of startPattern and continuationPattern must be set",
            "logs.yaml: LogPipeline/logs: spec.sources: names must be unique",
        ]
    );
}

#[test]
fn semantic_problems_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        r#"
apiVersion: driftless.dev/v1alpha1
kind: ApplyPolicy
metadata: {name: p}
spec:
  tasks:
    - name: sshd
      lineInFile: {path: /etc/ssh/sshd_config, regexp: "^(Permit", line: x}
      notify: [restart-ssh]
    - name: token
      file: {path: /etc/t, content: "${secret:UNDECLARED}", owner: "${vault:x}"}
"#,
    );
    write(
        dir.path(),
        "scan.yaml",
        r#"
apiVersion: driftless.dev/v1alpha1
kind: DriftScan
metadata: {name: s, namespace: default}
spec:
  source: {git: {url: "file:///r", stacks: [../outside]}}
  schedule: "61 * * * *"
"#,
    );
    let got = errors(dir.path());
    assert_eq!(got.len(), 6, "{got:#?}");
    assert_eq!(got[0], "p.yaml: ApplyPolicy/p: spec.tasks[1].file.content: ${secret:UNDECLARED} names no secret declared in spec.secrets");
    assert_eq!(got[1], "p.yaml: ApplyPolicy/p: spec.tasks[1].file.owner: \"${vault:x}\" is not a reference: write ${env:NAME} or ${secret:NAME} (and $${ for a literal ${)");
    assert_eq!(got[2], "p.yaml: ApplyPolicy/p: spec.tasks[0].notify[0]: no handler named \"restart-ssh\" in spec.handlers");
    assert!(got[3].starts_with("p.yaml: ApplyPolicy/p: spec.tasks[0].lineInFile.regexp: \"^(Permit\" is not a valid regular expression: "), "{}", got[3]);
    assert_eq!(got[4], "scan.yaml: DriftScan/s: spec.schedule: \"61 * * * *\" is not a valid cron expression: Component error: Number out of bounds.");
    assert_eq!(got[5], "scan.yaml: DriftScan/s: spec.source.git.stacks[0]: \"../outside\" must be a path inside the repository (relative, no \"..\")");
}

#[test]
fn duplicate_resources_name_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        "apiVersion: driftless.dev/v1alpha1\nkind: FactsPolicy\nmetadata: {name: f}\nspec: {}\n";
    write(dir.path(), "one.yaml", policy);
    write(dir.path(), "two.yml", policy);
    assert_eq!(
        errors(dir.path()),
        ["two.yml: FactsPolicy/f: metadata.name: FactsPolicy \"f\" is already defined in one.yaml"]
    );
}

#[test]
fn missing_directory_is_one_clear_error() {
    let got = errors(Path::new("/nonexistent/driftless"));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("cannot read configuration directory /nonexistent/driftless:"),
        "{}",
        got[0]
    );
}
