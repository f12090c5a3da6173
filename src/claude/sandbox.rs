//! The operating system as the last wall: each `claude` runs inside bubblewrap, in its own PID
//! namespace and `/proc` (planbot's process is invisible), with the filesystem read-only, the
//! home, planbot's state, every workspace and `/tmp` replaced by empty directories, and only the
//! turn's workspace and the CLI's own config dir writable. The network stays (the CLI needs its
//! API).

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `PLANBOT_SANDBOX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap where it works, else the other walls alone (with one warning).
    Auto,
    /// bubblewrap or refuse to start.
    Bwrap,
    Off,
}

impl SandboxMode {
    pub fn parse(value: &str) -> Option<SandboxMode> {
        match value {
            "auto" => Some(SandboxMode::Auto),
            "bwrap" => Some(SandboxMode::Bwrap),
            "off" => Some(SandboxMode::Off),
            _ => None,
        }
    }
}

/// What the sandbox hides and keeps; the same for every turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sandbox {
    /// The `bwrap` binary.
    pub bwrap: PathBuf,
    /// Directories replaced by an empty tmpfs (home, state dir, workspace root, /tmp, secrets).
    pub hidden_dirs: Vec<PathBuf>,
    /// Files replaced by an empty one (token files).
    pub hidden_files: Vec<PathBuf>,
    /// Kept writable inside hidden directories (the CLI's config dir and file).
    pub writable: Vec<PathBuf>,
    /// Kept readable inside hidden directories (the CLI's and planbot's own binaries).
    pub readable: Vec<PathBuf>,
    /// The CLI's config dir (writable): only the turn's own transcripts are kept in its
    /// `projects/`, so other plans' conversations stay hidden.
    pub config_dir: Option<PathBuf>,
}

impl Sandbox {
    /// Whether bubblewrap can build a sandbox here (it needs namespaces the container may deny).
    pub fn probe(bwrap: &Path) -> Result<(), String> {
        let output = Command::new(bwrap)
            .args([
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--unshare-pid",
                "--die-with-parent",
                "--cap-drop",
                "ALL",
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} cannot run: {e}", bwrap.display()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{} cannot build a sandbox here: {}",
            bwrap.display(),
            stderr.trim()
        ))
    }

    /// The argv that runs `program args` in the sandbox for a turn in `workspace`; `files` are
    /// more files the turn must read (its system prompt).
    pub fn wrap(
        &self,
        program: &Path,
        args: &[OsString],
        workspace: &Path,
        files: &[PathBuf],
    ) -> (PathBuf, Vec<OsString>) {
        // The CLI keeps the session there: a config dir that does not exist yet (a new
        // machine's `~/.claude`, a new volume for `CLAUDE_CONFIG_DIR`) is made now, or the
        // session would be written inside the sandbox and lost, and no turn could be resumed.
        if let Some(config) = &self.config_dir {
            let own = config.join("projects").join(project_key(workspace));
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&own);
            if let Err(e) = made {
                tracing::warn!(dir = %own.display(), error = %e, "could not make the CLI's config dir");
            }
        }
        let mut argv: Vec<OsString> = Vec::new();
        let mut push = |items: &[&std::ffi::OsStr]| argv.extend(items.iter().map(|s| s.into()));
        push(&["--ro-bind".as_ref(), "/".as_ref(), "/".as_ref()]);
        push(&[
            "--proc".as_ref(),
            "/proc".as_ref(),
            "--dev".as_ref(),
            "/dev".as_ref(),
        ]);
        push(&[
            "--unshare-pid".as_ref(),
            "--unshare-ipc".as_ref(),
            "--unshare-uts".as_ref(),
        ]);
        // Root in the sandbox must not be able to unmount what hides the rest.
        push(&[
            "--die-with-parent".as_ref(),
            "--cap-drop".as_ref(),
            "ALL".as_ref(),
        ]);
        let mut hidden = self.hidden_dirs.clone();
        hidden.sort_by_key(|p| p.components().count());
        for dir in hidden.iter().filter(|d| d.is_dir()) {
            push(&["--tmpfs".as_ref(), dir.as_os_str()]);
        }
        for file in self.hidden_files.iter().filter(|f| f.is_file()) {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), file.as_os_str()]);
        }
        let mut binds: Vec<(&Path, bool)> = self
            .readable
            .iter()
            .chain(files)
            .map(|p| (p.as_path(), false))
            .chain(self.writable.iter().map(|p| (p.as_path(), true)))
            .chain(std::iter::once((workspace, true)))
            .filter(|(p, _)| p.exists())
            .collect();
        binds.sort_by_key(|(p, _)| p.components().count());
        for (path, writable) in binds {
            let flag = if writable { "--bind" } else { "--ro-bind" };
            push(&[flag.as_ref(), path.as_os_str(), path.as_os_str()]);
        }
        if let Some(config) = &self.config_dir {
            let projects = config.join("projects");
            let own = projects.join(project_key(workspace));
            if own.is_dir() {
                push(&["--tmpfs".as_ref(), projects.as_os_str()]);
                push(&["--bind".as_ref(), own.as_os_str(), own.as_os_str()]);
            }
        }
        push(&[
            "--chdir".as_ref(),
            workspace.as_os_str(),
            "--".as_ref(),
            program.as_os_str(),
        ]);
        argv.extend(args.iter().cloned());
        (self.bwrap.clone(), argv)
    }
}

/// The CLI's name for a working directory under `projects/`: every character that is not a
/// letter or digit becomes `-`.
pub fn project_key(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Finds `program` as a shell would: a path with a slash as it is, a bare name on `PATH`.
pub fn find_program(program: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_parents_come_before_what_is_kept_inside_them() {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join(".claude");
        let ws = home.path().join("workspace/app");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        let sandbox = Sandbox {
            bwrap: "bwrap".into(),
            hidden_dirs: vec![home.path().join("workspace"), home.path().to_path_buf()],
            hidden_files: vec![],
            writable: vec![config.clone()],
            readable: vec![home.path().join("missing")],
            config_dir: None,
        };
        let (program, argv) = sandbox.wrap(Path::new("/bin/claude"), &["-p".into()], &ws, &[]);
        assert_eq!(program, PathBuf::from("bwrap"));
        let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
        let at = |s: &str| argv.iter().position(|a| a == s).unwrap();
        let home_s = home.path().to_str().unwrap();
        assert!(at(home_s) < at(home.path().join("workspace").to_str().unwrap()));
        assert!(at(home.path().join("workspace").to_str().unwrap()) < at(ws.to_str().unwrap()));
        assert!(at(home_s) < at(config.to_str().unwrap()));
        assert!(!argv.iter().any(|a| a.ends_with("missing")));
        assert_eq!(&argv[argv.len() - 2..], ["/bin/claude", "-p"]);
    }

    #[test]
    fn a_config_dir_not_made_yet_is_made_and_kept_writable() {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("volume/claude");
        let ws = home.path().join("workspace/app");
        std::fs::create_dir_all(&ws).unwrap();
        let sandbox = Sandbox {
            bwrap: "bwrap".into(),
            hidden_dirs: vec![home.path().to_path_buf()],
            hidden_files: vec![],
            writable: vec![config.clone()],
            readable: vec![],
            config_dir: Some(config.clone()),
        };
        let (_, argv) = sandbox.wrap(Path::new("/bin/claude"), &[], &ws, &[]);
        let own = config.join("projects").join(project_key(&ws));
        assert!(own.is_dir());
        let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
        let bound = |dir: &Path| {
            argv.windows(3)
                .any(|w| w[0] == "--bind" && w[1] == dir.to_str().unwrap() && w[2] == w[1])
        };
        assert!(bound(&config) && bound(&own), "{argv:?}");
    }
}
