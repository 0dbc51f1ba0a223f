//! Files and folders that hold contacts: readable by their owner only.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates (or truncates) a file readable and writable by its owner only.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    // An existing file keeps its old mode on open; tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Creates a folder (and its parents) that only its owner can enter.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens a file for appending, creating it owner-only.
pub fn append_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Replaces `path` as a whole: `write` fills an owner-only temporary file beside it, which
/// is synced to disk and renamed over `path`, so a crash leaves the old file or the new
/// one, never half. A failed write leaves nothing behind.
pub fn replace_private_file(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| {
            // Said of the folder: the name of the partial file it could not create is
            // nothing to the user.
            let cause = e.raw_os_error().map_or_else(
                || e.kind().to_string(),
                |code| io::Error::from_raw_os_error(code).to_string(),
            );
            let said = match e.kind() {
                io::ErrorKind::NotFound => format!("the folder {} does not exist", dir.display()),
                _ => format!("cannot create a file in {}: {cause}", dir.display()),
            };
            io::Error::new(e.kind(), said)
        })?;
    write(partial.as_file_mut())?;
    partial.as_file().sync_all()?;
    partial.persist(path).map_err(|e| e.error)?;
    // The rename itself reaches the disk with the folder.
    File::open(dir)?.sync_all()
}
