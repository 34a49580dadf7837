//! Running Terraform, OpenTofu and Terragrunt — read-only commands only.
//!
//! Every process the runner starts for the IaC tool is built by [`checked_command`], which
//! refuses any subcommand outside [`READ_ONLY`] (`init`, `plan`, `show`, `version`,
//! `providers`): no `apply`, `destroy`, `import`, `state`, `taint`, `force-unlock`, `console`,
//! `run-all`, ... can be started by a scan. Stacks using `data "external"` (which runs an
//! arbitrary program during plan) are refused before `init` when the DriftScan asks for it.
//! The tool version a stack asks for picks the image through the job template ([`image_for`]).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use driftless_crds::drift_scan::{Engine, PlanOptions};
use regex::Regex;

use super::tfconfig;

/// The only subcommands a scan ever runs.
pub const READ_ONLY: &[&str] = &["init", "plan", "show", "version", "providers"];

/// Why a tool command failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A subcommand outside [`READ_ONLY`].
    #[error(
        "refused to run `{0}`: the scan runner only runs init, plan, show, version and providers"
    )]
    Refused(String),
    /// A plan argument that would change state or run code.
    #[error("refused argument `{0}`")]
    RefusedArgument(String),
    /// The stack uses `data "external"` and the DriftScan blocks it.
    #[error("stack uses data \"external\" ({0}), which spec.plan.blockExternalData forbids")]
    ExternalData(String),
    /// The tool could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The tool failed.
    #[error("`{command}` exited with {code}: {stderr}")]
    Failed {
        /// The command line (without paths).
        command: String,
        /// Exit code (-1 when killed).
        code: i32,
        /// Its standard error (tail), not yet redacted.
        stderr: String,
    },
    /// A stack file that spec.plan.blockExternalData must check does not parse.
    #[error("spec.plan.blockExternalData: {path} does not parse: {source}")]
    Parse {
        /// The file, relative to the repository.
        path: String,
        /// The parser's position and message.
        source: super::tfconfig::ParseError,
    },
    /// Reading stack files.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Arguments that could write state or run arbitrary code, refused anywhere in a command line.
const REFUSED_ARGS: &[&str] = &["-auto-approve", "-chdir", "--terragrunt-source-update"];

