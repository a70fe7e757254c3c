//! What a tail may open: regular files only (never a FIFO, device, folder, socket, or
//! anything under /proc or /sys), opened without blocking and checked again once open; and
//! the folder a glob's files live under.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a path the glob matched is not followed: only regular files are tailed, and nothing
/// under /proc or /sys (their files claim a size of 0 and change on every read, so a tail
/// would take each read for a truncation and read them again forever).
pub(super) fn not_followable(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Some(format!(
            "{} is {what}; only regular files are tailed",
            path.display()
        ));
    }
    match std::fs::canonicalize(path) {
        Ok(real) if real.starts_with("/proc") || real.starts_with("/sys") => Some(format!(
            "{} resolves to {}, under /proc or /sys; such files are never tailed",
            path.display(),
            real.display()
        )),
        _ => None,
    }
}

/// Opens a file to follow, making sure what is opened is a regular file on a real file
/// system even if the path was swapped since it was looked at: the path is first opened
/// with `O_PATH` (which opens nothing: no device is touched, no FIFO blocks), checked, and
/// only then opened for reading through that very handle (`/proc/self/fd`), without blocking.
pub(super) fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_CLOEXEC)
        .open(path)?;
    check_regular(&handle)?;
    let via = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle));
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&via)
    {
        Ok(f) => f,
        // No /proc to reopen through: open the path, checked again below.
        Err(_) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)?,
    };
    check_regular(&file)?;
    Ok(file)
}

/// A regular file, not on /proc or /sys.
fn check_regular(file: &File) -> std::io::Result<()> {
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is no longer a regular file"));
    }
    if let Ok(fs) = nix::sys::statfs::fstatfs(file) {
        let t = fs.filesystem_type();
        if t == nix::sys::statfs::PROC_SUPER_MAGIC || t == nix::sys::statfs::SYSFS_MAGIC {
            return Err(std::io::Error::other(
                "it lies on /proc or /sys, whose files are never tailed",
            ));
        }
    }
    Ok(())
}

/// The deepest folder of a glob pattern without glob characters.
pub(super) fn literal_prefix_dir(pattern: &str) -> PathBuf {
    let mut out = PathBuf::new();
    let p = Path::new(pattern);
    let comps: Vec<_> = p.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) || i + 1 == comps.len() {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO with no writer would block an ordinary open forever.
        assert!(open_regular(&fifo).is_err());
        assert!(open_regular(Path::new("/proc/self/status")).is_err());
        assert!(open_regular(Path::new("/dev/null")).is_err());
        assert!(open_regular(dir.path()).is_err());
        let file = dir.path().join("app.log");
        std::fs::write(&file, "line\n").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_regular(&file).unwrap(), &mut text).unwrap();
        assert_eq!(text, "line\n");
    }

    #[test]
    fn literal_prefix() {
        assert_eq!(
            literal_prefix_dir("/var/log/nginx/*.log"),
            PathBuf::from("/var/log/nginx")
        );
        assert_eq!(
            literal_prefix_dir("/var/log/*/x.log"),
            PathBuf::from("/var/log")
        );
        assert_eq!(
            literal_prefix_dir("/var/log/syslog"),
            PathBuf::from("/var/log")
        );
    }
}
