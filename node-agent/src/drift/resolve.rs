//! `driftless drift resolve --prefer-system`: writes the live value back into the policy file,
//! for the drift kinds where "the live value" is one field of one task: `file` inline content,
//! `lineInFile` line, `sysctl` value and `package` version. Everything else is refused.
//!
//! Guarantees: the file is edited in place by [`super::edit`] — YAML (block or flow style),
//! JSON or TOML — so only that field's value changes; comments, key order, quoting of other
//! values and the other documents stay as they were. The edited file is loaded again with the
//! real loader before it atomically replaces the original, and the edit is refused unless the
//! task then declares exactly the live value. Values that came from a secret or a template are
//! never written back. Every refusal names the policy file, the document and the field path,
//! says why, and what to set by hand.

use std::path::{Path, PathBuf};

use driftless_crds::apply_policy::{ApplyPolicy, Task, TaskAction};
use driftless_crds::drift_report::DriftItem;
use driftless_crds::resource::Resource;

use super::edit::{self, Format, Target};
use crate::apply::Root;
use crate::config::{self, Config, Origin, StandaloneSecrets};

/// What `--prefer-system` did with each item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// `FILE: POLICY/TASK KIND.FIELD set to the live value` for each value written back.
    pub written: Vec<String>,
    /// `ADDRESS: FILE (document N): FIELD PATH: why` for each item refused.
    pub refused: Vec<String>,
}

/// The field to set and its live value.
struct WriteBack {
    kind: &'static str,
    field: &'static str,
    value: String,
    /// What the live value is, for a hand edit, when it is too long to quote.
    long: String,
}

impl WriteBack {
    /// The value to type by hand: quoted when short and on one line, else described.
    fn by_hand(&self) -> String {
        if self.value.len() <= 80 && !self.value.contains('\n') {
            format!("{:?}", self.value)
        } else {
            self.long.clone()
        }
    }
}

/// The task named `name` and its path in the document (`spec.tasks[2]`).
fn find_task<'a>(policy: &'a ApplyPolicy, name: &str) -> Option<(String, &'a Task)> {
    let find = |list: &'a [Task], key: &str| {
        list.iter()
            .position(|t| t.name == name)
            .map(|i| (format!("spec.{key}[{i}]"), &list[i]))
    };
    find(&policy.spec.tasks, "tasks").or_else(|| find(&policy.spec.handlers, "handlers"))
}

/// The field and live value to write back for one item, or why not.
fn live_value(task: &Task, item: &DriftItem, root: &Root) -> Result<WriteBack, String> {
    let before = |attr: &str| {
        item.attributes
            .iter()
            .find(|a| a.path == attr)
            .and_then(|a| a.before.clone())
    };
    let only = |allowed: &[&str]| -> Result<(), String> {
        let other: Vec<&str> = item
            .attributes
            .iter()
            .map(|a| a.path.as_str())
            .filter(|p| !allowed.contains(p))
            .collect();
        if other.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} drift cannot be written back; only {} can (use --prefer-manifest, or edit the policy)",
                other.join(", "),
                allowed.first().copied().unwrap_or_default()
            ))
        }
    };
    let no_refs = |text: &str| {
        if text.contains("${") {
            Err("the declared value uses ${...} references; refusing to write a secret or environment value into the policy".to_owned())
        } else {
            Ok(())
        }
    };
    let back = |kind, field, value: String, long: String| WriteBack {
        kind,
        field,
        value,
        long,
    };
    match &task.action {
        TaskAction::File(file) => {
            let Some(content) = &file.content else {
                return Err("the content comes from a template or source file, not an inline value; edit that instead".into());
            };
            no_refs(content)?;
            only(&["content"])?;
            let path = root.resolve(&file.path).map_err(|e| e.to_string())?;
            let live = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the live file {}: {e}", file.path))?;
            let long = format!("the content of the live file {}", file.path);
            Ok(back("file", "content", live, long))
        }
        TaskAction::LineInFile(lif) => {
            no_refs(lif.line.as_deref().unwrap_or_default())?;
            only(&["line", "content"])?;
            let live = before("line").ok_or_else(|| {
                "the live file has no line matching regexp; nothing to write back".to_owned()
            })?;
            let long = format!("the line of {} that matches regexp", lif.path);
            Ok(back("lineInFile", "line", live, long))
        }
        TaskAction::Sysctl(s) => {
            no_refs(&s.value)?;
            only(&["value", "persisted"])?;
            // The running kernel's value when it drifted, else the persisted one.
            let live = before("value")
                .or_else(|| before("persisted"))
                .ok_or("the live value is unknown")?;
            let long = format!("the live value of {}", s.name);
            Ok(back("sysctl", "value", live, long))
        }
        TaskAction::Package(p) => {
            only(&["version", "held"])?;
            let live = before("version").ok_or("the package is not installed on the host; nothing to write back")?;
            let long = format!("the installed version of {}", p.name);
            Ok(back("package", "version", live, long))
        }
        other => Err(format!(
            "--prefer-system does not apply to {} tasks (only file content, lineInFile, sysctl value and package version); use --prefer-manifest or edit the policy",
            other.key()
        )),
    }
}

