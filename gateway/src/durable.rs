//! Small files the gateway must not lose or leave half-written (key files, the delivery journal,
//! the upload index): written to a temporary name, synced, renamed over the target, and the
//! directory synced, so after a crash a reader sees either the old file or the new one.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably. The temporary file is `path` with the
/// extension `tmp`; callers serialise writers of the same path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is on disk.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
