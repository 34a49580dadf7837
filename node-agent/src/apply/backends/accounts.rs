//! Local accounts: `/etc/passwd`, `/etc/group`, `/etc/shadow` and `/etc/gshadow` in a host root,
//! read and written directly (no `useradd` needed in the root).
//!
//! Guarantees:
//! - While a change is made, every one of the four files is locked the way shadow-utils locks
//!   them (`FILE.lock`, created exclusively, holding our PID; a lock whose PID is gone is stale
//!   and taken over), so `useradd`, `passwd` and `vipw` on the host wait for us and we for them.
//! - Each file is replaced atomically (`FILE+` written, flushed, renamed over `FILE`) with its
//!   mode and owner kept, and the previous content kept as `FILE-`, like shadow-utils does.
//! - Lines we do not manage (comments, NIS `+`/`-` entries, unknown users) are kept as they are.
//! - The deciding part ([`AccountDb::ensure_user`] and friends) works on text in memory and
//!   returns what changed, so a dry run computes exactly what an apply would write.
//!
//! uids and gids come from `/etc/login.defs` (`UID_MIN`/`UID_MAX`, `SYS_UID_MIN`/`SYS_UID_MAX`
//! and the `GID` equivalents, with the shadow-utils defaults): the lowest free id for a regular
//! account, the highest free one for a system account, as `useradd` does.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use driftless_crds::secret::{SecretString, REDACTED};

use super::{read_optional, write_atomic, BackendError};

/// A colon-separated account file, with the lines it does not manage kept verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    lines: Vec<Line>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Entry(Vec<String>),
    Other(String),
}

impl Table {
    /// Parses a file whose entries have `fields` colon-separated fields.
    pub fn parse(text: &str, fields: usize) -> Self {
        let lines = text
            .lines()
            .map(|line| {
                let parts: Vec<String> = line.split(':').map(str::to_owned).collect();
                let managed = parts.len() == fields
                    && !line.starts_with('#')
                    && !line.starts_with('+')
                    && !line.starts_with('-')
                    && !parts[0].is_empty();
                if managed {
                    Line::Entry(parts)
                } else {
                    Line::Other(line.to_owned())
                }
            })
            .collect();
        Self { lines }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Entry(fields) => out.push_str(&fields.join(":")),
                Line::Other(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }

    /// The entries.
    pub fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Vec<String>> {
        self.lines.iter_mut().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.entries().find(|f| f[0] == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.entries_mut().find(|f| f[0] == name)
    }

    /// Replaces the entry of the same name in place, or appends it.
    pub fn set(&mut self, fields: Vec<String>) {
        match self.get_mut(&fields[0]) {
            Some(existing) => *existing = fields,
            None => self.lines.push(Line::Entry(fields)),
        }
    }

    /// Removes the entry; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry(f) if f[0] == name));
        before != self.lines.len()
    }
}

/// Id ranges and defaults from `/etc/login.defs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginDefs {
    /// `UID_MIN`..=`UID_MAX`: regular users.
    pub uid: (u32, u32),
    /// `SYS_UID_MIN`..=`SYS_UID_MAX`: system users.
    pub sys_uid: (u32, u32),
    /// `GID_MIN`..=`GID_MAX`: regular groups.
    pub gid: (u32, u32),
    /// `SYS_GID_MIN`..=`SYS_GID_MAX`: system groups.
    pub sys_gid: (u32, u32),
    /// Mode of new home directories (`HOME_MODE`, else `0777 & !UMASK`).
    pub home_mode: u32,
}

impl Default for LoginDefs {
    fn default() -> Self {
        Self::parse("")
    }
}

impl LoginDefs {
    /// Parses `login.defs` text; missing keys take the shadow-utils defaults.
    pub fn parse(text: &str) -> Self {
        let values: BTreeMap<&str, &str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?, parts.next()?))
            })
            .collect();
        let num = |key: &str, default: u32| -> u32 {
            values
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let octal = |key: &str| -> Option<u32> {
            values.get(key).and_then(|v| u32::from_str_radix(v, 8).ok())
        };
        let uid_min = num("UID_MIN", 1000);
        let gid_min = num("GID_MIN", 1000);
        let umask = octal("UMASK").unwrap_or(0o022);
        Self {
            uid: (uid_min, num("UID_MAX", 60000)),
            sys_uid: (
                num("SYS_UID_MIN", 101),
                num("SYS_UID_MAX", uid_min.saturating_sub(1)),
            ),
            gid: (gid_min, num("GID_MAX", 60000)),
            sys_gid: (
                num("SYS_GID_MIN", 101),
                num("SYS_GID_MAX", gid_min.saturating_sub(1)),
            ),
            home_mode: octal("HOME_MODE").unwrap_or(0o777 & !umask),
        }
    }
}