/// Writes the live value of every item back into its policy file.
pub fn prefer_system(
    config: &Config,
    config_dir: &Path,
    secrets: &StandaloneSecrets,
    root: &Root,
    items: &[DriftItem],
) -> Resolution {
    let mut out = Resolution::default();
    for item in items {
        match resolve_item(config, config_dir, secrets, root, item) {
            Ok(done) => out.written.push(done),
            Err(why) => out.refused.push(format!("{}: {why}", item.address)),
        }
    }
    out
}

/// Writes one item's live value back, or says why not.
fn resolve_item(
    config: &Config,
    config_dir: &Path,
    secrets: &StandaloneSecrets,
    root: &Root,
    item: &DriftItem,
) -> Result<String, String> {
    let (policy_name, task_name) = item
        .source
        .as_deref()
        .and_then(|s| s.split_once('/'))
        .ok_or("no source task")?;
    let (policy, origin) = config
        .resources
        .iter()
        .find_map(|l| match &l.resource {
            Resource::ApplyPolicy(p) if p.metadata.name.as_deref() == Some(policy_name) => {
                Some((p, &l.origin))
            }
            _ => None,
        })
        .ok_or_else(|| format!("policy {policy_name:?} not found"))?;
    let at = format!("{} (document {})", origin.file.display(), origin.document);
    let (task_path, task) = find_task(policy, task_name)
        .ok_or_else(|| format!("{at}: task {task_name:?} not found"))?;
    let wb = live_value(task, item, root)
        .map_err(|why| format!("{at}: {task_path}.{}: {why}", task.action.key()))?;
    let target = Target {
        document: origin.document,
        task: task_name,
        kind: wb.kind,
        field: wb.field,
    };
    write_back(config_dir, origin, &target, &wb, policy_name, secrets)
        .map_err(|why| format!("{at}: {why}"))?;
    Ok(format!(
        "{}: {policy_name}/{task_name} {}.{} set to the live value",
        origin.file.display(),
        wb.kind,
        wb.field
    ))
}

/// Edits the file, checks the edit with the real loader, and replaces the file atomically.
/// Errors start with the field path and end with what to set by hand.
fn write_back(
    config_dir: &Path,
    origin: &Origin,
    target: &Target,
    wb: &WriteBack,
    policy: &str,
    secrets: &StandaloneSecrets,
) -> Result<(), String> {
    let file = config_dir.join(&origin.file);
    let guessed = format!("{}.{}", target.kind, target.field);
    let by_hand = |path: &str| format!("set {path} to {} by hand", wb.by_hand());
    let format = Format::of(&file).ok_or_else(|| {
        format!(
            "{guessed}: the file is not YAML, JSON or TOML; {}",
            by_hand(&guessed)
        )
    })?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read it: {e}"))?;
    let edited = edit::set_field(format, &text, target, &wb.value)
        .map_err(|e| format!("{e}; {}", by_hand(&e.path)))?;
    verify(&file, &edited.text, policy, target, &wb.value, secrets).map_err(|why| {
        format!(
            "{}: {why}, so the file was left as it was; {}",
            edited.path,
            by_hand(&edited.path)
        )
    })?;
    replace_file(&file, &edited.text).map_err(|e| format!("cannot write it: {e}"))
}

/// Writes `text` next to `file` and renames it over `file`, keeping its permissions.
fn replace_file(file: &Path, text: &str) -> std::io::Result<()> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".driftless-tmp");
    let tmp = file.with_file_name(name);
    let result = std::fs::write(&tmp, text).and_then(|()| {
        if let Ok(meta) = std::fs::metadata(file) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, file)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads the edited file alone with the real loader and checks the task now says `value`.
fn verify(
    file: &Path,
    edited: &str,
    policy: &str,
    target: &Target,
    value: &str,
    secrets: &StandaloneSecrets,
) -> Result<(), String> {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "driftless-resolve-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let name = file
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "policy.yaml".into());
    let loaded = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(&name), edited))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            config::load(&dir, secrets).map_err(|e| format!("the edited file would not load: {e}"))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = loaded?;
    let now = loaded.resources.iter().find_map(|l| match &l.resource {
        Resource::ApplyPolicy(p) if p.metadata.name.as_deref() == Some(policy) => {
            find_task(p, target.task).map(|(_, t)| t.clone())
        }
        _ => None,
    });
    let json = now
        .map(|t| serde_json::to_value(&t).unwrap_or_default())
        .unwrap_or_default();
    let declared = json
        .get(target.kind)
        .and_then(|k| k.get(target.field))
        .and_then(|v| v.as_str());
    if declared == Some(value) {
        Ok(())
    } else {
        Err("the edited file, loaded again, did not declare the live value".into())
    }
}
