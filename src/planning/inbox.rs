//! Files the user brings into a plan: saved under `inbox/` in the plan's workspace with a name
//! that is safe whatever the sender called it, and described to Claude in the turn's message.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::workspace::{WorkspaceError, shown};

/// The folder in a plan's workspace that holds what the user sent.
pub const INBOX: &str = "inbox";
/// The longest name kept (in characters, extension included).
const MAX_NAME_CHARS: usize = 80;

/// A file saved into the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Relative to the workspace: `inbox/spec.pdf`.
    pub path: String,
    /// The name the sender gave it, when it differs from the one saved.
    pub sent_as: Option<String>,
    pub mime: String,
    pub bytes: u64,
}

/// A name made safe: no path parts (only what follows the last `/` or `\`), no control
/// characters, no leading dots or spaces (nothing hidden, nothing relative), at most
/// [`MAX_NAME_CHARS`]; `fallback` when nothing is left.
pub fn safe_name(sent: Option<&str>, fallback: &str) -> String {
    let base = sent.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let trimmed = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return fallback.to_string();
    }
    if trimmed.chars().count() <= MAX_NAME_CHARS {
        return trimmed.to_string();
    }
    // Too long: keep the extension, shorten the stem.
    let (stem, ext) = match trimmed.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.chars().count() <= 10 => (stem, ext),
        _ => (trimmed, ""),
    };
    let keep = MAX_NAME_CHARS - ext.chars().count() - 1;
    let stem: String = stem.chars().take(keep).collect();
    if ext.is_empty() {
        stem
    } else {
        format!("{stem}.{ext}")
    }
}

/// The name of a file sent without one (a Telegram photo), by its type.
pub fn fallback_name(mime: &Option<String>) -> &'static str {
    match mime.as_deref() {
        Some("image/jpeg") => "photo.jpg",
        Some("image/png") => "image.png",
        Some(m) if m.starts_with("image/") => "image",
        _ => "file",
    }
}

/// `photo.jpg`, `photo-2.jpg`, `photo-3.jpg`, …
fn numbered(name: &str, n: u32) -> String {
    if n == 1 {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{n}.{ext}"),
        _ => format!("{name}-{n}"),
    }
}

/// The type to name to Claude: the platform's, else one guessed from the name.
pub fn mime_of(stated: Option<&str>, name: &str) -> String {
    stated
        .filter(|m| !m.trim().is_empty() && m.len() < 100 && !m.chars().any(char::is_control))
        .map(str::to_string)
        .unwrap_or_else(|| {
            mime_guess::from_path(name)
                .first_or_octet_stream()
                .essence_str()
                .to_string()
        })
}

/// Saves `bytes` as a new file in `workspace/inbox/` under `name` (already safe), numbered when
/// that name is taken. The file is created exclusively, so never through a link the agent left;
/// an `inbox` that is a link is refused.
pub fn save(workspace: &Path, name: &str, bytes: &[u8]) -> Result<String, WorkspaceError> {
    let dir = workspace.join(INBOX);
    let io_err = |path: &Path, source| WorkspaceError::Io {
        path: shown(workspace, path),
        source,
    };
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => {
            return Err(WorkspaceError::Symlink(shown(workspace, &dir)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
        }
        Err(e) => return Err(io_err(&dir, e)),
    }
    for n in 1..=1000 {
        let candidate = numbered(name, n);
        let path = dir.join(&candidate);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_err(&path, e))?;
                fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err(&dir, e))?;
                return Ok(format!("{INBOX}/{candidate}"));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path, e)),
        }
    }
    Err(io_err(
        &dir.join(name),
        io::Error::new(io::ErrorKind::AlreadyExists, "too many files of this name"),
    ))
}

/// A size as people read it: `412 KB`, `3.4 MB`.
pub fn human_size(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    } else {
        format!("{} KB", bytes.div_ceil(1024).max(1))
    }
}

