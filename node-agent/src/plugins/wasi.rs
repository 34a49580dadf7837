//! The part of WASI preview 1 a plugin gets: files below the directories its policy grants,
//! clocks, random bytes, and standard output/error accepted and dropped; and one call of the
//! agent's own, `driftless.tcp_connect`, which connects only to the endpoints the policy grants.
//! Nothing else: no environment, no arguments, no other directories or hosts. Every other
//! preview-1 function answers `ENOSYS`; other imports are refused before the plugin runs
//! ([`check_imports`]).
//!
//! Paths are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the
//! granted directory's descriptor, so `..`, absolute paths and symlinks cannot leave it; the
//! kernel decides, not string checks. A write grant is writable only while the host says so
//! ([`Sandbox::writable`]): a task plugin's `apply` call, never its plan.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use wasmtime::{Caller, Extern, FuncType, Linker, Module, Val};

/// The WASI module name.
pub const WASI: &str = "wasi_snapshot_preview1";
/// The module of the agent's own calls.
pub const HOST: &str = "driftless";
/// Time allowed to connect, and for each read or write on a connection.
const NET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every function of WASI preview 1; the ones not implemented here answer `ENOSYS`.
const PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// The functions with a real implementation below.
const IMPLEMENTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_read",
    "fd_seek",
    "fd_sync",
    "fd_datasync",
    "fd_tell",
    "fd_write",
    "path_filestat_get",
    "path_open",
    "proc_exit",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

// WASI errno values.
const SUCCESS: i32 = 0;
const EACCES: i32 = 2;
const EBADF: i32 = 8;
const EEXIST: i32 = 20;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EIO: i32 = 29;
const EISDIR: i32 = 31;
const ELOOP: i32 = 32;
const EMFILE: i32 = 33;
const ENAMETOOLONG: i32 = 37;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTDIR: i32 = 54;
const ENOTSUP: i32 = 58;
const ENOTCAPABLE: i32 = 76;

const RIGHT_FD_WRITE: u64 = 1 << 6;
const ALL_RIGHTS: u64 = (1 << 29) - 1;
const OFLAG_CREAT: i32 = 1;
const OFLAG_DIRECTORY: i32 = 2;
const OFLAG_EXCL: i32 = 4;
const OFLAG_TRUNC: i32 = 8;
const FDFLAG_APPEND: i32 = 1;

/// Most descriptors one instance may hold open.
const MAX_FDS: usize = 64;
/// Most refusals kept per call.
const MAX_DENIED: usize = 8;

/// One open descriptor.
enum Fd {
    Stdin,
    Stdout,
    Stderr,
    Dir {
        file: File,
        /// The name the plugin sees, for granted directories (preopens).
        preopen: Option<String>,
        /// Whether the grant allows writing below it.
        grant_writable: bool,
    },
    File {
        file: File,
        read: bool,
        write: bool,
    },
    Socket(std::net::TcpStream),
}

/// A granted directory, opened.
pub struct Grant {
    /// The path the plugin sees (the path written in the policy).
    pub name: String,
    /// The directory, opened below the host root.
    pub dir: File,
    /// Whether it is a write grant.
    pub writable: bool,
}

/// The WASI state of one instance.
pub struct Sandbox {
    fds: Vec<Option<Fd>>,
    /// The `HOST:PORT` endpoints it may connect to.
    network: Vec<String>,
    /// Whether write grants are writable during the current call.
    pub writable: bool,
    /// What the sandbox refused during the current call, for the error message.
    pub denied: Vec<String>,
    started: Instant,
}

