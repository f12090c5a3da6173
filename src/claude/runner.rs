//! Runs one `claude` turn as a subprocess and collects what it printed.
//!
//! The child runs in its own process group so that ending a turn ends everything it started.
//! stdout is read line by line while stderr is drained into a bounded tail at the same time, so the
//! child never blocks on a full pipe. A global semaphore bounds how many children run at once.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::StreamEvent;
use super::outcome::{Exit, RawTurn, Stopped};
use super::sandbox::{Sandbox, find_program};
use crate::sync::Locked;

mod groups;
mod lines;

use groups::GroupRecord;
pub use groups::reap_orphans;
use lines::{LineReader, next_line, read_tail};

/// A line longer than this is skipped rather than buffered (lines of many MiB are legal).
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// How much of stderr is kept.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// Limits and environment for every turn.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The `claude` binary (`PLANBOT_CLAUDE_BIN`).
    pub bin: PathBuf,
    /// Wall-clock limit of one turn.
    pub turn_timeout: Duration,
    /// A turn that prints no line for this long is ended.
    pub idle_timeout: Duration,
    /// Between SIGINT and SIGKILL when a turn is ended.
    pub kill_grace: Duration,
    /// How long a child may linger after its `result` line or after closing stdout.
    pub exit_grace: Duration,
    /// At most this many `claude` processes at once; the rest queue.
    pub max_concurrent: usize,
    /// Environment variables never passed to the child (planbot's secrets), when `env` is unset.
    pub env_remove: Vec<String>,
    /// The child's whole environment (see [`super::env::child_env`]); `None` inherits planbot's
    /// less `env_remove`.
    pub env: Option<BTreeMap<String, String>>,
    /// Each turn runs inside this sandbox, if set.
    pub sandbox: Option<Sandbox>,
    /// Where each running child's process group is recorded (`<pid>` holding its start time),
    /// so that a planbot killed mid-turn ends the group on its next start ([`reap_orphans`]).
    pub pid_dir: Option<PathBuf>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            bin: "claude".into(),
            turn_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            kill_grace: Duration::from_millis(1500),
            exit_grace: Duration::from_secs(2),
            max_concurrent: 4,
            env_remove: Vec::new(),
            env: None,
            sandbox: None,
            pid_dir: None,
        }
    }
}

/// One turn to run.
#[derive(Debug, Clone)]
pub struct TurnSpec {
    pub args: Vec<OsString>,
    /// Written to stdin, which is then closed.
    pub prompt: String,
    /// The session's pinned working directory (`--resume` only finds sessions made there).
    pub cwd: PathBuf,
    /// Files outside the workspace the turn reads (its system prompt), kept visible in a sandbox.
    pub files: Vec<PathBuf>,
    /// The slash command (a skill) the prompt starts with: if the CLI's init line does not list
    /// it, the turn ends there (newer CLIs would send it to the model as plain text).
    pub command: Option<String>,
}

/// What a running turn reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Waiting for a free slot under the concurrency limit.
    Queued,
    /// The process is running.
    Started,
    /// Text from the model, in order, as it arrives.
    Text(String),
    /// The model called a tool.
    Tool(String),
}

/// Runs turns; a cheap handle to share.
#[derive(Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    slots: Arc<Semaphore>,
    /// One turn at a time per working directory, until its process is gone: a turn answered at
    /// its `result` line leaves its process exiting, and the next `--resume` waits for it.
    workspaces: Arc<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
    /// The processes ending after their answer, waited for at shutdown.
    exiting: TaskTracker,
}

impl Runner {
    pub fn new(config: RunnerConfig) -> Runner {
        let slots = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Runner {
            config: Arc::new(config),
            slots,
            workspaces: Arc::default(),
            exiting: TaskTracker::new(),
        }
    }

    /// How many turns run at once at most (`PLANBOT_MAX_CONCURRENT_RUNS`).
    pub fn capacity(&self) -> usize {
        self.config.max_concurrent.max(1)
    }

