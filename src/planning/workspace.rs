//! A plan's workspace as hostile ground: the agent writes there, so planbot's own writes never
//! follow a link it may have planted, files the CLI would load as instructions are moved aside
//! before a turn, and each slug belongs to the chat that created it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Names the CLI loads from a working directory as instructions or settings.
const INSTRUCTION_FILES: [&str; 4] = ["CLAUDE.md", "CLAUDE.local.md", ".claude", ".mcp.json"];
/// How deep the instruction scan looks (nested `CLAUDE.md` files load too).
const SCAN_DEPTH: usize = 6;
/// Where slug ownership is recorded, beside the workspaces and out of every agent's reach.
const OWNERS_DIR: &str = ".owners";

/// A write planbot refused or could not make.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(
        "`{0}` in the plan's workspace is a symbolic link; planbot does not write through links. Remove it and try again"
    )]
    Symlink(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Writes `bytes` to `rel` inside `workspace` through a fresh temp file (created exclusively, so
/// never through a link), synced, renamed into place, and the directory synced. A link on the way
/// (`phases/`, or the target itself) is refused.
pub fn write_file(workspace: &Path, rel: &str, bytes: &[u8]) -> Result<PathBuf, WorkspaceError> {
    let io_err = |path: &Path, source| WorkspaceError::Io {
        path: shown(workspace, path),
        source,
    };
    let target = workspace.join(rel);
    let mut dir = workspace.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(WorkspaceError::Symlink(shown(workspace, &dir)));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
            }
            Err(e) => return Err(io_err(&dir, e)),
        }
    }
    if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(WorkspaceError::Symlink(rel.to_string()));
    }
    let mut file = tempfile::Builder::new()
        .prefix(".planbot-")
        .tempfile_in(&dir)
        .map_err(|e| io_err(&dir, e))?;
    file.write_all(bytes).map_err(|e| io_err(&target, e))?;
    file.as_file().sync_all().map_err(|e| io_err(&target, e))?;
    file.persist(&target)
        .map_err(|e| io_err(&target, e.error))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, e))?;
    Ok(target)
}

/// A path as users see it: relative to the workspace's parent (`todo-app/final-plan.md`).
pub fn shown(workspace: &Path, path: &Path) -> String {
    let base = workspace.parent().unwrap_or(workspace);
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Moves every instruction file the CLI would load (`CLAUDE.md`, `CLAUDE.local.md`, `.claude/`,
/// `.mcp.json`, at any depth) aside as `<name>.moved-aside`; returns what was moved, as shown.
pub fn move_instruction_files_aside(workspace: &Path) -> Vec<String> {
    let mut moved = Vec::new();
    scan(workspace, workspace, 0, &mut moved);
    moved
}

fn scan(workspace: &Path, dir: &Path, depth: usize, moved: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // The CLI itself leaves an empty `.claude/` with empty folders: only one with a file in
        // it can carry instructions.
        let harmless = name.eq_ignore_ascii_case(".claude") && !holds_a_file(&path);
        if !harmless
            && INSTRUCTION_FILES
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&name))
        {
            let aside = path.with_file_name(format!("{name}.moved-aside-{}", fastrand::u32(..)));
            if fs::rename(&path, &aside).is_ok() {
                moved.push(shown(workspace, &path));
            }
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && depth < SCAN_DEPTH {
            scan(workspace, &path, depth + 1, moved);
        }
    }
}

/// Whether `dir` (not following links) holds anything but empty folders.
fn holds_a_file(dir: &Path) -> bool {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.is_dir() {
        return true;
    }
    fs::read_dir(dir).map_or(true, |entries| {
        entries.flatten().any(|e| holds_a_file(&e.path()))
    })
}

/// Who may plan in a slug's workspace.
#[derive(Debug, PartialEq)]
pub enum Ownership {
    /// This chat created it (or it is new, and now this chat's).
    Mine,
    /// Another chat's.
    Taken,
}