impl Sandbox {
    /// A sandbox with these granted directories as descriptors 3, 4, ... and these endpoints.
    pub fn new(grants: Vec<Grant>, network: Vec<String>) -> Self {
        let mut fds = vec![Some(Fd::Stdin), Some(Fd::Stdout), Some(Fd::Stderr)];
        for g in grants {
            fds.push(Some(Fd::Dir {
                file: g.dir,
                preopen: Some(g.name),
                grant_writable: g.writable,
            }));
        }
        Self {
            fds,
            network,
            writable: false,
            denied: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Clears what the last call left (its refusals).
    pub fn start_call(&mut self, writable: bool) {
        self.writable = writable;
        self.denied.clear();
    }

    fn deny(&mut self, what: String) {
        if self.denied.len() < MAX_DENIED {
            self.denied.push(what);
        }
    }

    fn fd(&mut self, fd: i32) -> Result<&mut Fd, i32> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(EBADF)
    }

    fn insert(&mut self, fd: Fd) -> Result<i32, i32> {
        let slot = match self.fds.iter().skip(3).position(Option::is_none) {
            Some(i) => i + 3,
            None if self.fds.len() < MAX_FDS => {
                self.fds.push(None);
                self.fds.len() - 1
            }
            None => return Err(EMFILE),
        };
        self.fds[slot] = Some(fd);
        Ok(slot as i32)
    }
}

/// What a store must give the WASI functions.
pub trait HasSandbox {
    /// The sandbox.
    fn sandbox(&mut self) -> &mut Sandbox;
}

/// Why a module's imports cannot be satisfied: names the first import refused.
pub fn check_imports(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let name = import.name();
        let is_func = matches!(import.ty(), wasmtime::ExternType::Func(_));
        if import.module() == HOST && name == "tcp_connect" && is_func {
            continue;
        }
        if import.module() != WASI || !is_func || !PREVIEW1.contains(&name) {
            let hint = if name.starts_with("sock_") || name.contains("socket") {
                " (a connection comes from driftless.tcp_connect, to a granted endpoint)"
            } else {
                ""
            };
            return Err(format!(
                "imports {}.{name}, which plugins are not given: they get WASI preview 1 and driftless.tcp_connect only{hint}",
                import.module()
            ));
        }
    }
    Ok(())
}

/// Defines every WASI function the module imports: the implemented ones, and `ENOSYS` for the
/// rest of preview 1.
pub fn link<T: HasSandbox + 'static>(
    linker: &mut Linker<T>,
    module: &Module,
) -> wasmtime::Result<()> {
    add_implemented(linker)?;
    for import in module.imports() {
        if import.module() != WASI || IMPLEMENTED.contains(&import.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            let ty: FuncType = ty.clone();
            let returns_errno = ty.results().len() == 1;
            linker.func_new(WASI, import.name(), ty, move |_, _, results| {
                if returns_errno {
                    results[0] = Val::I32(ENOSYS);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Guest memory and the sandbox of the calling instance.
fn parts<'a, T: HasSandbox>(
    caller: &'a mut Caller<'_, T>,
) -> Option<(&'a mut [u8], &'a mut Sandbox)> {
    let memory = match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => return None,
    };
    let (mem, data) = memory.data_and_store_mut(caller);
    Some((mem, data.sandbox()))
}

fn range(mem: &[u8], ptr: i32, len: usize) -> Result<std::ops::Range<usize>, i32> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(EFAULT)?;
    if end > mem.len() {
        return Err(EFAULT);
    }
    Ok(start..end)
}

fn put(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let r = range(mem, ptr, bytes.len())?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn put_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    put(mem, ptr, &v.to_le_bytes())
}

fn put_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    put(mem, ptr, &v.to_le_bytes())
}

fn get_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    let r = range(mem, ptr, 4)?;
    let mut b = [0; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

/// The `(pointer, length)` pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<(usize, usize)>, i32> {
    let count = usize::try_from(count).map_err(|_| EINVAL)?;
    if count > 1024 {
        return Err(EINVAL);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = iovs.wrapping_add((i * 8) as i32);
        let ptr = get_u32(mem, at)?;
        let len = get_u32(mem, at.wrapping_add(4))? as usize;
        range(mem, ptr as i32, len)?;
        out.push((ptr as usize, len));
    }
    Ok(out)
}

fn errno(e: &std::io::Error) -> i32 {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ENOENT,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => EACCES,
        Some(libc::EEXIST) => EEXIST,
        Some(libc::EISDIR) => EISDIR,
        Some(libc::ENOTDIR) => ENOTDIR,
        Some(libc::ELOOP) => ELOOP,
        Some(libc::ENAMETOOLONG) => ENAMETOOLONG,
        Some(libc::EXDEV) => ENOTCAPABLE,
        Some(libc::EINVAL) => EINVAL,
        _ => EIO,
    }
}

/// A `filestat` (64 bytes) for a file's metadata.
fn filestat(meta: &std::fs::Metadata) -> [u8; 64] {
    use std::os::unix::fs::MetadataExt;
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&meta.dev().to_le_bytes());
    b[8..16].copy_from_slice(&meta.ino().to_le_bytes());
    b[16] = filetype(meta.file_type());
    b[24..32].copy_from_slice(&meta.nlink().to_le_bytes());
    b[32..40].copy_from_slice(&meta.size().to_le_bytes());
    let ns = |s: i64, n: i64| (s.max(0) as u64) * 1_000_000_000 + n.max(0) as u64;
    b[40..48].copy_from_slice(&ns(meta.atime(), meta.atime_nsec()).to_le_bytes());
    b[48..56].copy_from_slice(&ns(meta.mtime(), meta.mtime_nsec()).to_le_bytes());
    b[56..64].copy_from_slice(&ns(meta.ctime(), meta.ctime_nsec()).to_le_bytes());
    b
}

