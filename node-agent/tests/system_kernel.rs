//! `sysctl`, `kernelModule` and `mount` against a temporary root with a fixture procfs
//! (`ROOT/proc/sys/...`, `ROOT/proc/modules`, `ROOT/proc/mounts`): live values are read and
//! written there, persisted files are real files in the root. Loading modules and mounting
//! need `--root /`, and fail clearly elsewhere.

#![allow(clippy::unwrap_used)]

mod system_support;

use std::path::Path;

use driftless_crds::apply_policy::{KernelModuleTask, MountTask, SysctlTask};
use system_support::{apply, attribute, check, converges, secrets};

fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("proc/sys/net/ipv4")).unwrap();
    std::fs::create_dir_all(p.join("proc/sys/vm")).unwrap();
    std::fs::create_dir_all(p.join("etc/sysctl.d")).unwrap();
    std::fs::write(p.join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
    std::fs::write(
        p.join("proc/sys/net/ipv4/tcp_rmem"),
        "4096\t131072\t6291456\n",
    )
    .unwrap();
    std::fs::write(p.join("proc/sys/vm/swappiness"), "60\n").unwrap();
    std::fs::write(
        p.join("proc/modules"),
        "br_netfilter 32768 0 - Live 0x0\noverlay 151552 0 - Live 0x0\n",
    )
    .unwrap();
    std::fs::write(
        p.join("proc/mounts"),
        "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /srv/data xfs rw 0 0\n",
    )
    .unwrap();
    std::fs::write(
        p.join("etc/fstab"),
        "# /etc/fstab\nUUID=abcd / ext4 errors=remount-ro 0 1\n\n# data disk\n/dev/sdb1 /srv/data xfs defaults 0 2\n",
    )
    .unwrap();
    dir
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap_or_default()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn sysctl_live_and_persisted() {
    let dir = root();
    let root = dir.path();
    let none = secrets(&[]);
    std::fs::write(
        root.join("etc/sysctl.d/99-driftless.conf"),
        "# kept\nvm.swappiness = 60\n",
    )
    .unwrap();
    let forward: SysctlTask = yaml("name: net.ipv4.ip_forward\nvalue: \"1\"\n");
    let plan = converges(&forward, root, &none);
    assert_eq!(
        attribute(&plan, "value"),
        (Some("0".into()), Some("1".into()))
    );
    assert_eq!(attribute(&plan, "persisted"), (None, Some("1".into())));
    assert!(plan
        .diff
        .as_deref()
        .unwrap()
        .contains("+net.ipv4.ip_forward = 1"));
    assert_eq!(read(root, "proc/sys/net/ipv4/ip_forward"), "1\n");
    assert_eq!(
        read(root, "etc/sysctl.d/99-driftless.conf"),
        "# kept\nvm.swappiness = 60\nnet.ipv4.ip_forward = 1\n"
    );
    // Whitespace-separated fields compare field by field.
    let rmem: SysctlTask =
        yaml("name: net.ipv4.tcp_rmem\nvalue: \"4096 131072  6291456\"\npersist: false\n");
    assert!(!apply(&rmem, root, &none).unwrap().is_change());
    // Persist only, in another file; the live value is left alone.
    let swap: SysctlTask =
        yaml("name: vm.swappiness\nvalue: \"10\"\nlive: false\nfile: /etc/sysctl.d/10-swap.conf\n");
    converges(&swap, root, &none);
    assert_eq!(read(root, "proc/sys/vm/swappiness"), "60\n");
    assert_eq!(
        read(root, "etc/sysctl.d/10-swap.conf"),
        "vm.swappiness = 10\n"
    );
    // An in-place edit of the persisted line, other lines kept.
    let swap_main: SysctlTask = yaml("name: vm.swappiness\nvalue: \"10\"\nlive: false\n");
    let edited = converges(&swap_main, root, &none);
    assert_eq!(
        attribute(&edited, "persisted"),
        (Some("60".into()), Some("10".into()))
    );
    assert_eq!(
        read(root, "etc/sysctl.d/99-driftless.conf"),
        "# kept\nvm.swappiness = 10\nnet.ipv4.ip_forward = 1\n"
    );
    // Unknown parameter.
    let nope: SysctlTask = yaml("name: net.nope\nvalue: \"1\"\n");
    let err = apply(&nope, root, &none).unwrap_err();
    assert!(
        err.starts_with("the kernel has no parameter net.nope"),
        "{err}"
    );
}

#[test]
fn kernel_modules_persisted_and_live_state() {
    let dir = root();
    let root = dir.path();
    let none = secrets(&[]);
    // Loaded already (per /proc/modules): only the files are written.
    let br: KernelModuleTask = yaml("name: br-netfilter\n");
    let plan = converges(&br, root, &none);
    assert_eq!(plan.attributes.len(), 1, "{plan:?}");
    assert_eq!(
        read(root, "etc/modules-load.d/br-netfilter.conf"),
        "# Managed by Driftless.\nbr-netfilter\n"
    );
    let bonding_params: KernelModuleTask = yaml("name: overlay\nparams: \"redirect_dir=on\"\n");
    converges(&bonding_params, root, &none);
    assert_eq!(
        read(root, "etc/modprobe.d/overlay.conf"),
        "# Managed by Driftless.\noptions overlay redirect_dir=on\n"
    );
    // Not loaded, root is not `/`: the dry run shows it, applying fails clearly.
    let wg: KernelModuleTask = yaml("name: wireguard\npersist: false\n");
    let dry = check(&wg, root, &none).unwrap();
    assert_eq!(
        attribute(&dry, "loaded"),
        (Some("false".into()), Some("true".into()))
    );
    assert_eq!(
        apply(&wg, root, &none).unwrap_err(),
        format!(
            "loading kernel module wireguard needs the live system: it is only done with --root / (the root is {})",
            root.display()
        )
    );
    // Absent: persisted files removed (it is not loaded, so nothing to unload).
    std::fs::write(
        root.join("proc/modules"),
        "br_netfilter 32768 0 - Live 0x0\n",
    )
    .unwrap();
    let overlay_gone: KernelModuleTask = yaml("name: overlay\nstate: absent\n");
    let removed = converges(&overlay_gone, root, &none);
    assert_eq!(
        removed.change,
        Some(driftless_crds::drift_report::ChangeType::Removed)
    );
    assert!(!root.join("etc/modprobe.d/overlay.conf").exists());
}

#[test]
fn mount_entries_keep_fstab_and_read_mount_state() {
    let dir = root();
    let root = dir.path();
    let none = secrets(&[]);
    // Already mounted; the fstab options change in place.
    let data: MountTask =
        yaml("path: /srv/data\ndevice: /dev/sdb1\nfstype: xfs\noptions: noatime,nodev\npass: 2\n");
    let plan = converges(&data, root, &none);
    assert_eq!(
        attribute(&plan, "fstab"),
        (
            Some("/dev/sdb1 /srv/data xfs defaults 0 2".into()),
            Some("/dev/sdb1 /srv/data xfs noatime,nodev 0 2".into())
        )
    );
    assert_eq!(
        read(root, "etc/fstab"),
        "# /etc/fstab\nUUID=abcd / ext4 errors=remount-ro 0 1\n\n# data disk\n/dev/sdb1 /srv/data xfs noatime,nodev 0 2\n"
    );
    // `present`: only the entry; mount state left alone.
    let nfs: MountTask = yaml(
        "path: /mnt/media files\ndevice: nas:/export\nfstype: nfs\noptions: ro,soft\nstate: present\n",
    );
    converges(&nfs, root, &none);
    assert!(read(root, "etc/fstab").ends_with("nas:/export /mnt/media\\040files nfs ro,soft 0 0\n"));
    // `mounted` for something not mounted, below a temporary root: fails clearly, after
    // the entry is in place.
    let mounted: MountTask =
        yaml("path: /mnt/media files\ndevice: nas:/export\nfstype: nfs\noptions: ro,soft\n");
    let err = apply(&mounted, root, &none).unwrap_err();
    assert_eq!(
        err,
        format!(
            "mounting /mnt/media files needs the live system: it is only done with --root / (the root is {})",
            root.display()
        )
    );
    // `absent`: the entry goes, comments stay.
    let gone: MountTask = yaml("path: /mnt/media files\nstate: absent\n");
    converges(&gone, root, &none);
    assert!(!read(root, "etc/fstab").contains("nas:/export"));
    assert!(read(root, "etc/fstab").starts_with("# /etc/fstab\n"));
}