    /// Returns once every process answered at its result line has ended (at shutdown: none
    /// is left behind when planbot exits).
    pub async fn drain(&self) {
        self.exiting.close();
        self.exiting.wait().await;
        self.exiting.reopen();
    }

    /// Returns once no `claude` of a turn in `cwd` is still running (one answered at its result
    /// line may still be exiting, and could still write there).
    pub async fn settled(&self, cwd: &Path) {
        drop(self.workspace_lock(cwd).lock_owned().await);
    }

    fn workspace_lock(&self, cwd: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.workspaces.locked();
        // Locks nobody holds or waits for are dropped, so the map does not grow with every plan.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(cwd.to_path_buf()).or_default().clone()
    }

    /// Runs one turn to its end. Never fails: every way it can end is in the [`RawTurn`].
    pub async fn run(
        &self,
        spec: TurnSpec,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> RawTurn {
        let workspace = self.workspace_lock(&spec.cwd).lock_owned().await;
        let Some(slot) = self.slot(cancel, progress).await else {
            let mut raw = not_started(Exit::Code(-1), String::new());
            raw.stopped = Some(Stopped::Cancelled);
            return raw;
        };
        let mut child = match self.spawn(&spec) {
            Ok(child) => child,
            Err((exit, why)) => return not_started(exit, why),
        };
        progress(Progress::Started);
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let record = match (&self.config.pid_dir, child.id()) {
            (Some(dir), Some(pid)) => GroupRecord::write(dir, pid),
            _ => None,
        };
        let mut turn = TurnRun::new(&self.config, group);
        turn.command = spec.command;
        let (raw, ending) = turn.drive(&mut child, spec.prompt, cancel, progress).await;
        if let Ending::Exiting(stderr) = ending {
            // Answered at its result line: the process ends in the background, holding its
            // slot, its workspace and its record until it is gone.
            let config = self.config.clone();
            self.exiting.spawn(async move {
                let _held = (slot, workspace, record);
                end_after_answer(&config, child, group, stderr).await;
            });
        }
        // Otherwise the group was killed at the end of `drive`: nothing of it is left to reap.
        raw
    }

    /// A run slot, waited for (and reported as queued) when all are taken; none when a cancel
    /// came first, which ends the turn before it starts.
    async fn slot(
        &self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        progress(Progress::Queued);
        tokio::select! {
            // The semaphore is never closed.
            slot = self.slots.clone().acquire_owned() => slot.ok(),
            _ = cancel.cancelled() => None,
        }
    }

    /// Starts `claude` (in the sandbox, if any) in its own process group, with the child's
    /// environment, every pipe open.
    fn spawn(&self, spec: &TurnSpec) -> Result<Child, (Exit, String)> {
        if !spec.cwd.is_dir() {
            let msg = format!("working directory {} does not exist", spec.cwd.display());
            return Err((Exit::SpawnFailed, msg));
        }
        let path_var = match &self.config.env {
            Some(env) => env.get("PATH").map(OsString::from),
            None => std::env::var_os("PATH"),
        };
        let Some(bin) = find_program(&self.config.bin, path_var.as_deref()) else {
            let msg = format!("{} was not found", self.config.bin.display());
            return Err((Exit::NotFound, msg));
        };
        let (program, args) = match &self.config.sandbox {
            Some(sandbox) => sandbox.wrap(&bin, &spec.args, &spec.cwd, &spec.files),
            None => (bin, spec.args.clone()),
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        match &self.config.env {
            Some(env) => {
                command.env_clear().envs(env);
            }
            None => {
                // The CLI refuses to run nested inside another Claude Code session.
                command.env_remove("CLAUDECODE");
                for name in &self.config.env_remove {
                    command.env_remove(name);
                }
            }
        }
        command.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => (Exit::NotFound, e.to_string()),
            _ => (Exit::SpawnFailed, e.to_string()),
        })
    }
}

