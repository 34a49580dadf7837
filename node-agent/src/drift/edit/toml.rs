//! TOML edits with `toml_edit` (see [`super`]): tasks as `[[spec.tasks]]` tables or an inline
//! array, task types as sub-tables, inline tables or dotted keys.

use toml_edit::{DocumentMut, Formatted, Item, TableLike, Value};

use super::{EditError, Edited, Target};

/// `text` with the target field set to `value`.
pub fn set_field(text: &str, target: &Target, value: &str) -> Result<Edited, EditError> {
    let fail = |path: &str, reason: String| EditError {
        path: path.to_owned(),
        reason,
    };
    if target.document != 1 {
        return Err(fail(
            "",
            format!("has no document {} (TOML files have one)", target.document),
        ));
    }
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        fail(
            "",
            format!("cannot be parsed for editing: {}", e.to_string().trim()),
        )
    })?;
    let spec = doc
        .get_mut("spec")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| fail("spec", "not found, or not a table".into()))?;
    let (task_path, task) = find_task(spec, target.task)?;
    let kind_path = format!("{task_path}.{}", target.kind);
    let kind = task
        .get_mut(target.kind)
        .ok_or_else(|| fail(&kind_path, "not found".into()))?
        .as_table_like_mut()
        .ok_or_else(|| fail(&kind_path, "is not a table".into()))?;
    let path = format!("{kind_path}.{}", target.field);
    match kind.get_mut(target.field) {
        Some(item) => {
            let Some(Value::String(old)) = item.as_value() else {
                return Err(fail(&path, "is not a string".into()));
            };
            let mut new = Formatted::new(value.to_owned());
            *new.decor_mut() = old.decor().clone();
            *item = Item::Value(Value::String(new));
        }
        None => {
            kind.insert(target.field, Item::Value(Value::from(value)));
        }
    }
    Ok(Edited {
        text: doc.to_string(),
        path,
    })
}

/// The task named `name` in `spec.tasks` or `spec.handlers`, with its path.
fn find_task<'a>(
    spec: &'a mut dyn TableLike,
    name: &str,
) -> Result<(String, &'a mut dyn TableLike), EditError> {
    let named = |t: &dyn TableLike| t.get("name").and_then(Item::as_str) == Some(name);
    // Which list and index first, then one mutable borrow to return.
    let mut at = None;
    for list in ["tasks", "handlers"] {
        let index = match spec.get(list) {
            Some(Item::ArrayOfTables(tables)) => tables.iter().position(|t| named(t)),
            Some(Item::Value(Value::Array(array))) => array
                .iter()
                .position(|v| v.as_inline_table().is_some_and(|t| named(t))),
            _ => None,
        };
        if let Some(i) = index {
            at = Some((list, i));
            break;
        }
    }
    let not_found = || EditError {
        path: "spec.tasks".into(),
        reason: format!("no task named {name:?} is written out in this file"),
    };
    let (list, i) = at.ok_or_else(not_found)?;
    let task: Option<&mut dyn TableLike> = match spec.get_mut(list) {
        Some(Item::ArrayOfTables(tables)) => tables.get_mut(i).map(|t| t as &mut dyn TableLike),
        Some(Item::Value(Value::Array(array))) => array
            .get_mut(i)
            .and_then(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    };
    Ok((format!("spec.{list}[{i}]"), task.ok_or_else(not_found)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(
        text: &str,
        task: &str,
        kind: &str,
        field: &str,
        value: &str,
    ) -> Result<String, EditError> {
        let target = Target {
            document: 1,
            task,
            kind,
            field,
        };
        set_field(text, &target, value).map(|e| e.text)
    }

    const POLICY: &str = "# Host policy\napiVersion = \"driftless.dev/v1alpha1\"\nkind = \"ApplyPolicy\"\n\n[metadata]\nname = \"base\"\n\n[[spec.tasks]]\nname = \"motd\"\n[spec.tasks.file]\npath = \"/etc/motd\"\ncontent = \"\"\"\nhello\n\"\"\"  # the banner\nmode = \"0644\"\n\n[[spec.tasks]]\nname = \"swap\"\nsysctl = { name = \"vm.swappiness\", value = \"10\" }  # tuned\n\n[[spec.tasks]]\nname = \"curl\"\npackage.name = \"curl\"\n";

    #[test]
    fn replaces_strings_and_keeps_comments_and_layout() {
        let out = set(POLICY, "motd", "file", "content", "hello\nworld\n").unwrap();
        assert_eq!(
            out,
            POLICY.replace("\"\"\"\nhello\n\"\"\"", "\"\"\"\nhello\nworld\n\"\"\"")
        );
        let out = set(POLICY, "swap", "sysctl", "value", "60").unwrap();
        assert_eq!(out, POLICY.replace("value = \"10\"", "value = \"60\""));
    }

    #[test]
    fn adds_a_missing_key_to_dotted_keys() {
        let out = set(POLICY, "curl", "package", "version", "7.88.1-10").unwrap();
        assert_eq!(
            out,
            POLICY.replace(
                "package.name = \"curl\"\n",
                "package.name = \"curl\"\npackage.version = \"7.88.1-10\"\n"
            )
        );
    }

    #[test]
    fn names_the_path_it_could_not_reach() {
        let e = set(POLICY, "nope", "file", "content", "x").unwrap_err();
        assert_eq!(e.path, "spec.tasks");
        let e = set(POLICY, "motd", "sysctl", "value", "x").unwrap_err();
        assert_eq!(e.path, "spec.tasks[0].sysctl");
        let text = "[[spec.tasks]]\nname = \"m\"\nfile = { path = \"/p\", content = 3 }\n";
        let e = set(text, "m", "file", "content", "x").unwrap_err();
        assert_eq!(e.to_string(), "spec.tasks[0].file.content: is not a string");
    }
}