fn filetype(t: std::fs::FileType) -> u8 {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        3
    } else if t.is_file() {
        4
    } else if t.is_symlink() {
        7
    } else if t.is_block_device() {
        1
    } else if t.is_char_device() {
        2
    } else {
        0
    }
}

fn guest_str(mem: &[u8], ptr: i32, len: i32) -> Result<String, i32> {
    let len = usize::try_from(len).map_err(|_| EINVAL)?;
    if len > 4096 {
        return Err(ENAMETOOLONG);
    }
    let r = range(mem, ptr, len)?;
    String::from_utf8(mem[r].to_vec()).map_err(|_| EINVAL)
}

/// Runs `f` with guest memory and the sandbox; its error is the errno returned.
fn with<T: HasSandbox>(
    caller: &mut Caller<'_, T>,
    f: impl FnOnce(&mut [u8], &mut Sandbox) -> Result<(), i32>,
) -> i32 {
    match parts(caller) {
        Some((mem, sandbox)) => match f(mem, sandbox) {
            Ok(()) => SUCCESS,
            Err(e) => e,
        },
        None => EFAULT,
    }
}

/// Opens `path` below the directory `dir` without leaving it.
fn open_beneath(dir: &File, path: &str, flags: OFlags) -> std::io::Result<File> {
    // openat2 refuses a mode without O_CREAT.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o644)
    } else {
        Mode::empty()
    };
    let fd = rustix::fs::openat2(
        dir.as_fd(),
        path,
        flags | OFlags::CLOEXEC,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

fn zero_sizes<T: HasSandbox>(mut c: Caller<'_, T>, count: i32, size: i32) -> i32 {
    with(&mut c, |mem, _| {
        put_u32(mem, count, 0)?;
        put_u32(mem, size, 0)
    })
}

fn add_implemented<T: HasSandbox + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(WASI, "args_sizes_get", zero_sizes::<T>)?;
    linker.func_wrap(WASI, "environ_sizes_get", zero_sizes::<T>)?;
    linker.func_wrap(WASI, "args_get", |_: Caller<'_, T>, _: i32, _: i32| SUCCESS)?;
    linker.func_wrap(WASI, "environ_get", |_: Caller<'_, T>, _: i32, _: i32| {
        SUCCESS
    })?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, T>| SUCCESS)?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, T>, _id: i32, out: i32| with(&mut c, |mem, _| put_u64(mem, out, 1000)),
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, T>, id: i32, _precision: i64, out: i32| {
            with(&mut c, |mem, sandbox| {
                let ns = match id {
                    0 => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    1..=3 => sandbox.started.elapsed().as_nanos() as u64,
                    _ => return Err(EINVAL),
                };
                put_u64(mem, out, ns)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, T>, buf: i32, len: i32| {
            with(&mut c, |mem, _| {
                let r = range(mem, buf, usize::try_from(len).map_err(|_| EINVAL)?)?;
                rand::thread_rng().fill_bytes(&mut mem[r]);
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, T>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_accept",
        |mut c: Caller<'_, T>, _: i32, _: i32, _: i32| {
            c.data_mut()
                .sandbox()
                .deny("accepting a connection: plugins cannot listen".into());
            ENOTCAPABLE
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_shutdown",
        |mut c: Caller<'_, T>, fd: i32, _how: i32| match c.data_mut().sandbox().fd(fd) {
            Ok(Fd::Socket(stream)) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                SUCCESS
            }
            Ok(_) => ENOTSUP,
            Err(e) => e,
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_recv",
        |mut c: Caller<'_, T>,
         fd: i32,
         iovs: i32,
         count: i32,
         _flags: i32,
         out: i32,
         out_flags: i32| {
            with(&mut c, |mem, sandbox| {
                let vecs = iovecs(mem, iovs, count)?;
                let Fd::Socket(stream) = sandbox.fd(fd)? else {
                    return Err(ENOTSUP);
                };
                let total = read_into(stream, mem, &vecs)?;
                put_u32(mem, out, total as u32)?;
                put(mem, out_flags, &[0, 0])
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_send",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, count: i32, _flags: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let vecs = iovecs(mem, iovs, count)?;
                let Fd::Socket(stream) = sandbox.fd(fd)? else {
                    return Err(ENOTSUP);
                };
                let total = write_from(stream, mem, &vecs)?;
                put_u32(mem, out, total as u32)
            })
        },
    )?;
    linker.func_wrap(
        HOST,
        "tcp_connect",
        |mut c: Caller<'_, T>, ptr: i32, len: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let endpoint = guest_str(mem, ptr, len)?;
                if !sandbox.network.contains(&endpoint) {
                    sandbox.deny(format!("connecting to {endpoint}: not granted"));
                    return Err(ENOTCAPABLE);
                }
                let stream = connect(&endpoint).map_err(|e| {
                    sandbox.deny(format!("connecting to {endpoint}: {e}"));
                    errno(&e)
                })?;
                let fd = sandbox.insert(Fd::Socket(stream))?;
                put_u32(mem, out, fd as u32)
            })
        },
    )?;
    linker.func_wrap(WASI, "fd_close", |mut c: Caller<'_, T>, fd: i32| {
        let sandbox = c.data_mut().sandbox();
        match sandbox.fd(fd) {
            Ok(_) => {
                sandbox.fds[fd as usize] = None;
                SUCCESS
            }
            Err(e) => e,
        }
    })?;
    for name in ["fd_sync", "fd_datasync"] {
        linker.func_wrap(WASI, name, |mut c: Caller<'_, T>, fd: i32| {
            match c.data_mut().sandbox().fd(fd) {
                Ok(Fd::File {
                    file, write: true, ..
                }) => file.sync_all().map_or(EIO, |_| SUCCESS),
                Ok(_) => SUCCESS,
                Err(e) => e,
            }
        })?;
    }
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_flags",
        |_: Caller<'_, T>, _: i32, _: i32| ENOTSUP,
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let filetype = match sandbox.fd(fd)? {
                    Fd::Stdin | Fd::Stdout | Fd::Stderr => 2u8,
                    Fd::Dir { .. } => 3,
                    Fd::File { .. } => 4,
                    Fd::Socket(_) => 6,
                };
                let mut b = [0u8; 24];
                b[0] = filetype;
                b[8..16].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                b[16..24].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                put(mem, out, &b)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let meta = match sandbox.fd(fd)? {
                    Fd::Dir { file, .. } | Fd::File { file, .. } => {
                        file.metadata().map_err(|e| errno(&e))?
                    }
                    other => {
                        let mut b = [0u8; 64];
                        b[16] = if matches!(other, Fd::Socket(_)) { 6 } else { 2 };
                        return put(mem, out, &b);
                    }
                };
                put(mem, out, &filestat(&meta))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with(&mut c, |mem, sandbox| match sandbox.fd(fd)? {
                Fd::Dir {
                    preopen: Some(name),
                    ..
                } => {
                    let len = name.len() as u32;
                    put_u32(mem, out, 0)?;
                    put_u32(mem, out.wrapping_add(4), len)
                }
                _ => Err(EBADF),
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, T>, fd: i32, out: i32, len: i32| {
            with(&mut c, |mem, sandbox| match sandbox.fd(fd)? {
                Fd::Dir {
                    preopen: Some(name),
                    ..
                } => {
                    let n = name.len().min(usize::try_from(len).map_err(|_| EINVAL)?);
                    let bytes = name.as_bytes()[..n].to_vec();
                    put(mem, out, &bytes)
                }
                _ => Err(EBADF),
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, count: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let vecs = iovecs(mem, iovs, count)?;
                let total = match sandbox.fd(fd)? {
                    // Accepted and dropped: nothing a plugin prints reaches logs or reports.
                    Fd::Stdout | Fd::Stderr => vecs.iter().map(|&(_, len)| len).sum(),
                    Fd::File {
                        file, write: true, ..
                    } => write_from(file, mem, &vecs)?,
                    Fd::Socket(stream) => write_from(stream, mem, &vecs)?,
                    _ => return Err(EBADF),
                };
                put_u32(mem, out, total as u32)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, count: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let vecs = iovecs(mem, iovs, count)?;
                let mut total = 0usize;
                match sandbox.fd(fd)? {
                    Fd::Stdin => {}
                    Fd::File {
                        file, read: true, ..
                    } => total = read_into(file, mem, &vecs)?,
                    Fd::Socket(stream) => total = read_into(stream, mem, &vecs)?,
                    Fd::Dir { .. } => return Err(EISDIR),
                    _ => return Err(EBADF),
                }
                put_u32(mem, out, total as u32)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |mut c: Caller<'_, T>, fd: i32, offset: i64, whence: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let Fd::File { file, .. } = sandbox.fd(fd)? else {
                    return Err(EBADF);
                };
                let pos = match whence {
                    0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| EINVAL)?),
                    1 => SeekFrom::Current(offset),
                    2 => SeekFrom::End(offset),
                    _ => return Err(EINVAL),
                };
                let at = file.seek(pos).map_err(|e| errno(&e))?;
                put_u64(mem, out, at)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_tell",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let Fd::File { file, .. } = sandbox.fd(fd)? else {
                    return Err(EBADF);
                };
                let at = file.stream_position().map_err(|e| errno(&e))?;
                put_u64(mem, out, at)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |mut c: Caller<'_, T>, fd: i32, _flags: i32, path: i32, len: i32, out: i32| {
            with(&mut c, |mem, sandbox| {
                let path = guest_str(mem, path, len)?;
                let Fd::Dir { file, .. } = sandbox.fd(fd)? else {
                    return Err(ENOTDIR);
                };
                let opened = open_beneath(file, &path, OFlags::PATH);
                let meta = match opened {
                    Ok(f) => f.metadata().map_err(|e| errno(&e))?,
                    Err(e) => {
                        let code = errno(&e);
                        if code == ENOTCAPABLE {
                            sandbox.deny(format!("{path}: outside the granted directories"));
                        }
                        return Err(code);
                    }
                };
                put(mem, out, &filestat(&meta))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_open",
        |mut c: Caller<'_, T>,
         fd: i32,
         _dirflags: i32,
         path: i32,
         len: i32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         fdflags: i32,
         out: i32| {
            with(&mut c, |mem, sandbox| {
                let path = guest_str(mem, path, len)?;
                let writable_now = sandbox.writable;
                let (dir, grant_writable) = match sandbox.fd(fd)? {
                    Fd::Dir {
                        file,
                        grant_writable,
                        ..
                    } => (file.try_clone().map_err(|e| errno(&e))?, *grant_writable),
                    _ => return Err(ENOTDIR),
                };
                let write = rights as u64 & RIGHT_FD_WRITE != 0
                    || oflags & (OFLAG_CREAT | OFLAG_TRUNC) != 0
                    || fdflags & FDFLAG_APPEND != 0;
                if write && !(grant_writable && writable_now) {
                    sandbox.deny(if grant_writable {
                        format!("writing {path}: granted directories are read-only here")
                    } else {
                        format!("writing {path}: the grant is read-only")
                    });
                    return Err(ENOTCAPABLE);
                }
                let read = rights as u64 & 0b10 != 0 || !write;
                let mut flags = match (read, write) {
                    (true, true) => OFlags::RDWR,
                    (false, true) => OFlags::WRONLY,
                    _ => OFlags::RDONLY,
                };
                for (bit, flag) in [
                    (OFLAG_CREAT, OFlags::CREATE),
                    (OFLAG_DIRECTORY, OFlags::DIRECTORY),
                    (OFLAG_EXCL, OFlags::EXCL),
                    (OFLAG_TRUNC, OFlags::TRUNC),
                ] {
                    if oflags & bit != 0 {
                        flags |= flag;
                    }
                }
                if fdflags & FDFLAG_APPEND != 0 {
                    flags |= OFlags::APPEND;
                }
                let file = match open_beneath(&dir, &path, flags) {
                    Ok(f) => f,
                    // A directory asked for with read rights: open it as one.
                    Err(e) if e.raw_os_error() == Some(libc::EISDIR) && !write => {
                        open_beneath(&dir, &path, OFlags::RDONLY | OFlags::DIRECTORY)
                            .map_err(|e| errno(&e))?
                    }
                    Err(e) => {
                        let code = errno(&e);
                        if code == ENOTCAPABLE {
                            sandbox.deny(format!("{path}: outside the granted directories"));
                        }
                        return Err(code);
                    }
                };
                let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
                let entry = if is_dir {
                    Fd::Dir {
                        file,
                        preopen: None,
                        grant_writable,
                    }
                } else {
                    Fd::File { file, read, write }
                };
                let new = sandbox.insert(entry)?;
                put_u32(mem, out, new as u32)
            })
        },
    )?;
    Ok(())
}

/// Writes every iovec; the bytes written.
fn write_from(to: &mut impl Write, mem: &[u8], vecs: &[(usize, usize)]) -> Result<usize, i32> {
    let mut total = 0;
    for &(ptr, len) in vecs {
        to.write_all(&mem[ptr..ptr + len]).map_err(|e| errno(&e))?;
        total += len;
    }
    Ok(total)
}

/// Reads into iovecs until one is not filled; the bytes read.
fn read_into(from: &mut impl Read, mem: &mut [u8], vecs: &[(usize, usize)]) -> Result<usize, i32> {
    let mut total = 0;
    for &(ptr, len) in vecs {
        let n = from.read(&mut mem[ptr..ptr + len]).map_err(|e| errno(&e))?;
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

/// Connects to a granted `HOST:PORT`, with timeouts on connecting and on every read and write.
fn connect(endpoint: &str) -> std::io::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in endpoint.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&addr, NET_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(NET_TIMEOUT))?;
                stream.set_write_timeout(Some(NET_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// A plugin called `proc_exit`.
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the plugin exited with code {}", self.0)
    }
}

impl std::error::Error for Exit {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_out_of_bounds_are_faults() {
        let mut mem = vec![0u8; 64];
        put_u32(&mut mem, 0, 16).unwrap();
        put_u32(&mut mem, 4, 8).unwrap();
        assert_eq!(iovecs(&mem, 0, 1).unwrap(), vec![(16, 8)]);
        put_u32(&mut mem, 4, 60).unwrap();
        assert_eq!(iovecs(&mem, 0, 1), Err(EFAULT));
        assert_eq!(iovecs(&mem, 62, 1), Err(EFAULT));
        assert_eq!(range(&mem, -1, 2), Err(EFAULT));
    }

    #[test]
    fn opening_beneath_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("granted")).unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::fs::write(dir.path().join("granted/ok"), "ok").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("granted/link")).unwrap();
        let granted = File::open(dir.path().join("granted")).unwrap();
        open_beneath(&granted, "ok", OFlags::RDONLY).unwrap();
        for path in ["../secret", "link", "/etc/passwd", "./../secret"] {
            let err = open_beneath(&granted, path, OFlags::RDONLY).unwrap_err();
            assert_eq!(errno(&err), ENOTCAPABLE, "{path}");
        }
    }
}