/// Claims `slug` for `chat` unless another chat holds it. The record lives in
/// `<root>/.owners/<slug>`, created exclusively so two chats cannot both claim it.
pub fn claim(root: &Path, slug: &str, chat: &str) -> io::Result<Ownership> {
    let dir = root.join(OWNERS_DIR);
    fs::create_dir_all(&dir)?;
    let record = dir.join(slug);
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&record)
    {
        Ok(mut file) => {
            file.write_all(chat.as_bytes())?;
            file.sync_all()?;
            Ok(Ownership::Mine)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let owner = fs::read_to_string(&record)?;
            Ok(if owner.trim() == chat {
                Ownership::Mine
            } else {
                Ownership::Taken
            })
        }
        Err(e) => Err(e),
    }
}

/// The slugs `chat` owns, for autocompletion.
pub fn owned_slugs(root: &Path, chat: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join(OWNERS_DIR)) else {
        return Vec::new();
    };
    let mut slugs: Vec<String> = entries
        .flatten()
        .filter(|e| fs::read_to_string(e.path()).is_ok_and(|o| o.trim() == chat))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    slugs.sort();
    slugs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_never_follow_links() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("app");
        fs::create_dir(&ws).unwrap();
        let outside = root.path().join("outside.txt");
        fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("final-plan.md")).unwrap();
        let err = write_file(&ws, "final-plan.md", b"plan").unwrap_err();
        assert!(err.to_string().contains("`final-plan.md`"), "{err}");
        std::os::unix::fs::symlink(root.path(), ws.join("phases")).unwrap();
        let err = write_file(&ws, "phases/01-x.md", b"notes").unwrap_err();
        assert!(err.to_string().contains("app/phases"), "{err}");
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert!(!root.path().join("01-x.md").exists());
        fs::remove_file(ws.join("phases")).unwrap();
        let written = write_file(&ws, "phases/01-x.md", b"notes").unwrap();
        assert_eq!(fs::read_to_string(written).unwrap(), "notes");
        let names: Vec<_> = fs::read_dir(ws.join("phases")).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn instruction_files_are_moved_aside_at_any_depth() {
        let ws = tempfile::tempdir().unwrap();
        fs::write(ws.path().join("CLAUDE.md"), "obey").unwrap();
        fs::create_dir_all(ws.path().join("docs/.claude")).unwrap();
        fs::write(ws.path().join("docs/.claude/settings.json"), "{}").unwrap();
        fs::create_dir_all(ws.path().join(".claude/agents")).unwrap();
        fs::write(ws.path().join("docs/claude.local.md"), "obey").unwrap();
        fs::write(ws.path().join("notes.md"), "fine").unwrap();
        let mut moved = move_instruction_files_aside(ws.path());
        moved.sort();
        assert_eq!(moved.len(), 3, "{moved:?}");
        assert!(!ws.path().join("CLAUDE.md").exists());
        assert!(!ws.path().join("docs/.claude").exists());
        assert!(ws.path().join("notes.md").exists());
        assert!(
            ws.path().join(".claude/agents").exists(),
            "the CLI's empty folders stay"
        );
        assert!(move_instruction_files_aside(ws.path()).is_empty());
    }

    #[test]
    fn a_slug_belongs_to_the_chat_that_claimed_it() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            claim(root.path(), "app", "telegram:1").unwrap(),
            Ownership::Mine
        );
        assert_eq!(
            claim(root.path(), "app", "telegram:1").unwrap(),
            Ownership::Mine
        );
        assert_eq!(
            claim(root.path(), "app", "discord:2").unwrap(),
            Ownership::Taken
        );
        claim(root.path(), "other", "discord:2").unwrap();
        assert_eq!(owned_slugs(root.path(), "discord:2"), ["other"]);
        assert_eq!(owned_slugs(root.path(), "telegram:1"), ["app"]);
    }
}