/// A free id in `range`: the lowest for regular accounts, the highest for system accounts.
pub fn allocate(used: &BTreeSet<u32>, range: (u32, u32), system: bool) -> Option<u32> {
    let (min, max) = range;
    if min > max {
        return None;
    }
    if system {
        (min..=max).rev().find(|id| !used.contains(id))
    } else {
        (min..=max).find(|id| !used.contains(id))
    }
}

/// One attribute that changed: the report's before → after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Attribute (`uid`, `shell`, `groups`, `passwordHash`).
    pub attribute: String,
    /// Value before; `None` when the account did not exist.
    pub before: Option<String>,
    /// Value after; `None` when the account is removed.
    pub after: Option<String>,
    /// The real values when `before`/`after` are shown as `<redacted>` (a password hash), for
    /// audit digests only.
    pub real: (Option<SecretString>, Option<SecretString>),
}

fn change(attribute: &str, before: Option<String>, after: Option<String>) -> Change {
    Change {
        attribute: attribute.into(),
        before,
        after,
        real: (None, None),
    }
}

/// The desired state of a user account.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// uid; allocated when unset (kept for an existing user).
    pub uid: Option<u32>,
    /// Primary group name (or numeric gid); a group of the user's name when unset.
    pub group: Option<String>,
    /// Supplementary groups; empty leaves memberships alone.
    pub groups: Vec<String>,
    /// Add to `groups` without leaving other groups.
    pub append: bool,
    /// Login shell.
    pub shell: Option<String>,
    /// Home directory.
    pub home: Option<String>,
    /// System account.
    pub system: bool,
    /// GECOS.
    pub comment: Option<String>,
    /// The password hash (from a secret).
    pub password_hash: Option<SecretString>,
}

/// The desired state of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// gid; allocated when unset (kept for an existing group).
    pub gid: Option<u32>,
    /// System group.
    pub system: bool,
}

/// The four account files of a root, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountDb {
    /// `/etc/passwd`: name, password, uid, gid, gecos, home, shell.
    pub passwd: Table,
    /// `/etc/group`: name, password, gid, members.
    pub group: Table,
    /// `/etc/shadow` (when the root has one): name, hash, and seven aging fields.
    pub shadow: Option<Table>,
    /// `/etc/gshadow` (when the root has one): name, password, admins, members.
    pub gshadow: Option<Table>,
    /// Days since the epoch, for `shadow`'s last-change field.
    pub today: u64,
}

fn valid_field(what: &str, value: &str) -> Result<(), BackendError> {
    if value.contains(':') || value.contains('\n') {
        return Err(BackendError::Invalid(format!(
            "{what} {value:?} may not contain ':' or a newline"
        )));
    }
    Ok(())
}

