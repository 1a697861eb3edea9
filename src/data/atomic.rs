//! Files written whole or not at all: a temporary file in the target's directory, renamed into
//! place once complete.
//!
//! A crash or a failed verification then never leaves a half-written split file or an
//! unverified data file under the final name, and readers never see one being written.

use super::DataError;
use std::path::Path;

/// A temporary file in `dir` (hidden, named `.{prefix}*.partial`), to be completed and then
/// [`persist`](tempfile::NamedTempFile::persist)ed over the final path; deleted if dropped.
///
/// Created with mode 0666 less the umask, as a plain `File::create` would be, rather than
/// `tempfile`'s private 0600: the result is a data file other users may need to read.
pub(crate) fn temp_file_in(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile, DataError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| DataError::io(dir, e))
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let mut tmp = temp_file_in(dir, &format!(".{name}"))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(|e| DataError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}
