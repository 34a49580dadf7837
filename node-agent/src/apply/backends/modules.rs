//! Kernel modules: loaded state from `PROC/modules`, `modprobe` / `modprobe -r` on the live
//! system only, persisted `/etc/modules-load.d/NAME.conf` and `/etc/modprobe.d/NAME.conf`
//! (for parameters).

use std::path::PathBuf;

use super::{read_optional, require_live_root, BackendError, Cmd};
use crate::host::HostPaths;

/// Module names are compared with `-` and `_` as the same character, as the kernel does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Whether `/proc/modules` lists the module.
pub fn is_loaded(proc_modules: &str, name: &str) -> bool {
    let name = normalize(name);
    proc_modules
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|loaded| normalize(loaded) == name)
}

/// The content of `/etc/modules-load.d/NAME.conf`.
pub fn load_file_content(name: &str) -> String {
    format!("# Managed by Driftless.\n{name}\n")
}

/// The content of `/etc/modprobe.d/NAME.conf` for parameters.
pub fn options_file_content(name: &str, params: &str) -> String {
    format!(
        "# Managed by Driftless.\noptions {name} {}\n",
        params.trim()
    )
}

/// `ROOT/etc/modules-load.d/NAME.conf`.
pub fn load_file(paths: &HostPaths, name: &str) -> PathBuf {
    paths.host(format!("etc/modules-load.d/{name}.conf"))
}

/// Whether the host kernel has the module loaded.
pub fn loaded(paths: &HostPaths, name: &str) -> Result<bool, BackendError> {
    let path = paths.proc("modules");
    let text = read_optional(&path)?.ok_or_else(|| {
        BackendError::Invalid(format!(
            "{} does not exist: cannot tell which modules are loaded",
            path.display()
        ))
    })?;
    Ok(is_loaded(&text, name))
}

/// The modprobe command to load (with parameters) or unload a module.
pub fn modprobe_command(name: &str, load: bool, params: Option<&str>) -> Cmd {
    if load {
        let cmd = Cmd::new("modprobe").arg(name);
        match params {
            Some(p) => cmd.args(p.split_whitespace()),
            None => cmd,
        }
    } else {
        Cmd::new("modprobe").args(["-r", name])
    }
}

/// Loads or unloads the module in the running kernel (root `/` only).
pub fn set_loaded(
    paths: &HostPaths,
    name: &str,
    load: bool,
    params: Option<&str>,
) -> Result<(), BackendError> {
    let what = if load { "loading" } else { "unloading" };
    require_live_root(paths, &format!("{what} kernel module {name}"))?;
    modprobe_command(name, load, params).run().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES: &str = "br_netfilter 32768 0 - Live 0x0000000000000000\nnf_conntrack 172032 3 xt_conntrack,nf_nat, Live 0x0\n";

    #[test]
    fn reads_loaded_modules() {
        assert!(is_loaded(MODULES, "br_netfilter"));
        assert!(is_loaded(MODULES, "br-netfilter"));
        assert!(is_loaded(MODULES, "nf_conntrack"));
        assert!(!is_loaded(MODULES, "overlay"));
        assert!(!is_loaded(MODULES, "nf"));
    }

    #[test]
    fn persisted_files_and_commands() {
        assert_eq!(
            load_file_content("overlay"),
            "# Managed by Driftless.\noverlay\n"
        );
        assert_eq!(
            options_file_content("bonding", " mode=4 miimon=100 "),
            "# Managed by Driftless.\noptions bonding mode=4 miimon=100\n"
        );
        assert_eq!(
            modprobe_command("bonding", true, Some("mode=4 miimon=100")).to_string(),
            "modprobe bonding mode=4 miimon=100"
        );
        assert_eq!(
            modprobe_command("bonding", false, None).to_string(),
            "modprobe -r bonding"
        );
        let paths = HostPaths::under("/host");
        assert_eq!(
            load_file(&paths, "overlay"),
            PathBuf::from("/host/etc/modules-load.d/overlay.conf")
        );
        let err = set_loaded(&paths, "overlay", true, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "loading kernel module overlay needs the live system: it is only done with --root / (the root is /host)"
        );
    }
}