fn members(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

impl AccountDb {
    /// Parses the files' texts (`None` for a file the root does not have).
    pub fn parse(
        passwd: &str,
        group: &str,
        shadow: Option<&str>,
        gshadow: Option<&str>,
        today: u64,
    ) -> Self {
        Self {
            passwd: Table::parse(passwd, 7),
            group: Table::parse(group, 4),
            shadow: shadow.map(|t| Table::parse(t, 9)),
            gshadow: gshadow.map(|t| Table::parse(t, 4)),
            today,
        }
    }

    fn used(table: &Table, field: usize) -> BTreeSet<u32> {
        table
            .entries()
            .filter_map(|f| f[field].parse().ok())
            .collect()
    }

    /// The gid of a group given by name or number.
    pub fn gid_of(&self, group: &str) -> Option<u32> {
        if let Some(entry) = self.group.get(group) {
            return entry[2].parse().ok();
        }
        let gid: u32 = group.parse().ok()?;
        self.group
            .entries()
            .any(|f| f[2] == gid.to_string())
            .then_some(gid)
    }

    /// The groups `user` is a supplementary member of, sorted.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .group
            .entries()
            .filter(|f| members(&f[3]).iter().any(|m| m == user))
            .map(|f| f[0].clone())
            .collect();
        out.sort();
        out
    }

    fn set_member(&mut self, group: &str, user: &str, member: bool) {
        let edit = |field: &mut String| {
            let mut list = members(field);
            let has = list.iter().any(|m| m == user);
            if member && !has {
                list.push(user.to_owned());
            } else if !member && has {
                list.retain(|m| m != user);
            }
            *field = list.join(",");
        };
        if let Some(entry) = self.group.get_mut(group) {
            edit(&mut entry[3]);
        }
        if let Some(entry) = self.gshadow.as_mut().and_then(|g| g.get_mut(group)) {
            edit(&mut entry[3]);
        }
    }

    /// Makes the group exist as specified; returns what changed (nothing when it matched).
    pub fn ensure_group(
        &mut self,
        spec: &GroupSpec,
        defs: &LoginDefs,
    ) -> Result<Vec<Change>, BackendError> {
        let taken_by_other = |db: &Self, gid: u32| {
            db.group
                .entries()
                .any(|f| f[0] != spec.name && f[2] == gid.to_string())
        };
        if let Some(entry) = self.group.get(&spec.name).cloned() {
            let current: u32 = entry[2].parse().map_err(|_| {
                BackendError::Parse(format!("group {}: bad gid {:?}", spec.name, entry[2]))
            })?;
            let Some(gid) = spec.gid.filter(|g| *g != current) else {
                return Ok(Vec::new());
            };
            if taken_by_other(self, gid) {
                return Err(BackendError::Invalid(format!(
                    "gid {gid} is already used by another group"
                )));
            }
            let mut updated = entry;
            updated[2] = gid.to_string();
            self.group.set(updated);
            // Users whose primary group this is follow it, as `groupmod -g` does.
            for user in self.passwd.entries_mut() {
                if user[3] == current.to_string() {
                    user[3] = gid.to_string();
                }
            }
            return Ok(vec![change(
                "gid",
                Some(current.to_string()),
                Some(gid.to_string()),
            )]);
        }
        let gid = match spec.gid {
            Some(gid) if taken_by_other(self, gid) => {
                return Err(BackendError::Invalid(format!(
                    "gid {gid} is already used by another group"
                )))
            }
            Some(gid) => gid,
            None => {
                let range = if spec.system { defs.sys_gid } else { defs.gid };
                allocate(&Self::used(&self.group, 2), range, spec.system).ok_or_else(|| {
                    BackendError::Invalid(format!("no free gid in {}..={}", range.0, range.1))
                })?
            }
        };
        self.group.set(vec![
            spec.name.clone(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]);
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.set(vec![
                spec.name.clone(),
                "!".into(),
                String::new(),
                String::new(),
            ]);
        }
        Ok(vec![change("gid", None, Some(gid.to_string()))])
    }

    /// Removes the group; refused while it is some user's primary group.
    pub fn remove_group(&mut self, name: &str) -> Result<Vec<Change>, BackendError> {
        let Some(entry) = self.group.get(name).cloned() else {
            return Ok(Vec::new());
        };
        if let Some(user) = self.passwd.entries().find(|u| u[3] == entry[2]) {
            return Err(BackendError::Invalid(format!(
                "cannot remove group {name}: it is the primary group of user {}",
                user[0]
            )));
        }
        self.group.remove(name);
        if let Some(gshadow) = &mut self.gshadow {
            gshadow.remove(name);
        }
        Ok(vec![change("gid", Some(entry[2].clone()), None)])
    }

    /// Makes the user exist as specified; returns what changed.
    pub fn ensure_user(
        &mut self,
        spec: &UserSpec,
        defs: &LoginDefs,
    ) -> Result<Vec<Change>, BackendError> {
        for (what, value) in [
            ("comment", &spec.comment),
            ("home", &spec.home),
            ("shell", &spec.shell),
        ] {
            if let Some(v) = value {
                valid_field(what, v)?;
            }
        }
        if let Some(hash) = &spec.password_hash {
            if hash.expose().contains(':') || hash.expose().contains('\n') {
                return Err(BackendError::Invalid(
                    "passwordHash may not contain ':' or a newline (is it a crypt(3) hash?)".into(),
                ));
            }
        }
        for group in &spec.groups {
            if self.group.get(group).is_none() {
                return Err(BackendError::Invalid(format!(
                    "group {group} does not exist (add a group task before this one)"
                )));
            }
        }
        let mut changes = Vec::new();
        let existing = self.passwd.get(&spec.name).cloned();
        let uid = match (spec.uid, &existing) {
            (Some(uid), _) => uid,
            (None, Some(entry)) => entry[2].parse().map_err(|_| {
                BackendError::Parse(format!("user {}: bad uid {:?}", spec.name, entry[2]))
            })?,
            (None, None) => {
                let range = if spec.system { defs.sys_uid } else { defs.uid };
                allocate(&Self::used(&self.passwd, 2), range, spec.system).ok_or_else(|| {
                    BackendError::Invalid(format!("no free uid in {}..={}", range.0, range.1))
                })?
            }
        };
        if let Some(other) = self
            .passwd
            .entries()
            .find(|f| f[0] != spec.name && f[2] == uid.to_string())
        {
            return Err(BackendError::Invalid(format!(
                "uid {uid} is already used by user {}",
                other[0]
            )));
        }
        let gid = match (&spec.group, &existing) {
            (Some(group), _) => self.gid_of(group).ok_or_else(|| {
                BackendError::Invalid(format!(
                    "group {group} does not exist (add a group task before this one)"
                ))
            })?,
            (None, Some(entry)) => entry[3].parse().map_err(|_| {
                BackendError::Parse(format!("user {}: bad gid {:?}", spec.name, entry[3]))
            })?,
            (None, None) => match self.gid_of(&spec.name) {
                Some(gid) => gid,
                None => {
                    // A private group of the user's name, with gid = uid when that is free.
                    let free = !self.group.entries().any(|f| f[2] == uid.to_string());
                    let group = GroupSpec {
                        name: spec.name.clone(),
                        gid: free.then_some(uid),
                        system: spec.system,
                    };
                    self.ensure_group(&group, defs)?;
                    changes.push(change("group", None, Some(spec.name.clone())));
                    self.gid_of(&spec.name).ok_or_else(|| {
                        BackendError::Invalid(format!("group {} was not created", spec.name))
                    })?
                }
            },
        };
        let keep = |index: usize, default: &str| -> String {
            existing
                .as_ref()
                .map(|e| e[index].clone())
                .unwrap_or_else(|| default.to_owned())
        };
        let home = spec
            .home
            .clone()
            .unwrap_or_else(|| keep(5, &format!("/home/{}", spec.name)));
        let shell = spec.shell.clone().unwrap_or_else(|| keep(6, "/bin/sh"));
        let gecos = spec.comment.clone().unwrap_or_else(|| keep(4, ""));
        let password = if self.shadow.is_some() {
            "x".to_owned()
        } else {
            keep(1, "!")
        };
        let entry = vec![
            spec.name.clone(),
            password,
            uid.to_string(),
            gid.to_string(),
            gecos,
            home,
            shell,
        ];
        match &existing {
            None => {
                changes.push(change("uid", None, Some(uid.to_string())));
                changes.push(change("gid", None, Some(gid.to_string())));
                changes.push(change("home", None, Some(entry[5].clone())));
                changes.push(change("shell", None, Some(entry[6].clone())));
            }
            Some(old) => {
                for (index, name) in [
                    (2, "uid"),
                    (3, "gid"),
                    (4, "comment"),
                    (5, "home"),
                    (6, "shell"),
                ] {
                    if old[index] != entry[index] {
                        changes.push(change(
                            name,
                            Some(old[index].clone()),
                            Some(entry[index].clone()),
                        ));
                    }
                }
            }
        }
        if existing.as_ref() != Some(&entry) {
            self.passwd.set(entry);
        }
        let today = self.today.to_string();
        if let Some(shadow) = &mut self.shadow {
            match shadow.get(&spec.name).cloned() {
                None => {
                    let hash = spec
                        .password_hash
                        .as_ref()
                        .map(|h| h.expose().to_owned())
                        .unwrap_or_else(|| "!".into());
                    let aging: [&str; 7] = if spec.system {
                        [&today, "", "", "", "", "", ""]
                    } else {
                        [&today, "0", "99999", "7", "", "", ""]
                    };
                    let mut fields = vec![spec.name.clone(), hash];
                    fields.extend(aging.iter().map(|s| (*s).to_owned()));
                    shadow.set(fields);
                    if let Some(hash) = &spec.password_hash {
                        let mut c = change("passwordHash", None, Some(REDACTED.into()));
                        c.real = (None, Some(hash.clone()));
                        changes.push(c);
                    }
                }
                Some(mut fields) => {
                    if let Some(hash) = &spec.password_hash {
                        if fields[1] != hash.expose() {
                            let live = SecretString::new(fields[1].clone());
                            fields[1] = hash.expose().to_owned();
                            fields[2] = today;
                            shadow.set(fields);
                            let mut c = change(
                                "passwordHash",
                                Some(REDACTED.into()),
                                Some(REDACTED.into()),
                            );
                            c.real = (Some(live), Some(hash.clone()));
                            changes.push(c);
                        }
                    }
                }
            }
        }
        if !spec.groups.is_empty() {
            let before = self.groups_of(&spec.name);
            for group in &spec.groups {
                self.set_member(group, &spec.name, true);
            }
            if !spec.append {
                for group in &before {
                    if !spec.groups.contains(group) {
                        self.set_member(group, &spec.name, false);
                    }
                }
            }
            let after = self.groups_of(&spec.name);
            if before != after {
                changes.push(change(
                    "groups",
                    Some(before.join(",")),
                    Some(after.join(",")),
                ));
            }
        }
        Ok(changes)
    }

    /// Removes the user, its memberships and its private group (a group of its name that is
    /// no other user's primary group and has no members), as `userdel` does. The home
    /// directory is left alone.
    pub fn remove_user(&mut self, name: &str) -> Result<Vec<Change>, BackendError> {
        let Some(entry) = self.passwd.get(name).cloned() else {
            return Ok(Vec::new());
        };
        self.passwd.remove(name);
        if let Some(shadow) = &mut self.shadow {
            shadow.remove(name);
        }
        for group in self.groups_of(name) {
            self.set_member(&group, name, false);
        }
        let private = self.group.get(name).cloned().filter(|g| {
            g[2] == entry[3]
                && members(&g[3]).is_empty()
                && !self.passwd.entries().any(|u| u[3] == g[2])
        });
        if private.is_some() {
            self.remove_group(name)?;
        }
        Ok(vec![change("uid", Some(entry[2].clone()), None)])
    }
}

