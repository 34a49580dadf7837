//! motd: a task plugin in Rust. Keeps the file `config.path` holding exactly `config.text`
//! (e.g. /etc/motd): the plan compares, the apply writes.

#[path = "../../sdk/rust/driftless.rs"]
mod driftless;

use std::cell::RefCell;
use std::fs;
use std::io::ErrorKind;

const MANIFEST: &str = r#"{"name":"motd","version":"1.0.0","abi":1,"kinds":["task"],
 "configSchema":{"type":"object","properties":{"path":{"type":"string"},"text":{"type":"string"}},
                 "required":["path","text"],"additionalProperties":false}}"#;

#[derive(Clone)]
struct Config {
    path: String,
    text: String,
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = RefCell::new(None);
}

fn config() -> Result<Config, String> {
    CONFIG.with(|c| c.borrow().clone()).ok_or_else(|| "motd: not configured".to_string())
}

#[no_mangle]
pub extern "C" fn driftless_manifest() -> i64 {
    driftless::pack(MANIFEST.as_bytes())
}

/// {"config": {"path": "/etc/motd", "text": "..."}}: remembers both.
#[no_mangle]
pub extern "C" fn driftless_init(ptr: i32, len: i32) -> i64 {
    driftless::call(ptr, len, |input| {
        let config = driftless::member(input, "config").unwrap_or("{}");
        let field = |key| match driftless::string_member(config, key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(format!("motd: config.{} is required", key)),
            Err(e) => Err(format!("motd: config.{}", e)),
        };
        let (path, text) = (field("path")?, field("text")?);
        CONFIG.with(|c| *c.borrow_mut() = Some(Config { path, text }));
        Ok("{}".to_string())
    })
}

/// {"dryRun": bool} -> the plan: in sync (change null), or the content to add or change. Only
/// reads: during planning the granted directories are read-only.
#[no_mangle]
pub extern "C" fn driftless_task_plan(ptr: i32, len: i32) -> i64 {
    driftless::call(ptr, len, |_input| {
        let Config { path, text } = config()?;
        if fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(format!("{}: is a directory", path));
        }
        let current = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {}", path, e)),
        };
        let resource = driftless::quote(&format!("motd:{}", path));
        Ok(match current {
            Some(bytes) if bytes == text.as_bytes() => format!(
                r#"{{"resource":{},"change":null,"attributes":[],"diff":null}}"#,
                resource
            ),
            current => {
                let (change, before) = match current {
                    None => ("added", "null".to_string()),
                    Some(bytes) => ("changed", driftless::quote(&String::from_utf8_lossy(&bytes))),
                };
                format!(
                    r#"{{"resource":{},"change":"{}","attributes":[{{"path":"content","before":{},"after":{}}}],"diff":null}}"#,
                    resource,
                    change,
                    before,
                    driftless::quote(&text)
                )
            }
        })
    })
}

/// {"plan": <the plan>} -> {}: writes the text.
#[no_mangle]
pub extern "C" fn driftless_task_apply(ptr: i32, len: i32) -> i64 {
    driftless::call(ptr, len, |_input| {
        let Config { path, text } = config()?;
        fs::write(&path, text).map_err(|e| format!("{}: {}", path, e))?;
        Ok("{}".to_string())
    })
}
