//! Each running child's process group recorded on disk, so that a planbot killed mid-turn leaves
//! no agent behind: the next one ends what it finds.

use super::*;

/// A running child's group on disk: `<dir>/<pid>` holding the leader's start time (so that a
/// reused pid is never signalled). Removed when dropped.
pub(super) struct GroupRecord(PathBuf);

impl GroupRecord {
    pub(super) fn write(dir: &Path, pid: u32) -> Option<GroupRecord> {
        let start = start_time(pid)?;
        let path = dir.join(pid.to_string());
        let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, start));
        match written {
            Ok(()) => Some(GroupRecord(path)),
            Err(e) => {
                tracing::warn!(error = %e, "could not record a running claude's process group");
                None
            }
        }
    }
}

impl Drop for GroupRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), which a reused pid does not share.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // Fields after the command name start at field 3 (state); the start time is field 22.
    fields.get(19).map(|s| s.to_string())
}

/// Ends the process groups of turns a previous planbot left running (it was killed mid-turn),
/// before any chat can resume them. Returns how many groups it ended.
pub fn reap_orphans(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        let pid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(pid) = pid
            && start_time(pid).is_some_and(|now| now == recorded.trim())
        {
            tracing::warn!(
                pid,
                "ending the claude process group a killed planbot left running"
            );
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            reaped += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}