/// The account files of a root, locked while this value lives.
#[derive(Debug)]
pub struct LockedFiles {
    etc: PathBuf,
    locks: Vec<PathBuf>,
}

const FILES: [(&str, u32); 4] = [
    ("passwd", 0o644),
    ("group", 0o644),
    ("shadow", 0o640),
    ("gshadow", 0o640),
];

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Takes `FILE.lock` the way shadow-utils does: exclusive creation, our PID inside; a lock left
/// by a process that is gone is removed. Waits up to `wait` for a live holder.
fn take_lock(path: &Path, wait: Duration) -> Result<(), BackendError> {
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                use std::io::Write;
                return file
                    .write_all(std::process::id().to_string().as_bytes())
                    .map_err(|e| BackendError::io(path, e));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if pid_alive(pid) => {}
                    _ => {
                        tracing::warn!(lock = %path.display(), "removing stale lock");
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                }
                if started.elapsed() > wait {
                    return Err(BackendError::Invalid(format!(
                        "{} is held by process {}; try again later",
                        path.display(),
                        holder.unwrap_or_default()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(BackendError::io(path, e)),
        }
    }
}

impl LockedFiles {
    /// Locks the account files below `etc` (`ROOT/etc`), waiting up to `wait`.
    pub fn lock(etc: &Path, wait: Duration) -> Result<Self, BackendError> {
        let mut locked = Self {
            etc: etc.to_owned(),
            locks: Vec::new(),
        };
        for (name, _) in FILES {
            let lock = etc.join(format!("{name}.lock"));
            take_lock(&lock, wait)?;
            locked.locks.push(lock);
        }
        Ok(locked)
    }

    /// Reads the files.
    pub fn read(&self) -> Result<AccountDb, BackendError> {
        read_db(&self.etc)
    }

    /// Writes the files that differ from what is on disk.
    pub fn write(&self, db: &AccountDb) -> Result<(), BackendError> {
        let texts = [
            Some(db.passwd.render()),
            Some(db.group.render()),
            db.shadow.as_ref().map(Table::render),
            db.gshadow.as_ref().map(Table::render),
        ];
        for ((name, mode), text) in FILES.iter().zip(texts) {
            let Some(text) = text else { continue };
            let path = self.etc.join(name);
            let current = read_optional(&path)?;
            if current.as_deref() == Some(text.as_str()) {
                continue;
            }
            if let Some(current) = &current {
                let backup = self.etc.join(format!("{name}-"));
                write_atomic(&backup, current, *mode, None)?;
                copy_owner_mode(&path, &backup)?;
            }
            write_atomic(&path, &text, *mode, None)?;
        }
        Ok(())
    }
}

fn copy_owner_mode(from: &Path, to: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(from).map_err(|e| BackendError::io(from, e))?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| BackendError::io(to, e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| BackendError::io(to, e))
}

impl Drop for LockedFiles {
    fn drop(&mut self) {
        for lock in &self.locks {
            let _ = std::fs::remove_file(lock);
        }
    }
}

/// Days since the epoch.
pub fn today() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or_default()
}

/// Reads the account files below `etc` without locking (for checks and dry runs).
pub fn read_db(etc: &Path) -> Result<AccountDb, BackendError> {
    let passwd = read_optional(&etc.join("passwd"))?.unwrap_or_default();
    let group = read_optional(&etc.join("group"))?.unwrap_or_default();
    let shadow = read_optional(&etc.join("shadow"))?;
    let gshadow = read_optional(&etc.join("gshadow"))?;
    Ok(AccountDb::parse(
        &passwd,
        &group,
        shadow.as_deref(),
        gshadow.as_deref(),
        today(),
    ))
}

/// Reads `ROOT/etc/login.defs` (defaults when missing).
pub fn read_login_defs(etc: &Path) -> Result<LoginDefs, BackendError> {
    Ok(LoginDefs::parse(
        &read_optional(&etc.join("login.defs"))?.unwrap_or_default(),
    ))
}

/// Creates a home directory: copies `skel` (when it exists) into it, then gives everything to
/// `uid:gid` and the directory `mode`. Does nothing when it already exists.
pub fn create_home(
    home: &Path,
    skel: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<bool, BackendError> {
    use std::os::unix::fs::PermissionsExt;
    if home.exists() {
        return Ok(false);
    }
    if let Some(parent) = home.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BackendError::io(parent, e))?;
    }
    std::fs::create_dir(home).map_err(|e| BackendError::io(home, e))?;
    if skel.is_dir() {
        copy_tree(skel, home, uid, gid)?;
    }
    std::os::unix::fs::chown(home, Some(uid), Some(gid)).map_err(|e| BackendError::io(home, e))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(mode))
        .map_err(|e| BackendError::io(home, e))?;
    Ok(true)
}

fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> Result<(), BackendError> {
    let entries = std::fs::read_dir(from).map_err(|e| BackendError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BackendError::io(from, e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| BackendError::io(&source, e))?;
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| BackendError::io(&target, e))?;
            copy_tree(&source, &target, uid, gid)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(|e| BackendError::io(&target, e))?;
        } else {
            // Symlinks in skel are not followed: a link could point out of the root.
            continue;
        }
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
            .map_err(|e| BackendError::io(&target, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment kept\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n+nisuser::::::\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\nsudo:x:27:alice\nalice:x:1000:\ndocker:x:999:\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:0:99999:7:::\n";
    const GSHADOW: &str = "root:*::\ndaemon:*::\nsudo:*::alice\nalice:!::\ndocker:!::\n";

    fn db() -> AccountDb {
        AccountDb::parse(PASSWD, GROUP, Some(SHADOW), Some(GSHADOW), 20000)
    }

    #[test]
    fn tables_round_trip_and_keep_other_lines() {
        let db = db();
        assert_eq!(db.passwd.render(), PASSWD);
        assert_eq!(db.group.render(), GROUP);
        assert!(db.passwd.get("+nisuser").is_none());
        assert_eq!(db.groups_of("alice"), vec!["sudo".to_owned()]);
    }

    #[test]
    fn login_defs_ranges() {
        let defs =
            LoginDefs::parse("# x\nUID_MIN\t 2000\nUID_MAX 3000\nSYS_GID_MAX 500\nUMASK 027\n");
        assert_eq!(defs.uid, (2000, 3000));
        assert_eq!(defs.sys_uid, (101, 1999));
        assert_eq!(defs.gid, (1000, 60000));
        assert_eq!(defs.sys_gid, (101, 500));
        assert_eq!(defs.home_mode, 0o750);
        assert_eq!(LoginDefs::parse("HOME_MODE 0700").home_mode, 0o700);
    }

    #[test]
    fn allocation_low_for_users_high_for_system() {
        let used: BTreeSet<u32> = [1000, 1001, 999, 998].into_iter().collect();
        assert_eq!(allocate(&used, (1000, 60000), false), Some(1002));
        assert_eq!(allocate(&used, (101, 999), true), Some(997));
        assert_eq!(allocate(&used, (1000, 1001), false), None);
        assert_eq!(allocate(&used, (5, 1), false), None);
    }

    #[test]
    fn creates_user_with_private_group() {
        let mut db = db();
        let defs = LoginDefs::default();
        let spec = UserSpec {
            name: "bob".into(),
            groups: vec!["docker".into(), "sudo".into()],
            shell: Some("/bin/bash".into()),
            ..UserSpec::default()
        };
        let changes = db.ensure_user(&spec, &defs).unwrap();
        assert!(changes
            .iter()
            .any(|c| c.attribute == "uid" && c.after.as_deref() == Some("1001")));
        assert_eq!(
            db.passwd.get("bob").unwrap().join(":"),
            "bob:x:1001:1001::/home/bob:/bin/bash"
        );
        assert_eq!(db.group.get("bob").unwrap().join(":"), "bob:x:1001:");
        assert_eq!(
            db.group.get("sudo").unwrap().join(":"),
            "sudo:x:27:alice,bob"
        );
        assert_eq!(
            db.gshadow
                .as_ref()
                .unwrap()
                .get("docker")
                .unwrap()
                .join(":"),
            "docker:!::bob"
        );
        assert_eq!(
            db.shadow.as_ref().unwrap().get("bob").unwrap().join(":"),
            "bob:!:20000:0:99999:7:::"
        );
        // Idempotent.
        let again = db.clone();
        assert_eq!(db.ensure_user(&spec, &defs).unwrap(), Vec::new());
        assert_eq!(db, again);
    }

    #[test]
    fn system_user_gets_high_ids_and_hash_from_secret() {
        let mut db = db();
        let spec = UserSpec {
            name: "svc".into(),
            system: true,
            shell: Some("/usr/sbin/nologin".into()),
            password_hash: Some(SecretString::new("$6$abc$def")),
            ..UserSpec::default()
        };
        let changes = db.ensure_user(&spec, &LoginDefs::default()).unwrap();
        assert_eq!(db.passwd.get("svc").unwrap()[2], "999");
        // gid = uid when free; 999 is docker's, so the highest free system gid.
        assert_eq!(db.group.get("svc").unwrap()[2], "998");
        assert_eq!(
            db.shadow.as_ref().unwrap().get("svc").unwrap().join(":"),
            "svc:$6$abc$def:20000::::::"
        );
        let pw = changes
            .iter()
            .find(|c| c.attribute == "passwordHash")
            .unwrap();
        assert_eq!(pw.after.as_deref(), Some(REDACTED));
        let spec2 = UserSpec {
            password_hash: Some(SecretString::new("$6$new$hash")),
            ..spec
        };
        let changes = db.ensure_user(&spec2, &LoginDefs::default()).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].before.as_deref(), Some(REDACTED));
        assert!(!format!("{changes:?}").contains("new$hash"));
        // The real hashes travel for audit digests only.
        let (before, after) = &changes[0].real;
        assert_eq!(before.as_ref().map(|s| s.expose()), Some("$6$abc$def"));
        assert_eq!(after.as_ref().map(|s| s.expose()), Some("$6$new$hash"));
    }

    #[test]
    fn modifies_and_replaces_groups() {
        let mut db = db();
        let spec = UserSpec {
            name: "alice".into(),
            groups: vec!["docker".into()],
            shell: Some("/bin/zsh".into()),
            ..UserSpec::default()
        };
        let changes = db.ensure_user(&spec, &LoginDefs::default()).unwrap();
        let attrs: Vec<&str> = changes.iter().map(|c| c.attribute.as_str()).collect();
        assert_eq!(attrs, ["shell", "groups"]);
        assert_eq!(changes[1].before.as_deref(), Some("sudo"));
        assert_eq!(changes[1].after.as_deref(), Some("docker"));
        let appended = UserSpec {
            groups: vec!["sudo".into()],
            append: true,
            ..spec
        };
        db.ensure_user(&appended, &LoginDefs::default()).unwrap();
        assert_eq!(
            db.groups_of("alice"),
            vec!["docker".to_owned(), "sudo".to_owned()]
        );
    }

    #[test]
    fn refuses_conflicts_and_bad_fields() {
        let mut db = db();
        let defs = LoginDefs::default();
        let taken = UserSpec {
            name: "eve".into(),
            uid: Some(1000),
            ..UserSpec::default()
        };
        assert_eq!(
            db.ensure_user(&taken, &defs).unwrap_err().to_string(),
            "uid 1000 is already used by user alice"
        );
        let missing = UserSpec {
            name: "eve".into(),
            groups: vec!["nope".into()],
            ..UserSpec::default()
        };
        assert_eq!(
            db.ensure_user(&missing, &defs).unwrap_err().to_string(),
            "group nope does not exist (add a group task before this one)"
        );
        let colon = UserSpec {
            name: "eve".into(),
            comment: Some("a:b".into()),
            ..UserSpec::default()
        };
        assert_eq!(
            db.ensure_user(&colon, &defs).unwrap_err().to_string(),
            "comment \"a:b\" may not contain ':' or a newline"
        );
        let group = GroupSpec {
            name: "ops".into(),
            gid: Some(27),
            system: false,
        };
        assert_eq!(
            db.ensure_group(&group, &defs).unwrap_err().to_string(),
            "gid 27 is already used by another group"
        );
        assert_eq!(
            db.remove_group("alice").unwrap_err().to_string(),
            "cannot remove group alice: it is the primary group of user alice"
        );
    }

    #[test]
    fn groups_and_removal() {
        let mut db = db();
        let defs = LoginDefs::default();
        let ops = GroupSpec {
            name: "ops".into(),
            gid: None,
            system: true,
        };
        db.ensure_group(&ops, &defs).unwrap();
        assert_eq!(db.group.get("ops").unwrap()[2], "998");
        assert_eq!(db.ensure_group(&ops, &defs).unwrap(), Vec::new());
        let moved = GroupSpec {
            gid: Some(4000),
            ..ops
        };
        assert_eq!(
            db.ensure_group(&moved, &defs).unwrap()[0].after.as_deref(),
            Some("4000")
        );
        db.remove_user("alice").unwrap();
        assert!(db.passwd.get("alice").is_none());
        assert!(db.group.get("alice").is_none());
        assert!(db.shadow.as_ref().unwrap().get("alice").is_none());
        assert_eq!(db.group.get("sudo").unwrap()[3], "");
        assert_eq!(db.remove_user("alice").unwrap(), Vec::new());
        db.remove_group("ops").unwrap();
        assert!(db.gshadow.as_ref().unwrap().get("ops").is_none());
    }

    #[test]
    fn locks_are_exclusive_and_stale_ones_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path();
        std::fs::write(etc.join("passwd"), PASSWD).unwrap();
        std::fs::write(etc.join("group"), GROUP).unwrap();
        let first = LockedFiles::lock(etc, Duration::from_millis(100)).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("passwd.lock")).unwrap(),
            std::process::id().to_string()
        );
        let err = LockedFiles::lock(etc, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwd.lock is held by process"), "{err}");
        drop(first);
        assert!(!etc.join("passwd.lock").exists());
        std::fs::write(etc.join("group.lock"), "999999999").unwrap();
        let locked = LockedFiles::lock(etc, Duration::from_millis(100)).unwrap();
        let mut db = locked.read().unwrap();
        db.ensure_group(
            &GroupSpec {
                name: "ops".into(),
                gid: Some(5000),
                system: false,
            },
            &LoginDefs::default(),
        )
        .unwrap();
        locked.write(&db).unwrap();
        assert!(std::fs::read_to_string(etc.join("group"))
            .unwrap()
            .ends_with("ops:x:5000:\n"));
        assert_eq!(std::fs::read_to_string(etc.join("group-")).unwrap(), GROUP);
        assert!(
            !etc.join("passwd-").exists(),
            "unchanged files are not rewritten"
        );
    }
}