/// After an answer: the process gets the exit grace to end on its own, then is stopped; whatever
/// it started goes with it.
async fn end_after_answer(
    config: &RunnerConfig,
    mut child: Child,
    group: Option<Pid>,
    stderr: Option<tokio::task::JoinHandle<String>>,
) {
    let ended = timeout(config.exit_grace, child.wait()).await;
    if !matches!(ended, Ok(Ok(_))) {
        TurnRun::new(config, group).stop(&mut child).await;
    }
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    if let Some(stderr) = stderr {
        stderr.abort();
    }
}

/// How `drive` left the process.
enum Ending {
    /// Exited, or ended, with its whole group.
    Gone,
    /// Still exiting after a complete answer (with its stderr reader).
    Exiting(Option<tokio::task::JoinHandle<String>>),
}

fn not_started(exit: Exit, stderr_tail: String) -> RawTurn {
    RawTurn {
        exit,
        stopped: None,
        result: None,
        init_session_id: None,
        assistant_text: String::new(),
        stderr_tail,
        missing_command: None,
    }
}

/// The state of one running child.
struct TurnRun<'a> {
    config: &'a RunnerConfig,
    /// The child's process group (its pid), to signal everything it started.
    group: Option<Pid>,
    raw: RawTurn,
    /// Whether text of the current message already came as partial deltas.
    streamed_current_message: bool,
    /// The slash command the prompt invokes, checked against the init line.
    command: Option<String>,
}

impl<'a> TurnRun<'a> {
    fn new(config: &'a RunnerConfig, group: Option<Pid>) -> Self {
        TurnRun {
            config,
            group,
            raw: not_started(Exit::Code(-1), String::new()),
            streamed_current_message: false,
            command: None,
        }
    }