/// The single gate: builds the process for `program args...` only if `args[0]` is a read-only
/// subcommand and no refused argument appears.
pub fn checked_command(program: &Path, args: &[String]) -> Result<Command, EngineError> {
    let sub = args.first().map(String::as_str).unwrap_or("");
    if !READ_ONLY.contains(&sub) {
        return Err(EngineError::Refused(sub.to_owned()));
    }
    for arg in args {
        let name = arg.split('=').next().unwrap_or(arg);
        if REFUSED_ARGS.contains(&name) {
            return Err(EngineError::RefusedArgument(arg.clone()));
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    Ok(cmd)
}

/// The default program of an engine.
pub fn program(engine: Engine) -> &'static str {
    match engine {
        Engine::Terraform => "terraform",
        Engine::Tofu => "tofu",
        Engine::Terragrunt => "terragrunt",
    }
}

/// The commands planning one stack, in order (plan file name relative to the stack).
pub fn plan_commands(options: &PlanOptions, plan_file: &str) -> Vec<Vec<String>> {
    let mut plan = vec![
        "plan".to_owned(),
        "-input=false".to_owned(),
        "-detailed-exitcode".to_owned(),
        format!("-out={plan_file}"),
        format!("-lock={}", options.lock),
    ];
    if options.refresh_only {
        plan.push("-refresh-only".into());
    }
    for file in &options.var_files {
        plan.push(format!("-var-file={file}"));
    }
    vec![
        vec!["init".into(), "-input=false".into()],
        plan,
        vec!["show".into(), "-json".into(), plan_file.into()],
        vec!["show".into(), "-no-color".into(), plan_file.into()],
    ]
}

/// Output of one successful command.
#[derive(Debug)]
pub struct Output {
    /// Exit code (0, or 2 for `plan -detailed-exitcode` with changes).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
}

/// Runs one read-only command in `dir`; exit codes in `ok` count as success.
pub fn run(program: &Path, args: &[String], dir: &Path, ok: &[i32]) -> Result<Output, EngineError> {
    let mut cmd = checked_command(program, args)?;
    cmd.current_dir(dir)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .env("TERRAGRUNT_NON_INTERACTIVE", "true")
        .stdin(Stdio::null());
    let out = cmd.output().map_err(|source| EngineError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let code = out.status.code().unwrap_or(-1);
    if ok.contains(&code) {
        return Ok(Output {
            code,
            stdout: out.stdout,
        });
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.trim().is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Err(EngineError::Failed {
        command: args.first().cloned().unwrap_or_default(),
        code,
        stderr: tail(&strip_ansi(&stderr), 4000),
    })
}

fn strip_ansi(text: &str) -> String {
    static ANSI: OnceLock<Option<Regex>> = OnceLock::new();
    match ANSI.get_or_init(|| Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").ok()) {
        Some(re) => re.replace_all(text, "").into_owned(),
        None => text.to_owned(),
    }
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Finds `data "external"` in the `.tf` / `.tf.json` (and `.tofu` / `.tofu.json`) files of `stack` and of the local modules
/// it uses (`module` blocks with `source = "./..."` / `"../..."`, followed within `repo_root`).
/// Returns the file that uses it.
///
/// Files are parsed (native syntax with an HCL parser, JSON syntax with serde_json), so
/// comments, strings, heredocs and `locals` never count; only top-level blocks do. A file that
/// does not parse is an error naming it ([`EngineError::Parse`]): the check never passes a
/// stack it could not read.
pub fn find_external_data(stack: &Path, repo_root: &Path) -> Result<Option<PathBuf>, EngineError> {
    let mut queue = vec![stack.to_path_buf()];
    let mut seen = BTreeSet::new();
    let root = normalize(repo_root);
    while let Some(dir) = queue.pop() {
        let dir = normalize(&dir);
        if !dir.starts_with(&root) || !seen.insert(dir.clone()) {
            continue;
        }
        for (path, text) in tf_files(&dir)? {
            let parsed = if path.to_string_lossy().ends_with(".json") {
                tfconfig::json(&text)
            } else {
                tfconfig::native(&text)
            };
            let top = parsed.map_err(|source| EngineError::Parse {
                path: path
                    .strip_prefix(&root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                source,
            })?;
            if !top.external_data.is_empty() {
                return Ok(Some(path));
            }
            for module in top.module_sources {
                if tfconfig::is_local_source(&module) {
                    queue.push(dir.join(module));
                }
            }
        }
    }
    Ok(None)
}

/// `path` with `.` and `..` resolved lexically.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The `.tf`, `.tf.json`, `.tofu` and `.tofu.json` files directly in `dir`, with their text.
pub fn tf_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, EngineError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EngineError::Io {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // OpenTofu also reads `.tofu` / `.tofu.json`; they are checked whatever the engine.
        let config = [".tf", ".tf.json", ".tofu", ".tofu.json"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if !config || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.push((path, text));
    }
    out.sort();
    Ok(out)
}

// ---- version → image ------------------------------------------------------------------------

/// A version `MAJOR.MINOR.PATCH` (missing parts are 0; pre-release suffixes ignored).
type Version = (u64, u64, u64);

fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

/// Picks a version for a `required_version` constraint (`">= 1.3, < 2.0"`, `"~> 1.5.0"`,
/// `"1.6.2"`): `default` when it satisfies the constraint, else the exact pin, else the
/// `MAJOR.MINOR` of a `~>` constraint, else the lower bound of `>=`; `None` when none applies.
pub fn version_for_constraint(constraint: &str, default: &str) -> Option<String> {
    let mut exact = None;
    let mut pessimistic = None;
    let mut lower = None;
    let mut checks: Vec<(String, Version, usize)> = Vec::new();
    for part in constraint.split(',') {
        let part = part.trim();
        let (op, rest) = ["~>", ">=", "<=", "!=", ">", "<", "="]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|r| (*op, r.trim())))
            .unwrap_or(("=", part));
        let v = parse_version(rest)?;
        let parts = rest.split('.').count();
        match op {
            "=" => exact = Some(rest.trim_start_matches('v').to_owned()),
            "~>" if parts >= 3 => pessimistic = Some(format!("{}.{}", v.0, v.1)),
            ">=" => lower = Some(rest.trim_start_matches('v').to_owned()),
            _ => {}
        }
        checks.push((op.to_owned(), v, parts));
    }
    if let Some(d) = parse_version(default) {
        let ok = checks.iter().all(|(op, v, parts)| match op.as_str() {
            "=" => d == *v,
            "!=" => d != *v,
            ">" => d > *v,
            ">=" => d >= *v,
            "<" => d < *v,
            "<=" => d <= *v,
            "~>" => {
                d >= *v
                    && if *parts >= 3 {
                        d.0 == v.0 && d.1 == v.1
                    } else {
                        d.0 == v.0
                    }
            }
            _ => false,
        });
        if ok && !checks.is_empty() {
            return Some(default.to_owned());
        }
    }
    exact.or(pessimistic).or(lower)
}

/// The tool version the stack `stack` (relative to `repo_root`) asks for — the operator's
/// decision ([`crate::repo::stack_version`]) over the files of the work tree:
/// `.terragrunt-version` (Terragrunt stacks, i.e. with a `terragrunt.hcl`),
/// `.terraform-version` / `.opentofu-version` (in the stack or a parent up to the repository
/// root), `required_version` in the stack's `.tf` files, else `default`.
pub fn version_for(repo_root: &Path, stack: &str, default: &str) -> String {
    crate::repo::stack_version(&crate::repo::Snapshot::from_dir(repo_root), stack, default)
}

/// Renders the job template's image (`hashicorp/terraform:{{ version }}`) for a stack.
pub fn image_for(repo_root: &Path, stack: &str, template: &str, default: &str) -> String {
    render_image(template, &version_for(repo_root, stack, default))
}

/// Replaces `{{ version }}` (any spacing) in `template`.
pub fn render_image(template: &str, version: &str) -> String {
    static VAR: OnceLock<Option<Regex>> = OnceLock::new();
    match VAR.get_or_init(|| Regex::new(r"\{\{\s*version\s*\}\}").ok()) {
        Some(re) => re
            .replace_all(template, regex::NoExpand(version))
            .into_owned(),
        None => template.replace("{{ version }}", version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_read_only_subcommands() {
        let tf = Path::new("terraform");
        for ok in READ_ONLY {
            assert!(
                checked_command(tf, &args(&[ok, "-input=false"])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "apply",
            "destroy",
            "import",
            "state",
            "taint",
            "untaint",
            "force-unlock",
            "console",
            "refresh",
            "run-all",
            "workspace",
            "login",
            "",
            "-chdir=x",
            "PLAN",
        ] {
            assert!(
                matches!(
                    checked_command(tf, &args(&[bad, "plan"])),
                    Err(EngineError::Refused(_))
                ),
                "{bad}"
            );
        }
        assert!(checked_command(tf, &args(&[])).is_err());
        assert!(matches!(
            checked_command(tf, &args(&["plan", "-auto-approve"])),
            Err(EngineError::RefusedArgument(_))
        ));
        // Everything the runner plans to run passes the gate.
        let opts = PlanOptions {
            refresh_only: true,
            var_files: vec!["prod.tfvars".into()],
            ..PlanOptions::default()
        };
        for cmd in plan_commands(&opts, "p.plan") {
            assert!(checked_command(tf, &cmd).is_ok(), "{cmd:?}");
        }
    }

    /// OpenTofu and Terragrunt binaries cannot be installed on the test machines, so their
    /// command lines are checked here: the same read-only subcommands and flags, under their
    /// own program names.
    #[test]
    fn tofu_and_terragrunt_command_lines() {
        let opts = PlanOptions {
            refresh_only: true,
            var_files: vec!["env/prod.tfvars".into()],
            ..PlanOptions::default()
        };
        for (engine, name) in [
            (Engine::Terraform, "terraform"),
            (Engine::Tofu, "tofu"),
            (Engine::Terragrunt, "terragrunt"),
        ] {
            assert_eq!(program(engine), name);
            let lines: Vec<(String, Vec<String>)> = plan_commands(&opts, ".driftless.tfplan")
                .iter()
                .map(|cmd| {
                    let c = checked_command(Path::new(program(engine)), cmd).unwrap();
                    (
                        c.get_program().to_string_lossy().into_owned(),
                        c.get_args()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect(),
                    )
                })
                .collect();
            let expected: Vec<(String, Vec<String>)> = [
                &["init", "-input=false"][..],
                &[
                    "plan",
                    "-input=false",
                    "-detailed-exitcode",
                    "-out=.driftless.tfplan",
                    "-lock=false",
                    "-refresh-only",
                    "-var-file=env/prod.tfvars",
                ][..],
                &["show", "-json", ".driftless.tfplan"][..],
                &["show", "-no-color", ".driftless.tfplan"][..],
            ]
            .iter()
            .map(|a| (name.to_owned(), args(a)))
            .collect();
            assert_eq!(lines, expected, "{name}");
        }
        let tg = Path::new("terragrunt");
        for bad in [
            &["run-all", "plan"][..],
            &["apply"][..],
            &["plan", "--terragrunt-source-update"][..],
            &["plan", "-auto-approve"][..],
        ] {
            assert!(checked_command(tg, &args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plan_flags() {
        let cmds = plan_commands(&PlanOptions::default(), "x.plan");
        assert_eq!(
            cmds[1],
            args(&[
                "plan",
                "-input=false",
                "-detailed-exitcode",
                "-out=x.plan",
                "-lock=false"
            ])
        );
        let opts = PlanOptions {
            refresh_only: true,
            lock: true,
            ..PlanOptions::default()
        };
        let cmds = plan_commands(&opts, "x.plan");
        assert!(cmds[1].contains(&"-refresh-only".to_owned()));
        assert!(cmds[1].contains(&"-lock=true".to_owned()));
    }

    #[test]
    fn constraints() {
        assert_eq!(
            version_for_constraint(">= 1.3", "1.9.8").as_deref(),
            Some("1.9.8")
        );
        assert_eq!(
            version_for_constraint("1.5.7", "1.9.8").as_deref(),
            Some("1.5.7")
        );
        assert_eq!(
            version_for_constraint("= 1.5.7", "1.9.8").as_deref(),
            Some("1.5.7")
        );
        assert_eq!(
            version_for_constraint("~> 1.5.0", "1.9.8").as_deref(),
            Some("1.5")
        );
        assert_eq!(
            version_for_constraint("~> 1.0", "1.9.8").as_deref(),
            Some("1.9.8")
        );
        assert_eq!(
            version_for_constraint(">= 1.10, < 2", "1.9.8").as_deref(),
            Some("1.10")
        );
        assert_eq!(version_for_constraint("< 1.0", "1.9.8"), None);
        assert_eq!(version_for_constraint("garbage", "1.9.8"), None);
    }

    #[test]
    fn image_from_pins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join(".git")).unwrap();
        let stack = root.join("live/a");
        std::fs::create_dir_all(&stack).unwrap();
        let t = "hashicorp/terraform:{{ version }}";
        assert_eq!(
            image_for(root, "live/a", t, "1.9.8"),
            "hashicorp/terraform:1.9.8"
        );
        std::fs::write(
            stack.join("versions.tf"),
            "terraform {\n  # required_version = \"9\"\n  required_version = \"~> 1.5.0\"\n}\n",
        )
        .unwrap();
        assert_eq!(
            image_for(root, "live/a", t, "1.9.8"),
            "hashicorp/terraform:1.5"
        );
        std::fs::write(root.join(".terraform-version"), "1.7.5\n").unwrap();
        assert_eq!(
            image_for(root, "live/a", t, "1.9.8"),
            "hashicorp/terraform:1.7.5"
        );
        std::fs::write(stack.join("terragrunt.hcl"), "").unwrap();
        std::fs::write(stack.join(".terragrunt-version"), "0.55.1").unwrap();
        assert_eq!(
            image_for(root, "live/a", "tg:{{version}}", "x"),
            "tg:0.55.1"
        );
    }

    #[test]
    fn external_data_in_stack_and_local_modules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let stack = root.join("live/a");
        let module = root.join("modules/ext");
        std::fs::create_dir_all(&stack).unwrap();
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(
            stack.join("main.tf"),
            "# data \"external\" \"x\" {}\noutput \"a\" { value = 1 }\n",
        )
        .unwrap();
        assert!(find_external_data(&stack, root).unwrap().is_none());
        std::fs::write(
            stack.join("mod.tf"),
            "module \"m\" {\n  source = \"../../modules/ext\"\n}\n",
        )
        .unwrap();
        assert!(find_external_data(&stack, root).unwrap().is_none());
        std::fs::write(
            module.join("main.tf"),
            "data \"external\" \"run\" {\n  program = [\"sh\"]\n}\n",
        )
        .unwrap();
        let hit = find_external_data(&stack, root).unwrap().unwrap();
        assert!(hit.ends_with("modules/ext/main.tf"), "{hit:?}");
        std::fs::write(module.join("main.tf"), "").unwrap();
        std::fs::write(
            stack.join("x.tf.json"),
            r#"{"data": {"external": {"x": {}}}}"#,
        )
        .unwrap();
        assert!(find_external_data(&stack, root).unwrap().is_some());
    }

    /// The corpus in `tests/fixtures/hcl/`: each directory is a repository root with a stack in
    /// `stack/` and an `expect` file: `none`, `hit <file>` or `error <file> line <n>`.
    #[test]
    fn external_data_fixture_corpus() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hcl");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        assert!(cases.len() >= 14, "{cases:?}");
        let mut wrong = Vec::new();
        for root in &cases {
            let name = root.file_name().unwrap().to_string_lossy();
            let expect = std::fs::read_to_string(root.join("expect")).unwrap();
            let expect: Vec<&str> = expect.split_whitespace().collect();
            let got = find_external_data(&root.join("stack"), root);
            let ok = match (expect.as_slice(), &got) {
                (["none"], Ok(None)) => true,
                (["hit", file], Ok(Some(hit))) => hit == &root.join(file),
                (["error", file, "line", line], Err(err)) => {
                    let text = err.to_string();
                    text.starts_with(&format!(
                        "spec.plan.blockExternalData: {file} does not parse: line {line}, column "
                    ))
                }
                _ => false,
            };
            if !ok {
                wrong.push(format!("{name}: expected {expect:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
