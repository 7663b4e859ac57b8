//! `-u USER`: running as another user once the listening socket is bound and the data
//! directory is locked, as beanstalkd's `-u` does.
//!
//! Only root can switch. Before it does, the data directory, the files in it and in its
//! `wal/` directory that root owns are given to the user, so a directory made or last used
//! by a root server keeps working; files owned by anyone else are left alone. The user's
//! groups replace root's (initgroups), then the group and the user are set for every
//! thread of the process.

use std::ffi::{CStr, CString};
use std::path::Path;

use anyhow::{bail, Context};

/// A user as the password database knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The name looked up.
    pub name: String,
    /// Its user id.
    pub uid: libc::uid_t,
    /// Its primary group id.
    pub gid: libc::gid_t,
}

/// Looks `name` up in the password database.
pub fn lookup(name: &str) -> anyhow::Result<Account> {
    let c_name = CString::new(name).with_context(|| format!("user name {name:?} contains NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it with pointers into `buf`, which
    // outlives every use of them below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the lengths given.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("looking up user {name:?}"));
    }
    if found.is_null() {
        bail!("-u/--user: no user named {name:?}");
    }
    Ok(Account {
        name: name.to_owned(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// The name of the user this process runs as, if the password database has it.
pub fn current_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in `lookup`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the lengths given.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Switches the whole process to `name` after giving it the data directory.
///
/// Running as that user already is not an error (nothing changes).
pub fn become_user(name: &str, data_dir: &Path) -> anyhow::Result<()> {
    let account = lookup(name)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == account.uid {
        return Ok(());
    }
    if euid != 0 {
        bail!("-u/--user {name}: only root can switch users (running as uid {euid})");
    }
    hand_over(data_dir, &account)?;
    let c_name = CString::new(name).context("user name contains NUL")?;
    // SAFETY: a valid C string and a gid; initgroups changes only this process's groups.
    if unsafe { libc::initgroups(c_name.as_ptr(), account.gid) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the groups of user {name}"));
    }
    // SAFETY: setgid/setuid take plain ids; glibc applies them to every thread.
    if unsafe { libc::setgid(account.gid) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setgid({}) for user {name}", account.gid));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(account.uid) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setuid({}) for user {name}", account.uid));
    }
    tracing::info!(
        user = name,
        uid = account.uid,
        gid = account.gid,
        "running as user"
    );
    Ok(())
}

/// Gives `account` the data directory and what root owns directly in it and in `wal/`.
fn hand_over(data_dir: &Path, account: &Account) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = vec![data_dir.to_path_buf()];
    for dir in [data_dir.to_path_buf(), super::wal_dir(data_dir)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            paths.push(entry.path());
        }
    }
    for path in paths {
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.uid() == 0 {
            std::os::unix::fs::lchown(&path, Some(account.uid), Some(account.gid))
                .with_context(|| format!("giving {} to user {}", path.display(), account.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_password_database_and_strangers_are_not() {
        assert_eq!(lookup("root").expect("root").uid, 0);
        let err = lookup("no-such-user-larder").expect_err("unknown");
        assert!(err.to_string().contains("no user named"), "{err}");
    }
}