/// The turn's message: "The user attached inbox/spec.pdf (application/pdf, 412 KB): <caption>".
pub fn describe(received: &[Received], caption: &str) -> String {
    let items: Vec<String> = received
        .iter()
        .map(|r| {
            let sent_as = r
                .sent_as
                .as_ref()
                .map(|s| format!(", sent as \"{}\"", s.escape_debug()))
                .unwrap_or_default();
            format!("{} ({}, {}{sent_as})", r.path, r.mime, human_size(r.bytes))
        })
        .collect();
    let caption = caption.trim();
    let tail = if caption.is_empty() {
        ".".to_string()
    } else {
        format!(": {caption}")
    };
    format!("The user attached {}{tail}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_dots_and_control_characters() {
        assert_eq!(safe_name(Some("../../x"), "file"), "x");
        assert_eq!(safe_name(Some("..\\..\\win.ini"), "file"), "win.ini");
        assert_eq!(safe_name(Some(".bashrc"), "file"), "bashrc");
        assert_eq!(safe_name(Some("..."), "file"), "file");
        assert_eq!(
            safe_name(Some("a\u{0}b\nc\u{1b}[31m.txt"), "file"),
            "abc[31m.txt"
        );
        assert_eq!(safe_name(Some("spec v2.pdf"), "file"), "spec v2.pdf");
        assert_eq!(safe_name(None, "photo.jpg"), "photo.jpg");
        assert_eq!(safe_name(Some("dir/"), "file"), "file");
        let long = format!("{}.pdf", "x".repeat(300));
        let short = safe_name(Some(&long), "file");
        assert_eq!(short.chars().count(), MAX_NAME_CHARS);
        assert!(short.ends_with(".pdf"));
    }

    #[test]
    fn saved_files_are_new_numbered_and_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("app");
        fs::create_dir(&ws).unwrap();
        assert_eq!(save(&ws, "photo.jpg", b"1").unwrap(), "inbox/photo.jpg");
        assert_eq!(save(&ws, "photo.jpg", b"2").unwrap(), "inbox/photo-2.jpg");
        assert_eq!(fs::read(ws.join("inbox/photo.jpg")).unwrap(), b"1");
        // A link the agent planted where the next name would go is passed over, not followed.
        let outside = root.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("inbox/notes")).unwrap();
        assert_eq!(save(&ws, "notes", b"new").unwrap(), "inbox/notes-2");
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        // An inbox that is a link is refused.
        fs::remove_dir_all(ws.join("inbox")).unwrap();
        std::os::unix::fs::symlink(root.path(), ws.join("inbox")).unwrap();
        let err = save(&ws, "x", b"x").unwrap_err();
        assert!(matches!(err, WorkspaceError::Symlink(_)), "{err}");
        assert!(!root.path().join("x").exists());
    }

    #[test]
    fn the_message_names_each_file_then_the_caption() {
        let spec = Received {
            path: "inbox/spec.pdf".into(),
            sent_as: None,
            mime: "application/pdf".into(),
            bytes: 412 * 1024,
        };
        assert_eq!(
            describe(std::slice::from_ref(&spec), "our draft"),
            "The user attached inbox/spec.pdf (application/pdf, 412 KB): our draft"
        );
        let odd = Received {
            path: "inbox/x".into(),
            sent_as: Some("../../x".into()),
            mime: "application/octet-stream".into(),
            bytes: 3 * 1024 * 1024 + 1,
        };
        assert_eq!(
            describe(&[spec, odd], " "),
            "The user attached inbox/spec.pdf (application/pdf, 412 KB), inbox/x \
             (application/octet-stream, 3.0 MB, sent as \"../../x\")."
        );
        assert_eq!(mime_of(None, "a.png"), "image/png");
        assert_eq!(mime_of(Some("application/pdf"), "a"), "application/pdf");
        assert_eq!(mime_of(Some("bad\ntype"), "a"), "application/octet-stream");
    }
}
