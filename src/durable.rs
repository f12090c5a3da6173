//! Durable file replacement: a crash at any instant leaves a file either whole and old or whole
//! and new, never torn. Used for `planning.json` and the Telegram offset's first record (a
//! plan's workspace files have their own writer, which also refuses to follow links).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A temp-file suffix no other writer uses: this process's id and a counter, so two writers in
/// one process (or a writer and a dead process's leftovers) never share a temp file.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// fsyncs a directory, so that renames in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash at any instant leaves either the old or the new
/// file whole: temp file in the same directory, write, fsync, rename, fsync the directory. With
/// `backup`, the previous file is first kept as `<name>.bak` (by a hard link, so `path` never
/// disappears).
pub fn write_durably(path: &Path, bytes: &[u8], backup: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", unique()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if backup && path.exists() {
            let bak = dir.join(format!("{name}.bak"));
            let bak_tmp = dir.join(format!(".{name}.bak-{}", unique()));
            let _ = fs::remove_file(&bak_tmp);
            if fs::hard_link(path, &bak_tmp).is_err() {
                fs::copy(path, &bak_tmp)?;
            }
            fs::rename(&bak_tmp, &bak)?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_keeps_the_old_file_as_backup_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_durably(&path, b"one", true).unwrap();
        assert!(!dir.path().join("state.json.bak").exists());
        write_durably(&path, b"two", true).unwrap();
        write_durably(&path, b"three", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(fs::read(dir.path().join("state.json.bak")).unwrap(), b"one");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_ne!(unique(), unique());
    }
}
