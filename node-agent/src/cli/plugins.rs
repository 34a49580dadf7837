//! `driftless plugins list|validate|install`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::plugins::{self, manifest, Plugin};

/// Flags of `driftless plugins`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the plugins in the plugin directory: name, version, kinds, digest; exits 1 when
    /// one of them is not a valid plugin.
    List {
        /// One JSON object per plugin instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a plugin (a name in the plugin directory, or a `.wasm` file): compile it, check
    /// its imports, exports and manifest, and optionally a configuration against its schema.
    Validate {
        /// Plugin name or path of a `.wasm` file.
        plugin: String,
        /// A JSON or YAML file with the `config` a policy would give it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Download (or copy) a plugin, check its digest and that it is a valid plugin, and put it
    /// in the plugin directory as `NAME.wasm` (NAME from its manifest).
    Install {
        /// `https://`, `http://` or `file://` URL, or a local path.
        source: String,
        /// The module's SHA-256 (`sha256:HEX` or `HEX`); nothing is installed when it differs.
        #[arg(long)]
        sha256: String,
    },
}

/// Runs the subcommand.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::List { json } => list(*json),
        Command::Validate { plugin, config } => validate(plugin, config.as_deref()),
        Command::Install { source, sha256 } => install(source, sha256),
    }
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let dir = &plugins::settings().dir;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => anyhow::bail!("{}: {e}", dir.display()),
    };
    files.sort();
    let mut bad = 0;
    if !json {
        println!(
            "{:<20} {:<10} {:<18} {:<14} FILE",
            "NAME", "VERSION", "KINDS", "SHA256"
        );
    }
    for file in &files {
        match Plugin::load_file(file) {
            Ok(p) => {
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
                let misnamed = stem.as_deref() != Some(p.manifest.name.as_str());
                if misnamed {
                    bad += 1;
                }
                if json {
                    let mut row = serde_json::json!({
                        "name": p.manifest.name,
                        "version": p.manifest.version,
                        "kinds": p.manifest.kinds,
                        "filters": p.manifest.filters,
                        "sha256": p.sha256,
                        "file": file,
                    });
                    if misnamed {
                        row["error"] = "the file name is not NAME.wasm".into();
                    }
                    println!("{row}");
                } else {
                    println!(
                        "{:<20} {:<10} {:<18} {:<14} {}{}",
                        p.manifest.name,
                        p.manifest.version,
                        manifest::kinds_text(&p.manifest.kinds).replace(' ', ""),
                        &p.sha256[..12],
                        file.display(),
                        if misnamed {
                            "  (error: the file name is not NAME.wasm)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => {
                bad += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": file, "error": e.to_string()})
                    );
                } else {
                    println!(
                        "{:<20} {:<10} {:<18} {:<14} {}  (error: {e})",
                        "-",
                        "-",
                        "-",
                        "-",
                        file.display()
                    );
                }
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn resolve(plugin: &str) -> PathBuf {
    if plugin.ends_with(".wasm") || plugin.contains('/') {
        PathBuf::from(plugin)
    } else {
        plugins::settings().dir.join(format!("{plugin}.wasm"))
    }
}

fn validate(plugin: &str, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = resolve(plugin);
    let p = match Plugin::load_file(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(config) = config {
        let text = std::fs::read_to_string(config)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        let docs = driftless_crds::yaml::parse_yaml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        let value = docs.into_iter().next().unwrap_or(serde_json::Value::Null);
        let problems = p.manifest.config_problems(&value);
        if !problems.is_empty() {
            for problem in &problems {
                eprintln!("{}: {problem}", config.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    println!(
        "{}: plugin {} {} ({}), sha256 {}",
        path.display(),
        p.manifest.name,
        p.manifest.version,
        manifest::kinds_text(&p.manifest.kinds),
        p.sha256
    );
    Ok(ExitCode::SUCCESS)
}

fn install(source: &str, sha256: &str) -> anyhow::Result<ExitCode> {
    let url = if source.contains("://") {
        source.to_owned()
    } else {
        let abs = std::fs::canonicalize(source).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        format!("file://{}", abs.display())
    };
    let result = plugins::fetch_verified("(install)", &url, sha256).and_then(|bytes| {
        let p = Plugin::load_bytes(Path::new(source), &bytes)?;
        let path = plugins::install_bytes(&p.manifest.name, &bytes, &plugins::settings().dir)?;
        Ok((p, path))
    });
    match result {
        Ok((p, path)) => {
            println!(
                "installed plugin {} {} ({}) as {}",
                p.manifest.name,
                p.manifest.version,
                manifest::kinds_text(&p.manifest.kinds),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