    async fn drive(
        mut self,
        child: &mut Child,
        prompt: String,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> (RawTurn, Ending) {
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits without reading gives EPIPE here; that is its business.
            tokio::spawn(async move {
                let _ = stdin.write_all(prompt.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));
        let stdout = child.stdout.take();

        let started = Instant::now();
        let wall_deadline = started + self.config.turn_timeout;
        let mut idle_deadline = started + self.config.idle_timeout;
        // Once the child has exited, or printed its result, it gets a short while to finish.
        let mut linger_deadline: Option<Instant> = None;
        let mut status: Option<ExitStatus> = None;
        let mut lines = stdout.map(|s| LineReader::new(BufReader::with_capacity(64 * 1024, s)));

        loop {
            let soonest = linger_deadline.map_or(idle_deadline.min(wall_deadline), |l| {
                l.min(idle_deadline).min(wall_deadline)
            });
            tokio::select! {
                _ = cancel.cancelled() => { self.raw.stopped = Some(Stopped::Cancelled); break; }
                _ = sleep_until(soonest) => {
                    if linger_deadline.is_some_and(|l| Instant::now() >= l) {
                        break;
                    }
                    self.raw.stopped = Some(if Instant::now() >= wall_deadline {
                        Stopped::WallClock
                    } else {
                        Stopped::Idle
                    });
                    break;
                }
                exited = child.wait(), if status.is_none() => {
                    status = exited.ok();
                    linger_deadline.get_or_insert(Instant::now() + self.config.exit_grace);
                    if lines.is_none() { break; }
                }
                line = next_line(&mut lines), if lines.is_some() => match line {
                    Some(line) => {
                        let now = Instant::now();
                        idle_deadline = now + self.config.idle_timeout;
                        // Output still flowing after the child exited is read to its end.
                        if status.is_some() {
                            linger_deadline = Some(now + self.config.exit_grace);
                        }
                        if self.handle_line(&line, progress) {
                            if self.answered() {
                                // The answer is complete: it goes out now, and the process
                                // exits on its own while it does (see `Runner::run`).
                                self.raw.exit = Exit::Code(0);
                                return (self.raw, Ending::Exiting(stderr));
                            }
                            linger_deadline.get_or_insert(now + self.config.exit_grace);
                        }
                        if self.raw.missing_command.is_some() {
                            break;
                        }
                    }
                    None => {
                        lines = None;
                        if status.is_some() { break; }
                        linger_deadline.get_or_insert(Instant::now() + self.config.exit_grace);
                    }
                },
            }
        }

        self.finish(child, status, stderr).await
    }

    /// The end of a turn: the child stopped if it still runs, its whole group killed, its exit and
    /// the tail of its stderr recorded.
    async fn finish(
        mut self,
        child: &mut Child,
        status: Option<ExitStatus>,
        stderr: Option<tokio::task::JoinHandle<String>>,
    ) -> (RawTurn, Ending) {
        let status = match status {
            Some(status) => Some(status),
            None => self.stop(child).await,
        };
        // Whatever the child started and left behind goes with it.
        self.signal_group(Signal::SIGKILL);
        self.raw.exit = match status {
            Some(s) => exit_of(s),
            None => Exit::Signal(Signal::SIGKILL as i32),
        };
        if let Some(stderr) = stderr {
            // Grandchildren may hold stderr open until the SIGKILL above; the read ends then.
            if let Ok(Ok(tail)) = timeout(self.config.kill_grace, stderr).await {
                self.raw.stderr_tail = tail;
            }
        }
        (self.raw, Ending::Gone)
    }

    /// Whether the result line just read is a successful answer, which nothing after it changes.
    fn answered(&self) -> bool {
        self.raw
            .result
            .as_ref()
            .is_some_and(|r| r.is_error == Some(false) && r.subtype.as_deref() == Some("success"))
    }

    /// Interprets one stdout line. Returns true for the `result` line.
    fn handle_line(&mut self, line: &[u8], progress: &mut (dyn FnMut(Progress) + Send)) -> bool {
        let Some(event) = StreamEvent::parse(line) else {
            tracing::debug!(bytes = line.len(), "skipped a non-JSON line from claude");
            return false;
        };
        if self.raw.init_session_id.is_none()
            && let Some(id) = event.session_id()
        {
            self.raw.init_session_id = Some(id.to_string());
        }
        match event {
            StreamEvent::System(init) if init.subtype.as_deref() == Some("init") => {
                let listed = init.slash_commands.as_deref().unwrap_or_default();
                if let Some(command) = &self.command
                    && init.slash_commands.is_some()
                    && !listed.iter().any(|c| c == command)
                {
                    self.raw.missing_command = Some(command.clone());
                }
            }
            StreamEvent::PartialMessage(partial) => {
                if partial.kind() == Some("message_start") {
                    self.streamed_current_message = false;
                }
                if let Some(text) = partial.text_delta() {
                    self.streamed_current_message = true;
                    progress(Progress::Text(text.to_string()));
                }
            }
            StreamEvent::Assistant(message) => {
                let text = message.text();
                if !text.is_empty() {
                    if !self.streamed_current_message {
                        progress(Progress::Text(text.clone()));
                    }
                    if !self.raw.assistant_text.is_empty() {
                        self.raw.assistant_text.push_str("\n\n");
                    }
                    self.raw.assistant_text.push_str(&text);
                }
                for tool in message.tool_calls() {
                    progress(Progress::Tool(tool.to_string()));
                }
            }
            StreamEvent::Result(result) => {
                self.raw.result = Some(result);
                return true;
            }
            _ => {}
        }
        false
    }

    /// Ends the child: SIGINT to the group, a grace period, then SIGKILL; then reaps it.
    async fn stop(&self, child: &mut Child) -> Option<ExitStatus> {
        self.signal_group(Signal::SIGINT);
        if let Ok(Ok(status)) = timeout(self.config.kill_grace, child.wait()).await {
            return Some(status);
        }
        self.signal_group(Signal::SIGKILL);
        child.wait().await.ok()
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(group) = self.group {
            // ESRCH (the group is already gone) is the normal case at the end of a turn.
            let _ = killpg(group, signal);
        }
    }
}

fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

#[cfg(test)]
mod tests;
