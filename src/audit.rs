//! `audit.jsonl`: one line per action (who, where, what, outcome, cost, duration), appended and
//! fsynced (group-committed, off the path of any reply), rotated by size. It is also where a
//! user's spending today is read back at start-up.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub const AUDIT_FILE: &str = "audit.jsonl";
/// Past this size the log is rotated to `audit.jsonl.1` (one generation kept).
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// One action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    pub time: DateTime<Utc>,
    pub adapter: String,
    pub chat: String,
    pub user: String,
    pub action: String,
    pub slug: Option<String>,
    pub phase: Option<String>,
    pub outcome: String,
    pub cost_usd: f64,
    pub duration_ms: u64,
}

impl AuditLine {
    /// What `user` did in `chat`, from `started` until now: done, at no cost, outside a plan
    /// (set the rest with struct update).
    pub fn new(
        chat: &crate::chat::ChatKey,
        user: String,
        action: String,
        started: std::time::Instant,
    ) -> AuditLine {
        AuditLine {
            time: Utc::now(),
            adapter: chat.adapter.clone(),
            chat: chat.channel.clone(),
            user,
            action,
            slug: None,
            phase: None,
            outcome: "ok".into(),
            cost_usd: 0.0,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// The audit log of a state directory; a cheap handle.
///
/// Appends are group-committed by a writer thread of their own, started on the first append:
/// every line waiting is written, then synced once. An append never waits for the disk (a reply
/// may go out before its audit line is synced, never before the state a restart needs);
/// [`Audit::flush`] waits until every line appended before it is on disk.
#[derive(Clone)]
pub struct Audit {
    path: Arc<PathBuf>,
    writer: Arc<OnceLock<mpsc::Sender<Entry>>>,
    /// With several replicas: every line also goes here, to the database they share.
    mirror: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<AuditLine>>>,
}

/// What the writer thread is given.
enum Entry {
    Line(Box<AuditLine>),
    /// Answered once every line before it is synced.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Audit {
    pub fn new(state_dir: &Path) -> Audit {
        Audit {
            path: Arc::new(state_dir.join(AUDIT_FILE)),
            writer: Arc::new(OnceLock::new()),
            mirror: Arc::new(OnceLock::new()),
        }
    }

    /// Sends every line appended from now on to `mirror` too.
    pub fn mirror_to(&self, mirror: tokio::sync::mpsc::UnboundedSender<AuditLine>) {
        let _ = self.mirror.set(mirror);
    }

    /// Appends a line; it is on disk soon after (see [`Audit::flush`]). A failure is logged,
    /// never fatal: the audit must not stop planning.
    pub fn append(&self, line: AuditLine) {
        if let Some(mirror) = self.mirror.get() {
            let _ = mirror.send(line.clone());
        }
        self.send(Entry::Line(Box::new(line)));
    }

    /// Returns once every line appended before is synced (or could not be).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Entry::Flush(done));
        let _ = wait.await;
    }

    fn send(&self, entry: Entry) {
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let this = self.clone();
            let started = std::thread::Builder::new()
                .name("planbot-audit".into())
                .spawn(move || this.write_loop(&rx));
            if let Err(e) = started {
                tracing::error!(error = %e, "could not start the audit writer");
            }
            tx
        });
        if writer.send(entry).is_err() {
            tracing::error!(path = %self.path.display(), "the audit writer is gone; a line is lost");
        }
    }

    /// The writer thread: takes every entry waiting, writes the lines, syncs once, answers the
    /// flushes among them.
    fn write_loop(&self, rx: &mpsc::Receiver<Entry>) {
        while let Ok(first) = rx.recv() {
            let mut lines = Vec::new();
            let mut flushes = Vec::new();
            for entry in std::iter::once(first).chain(rx.try_iter()) {
                match entry {
                    Entry::Line(line) => lines.push(*line),
                    Entry::Flush(done) => flushes.push(done),
                }
            }
            if !lines.is_empty()
                && let Err(e) = self.append_blocking(&lines)
            {
                tracing::error!(error = %e, path = %self.path.display(), "could not append to the audit log");
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn append_blocking(&self, lines: &[AuditLine]) -> io::Result<()> {
        if fs::metadata(&*self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
            fs::rename(&*self.path, self.path.with_extension("jsonl.1"))?;
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(&serde_json::to_string(line).map_err(io::Error::other)?);
            text.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*self.path)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    /// Every line of the current log (unreadable lines are skipped).
    pub fn lines(&self) -> Vec<AuditLine> {
        read_lines(&self.path)
    }

    /// Every line of every generation kept, oldest first: a rotation must not forget today.
    pub fn all_lines(&self) -> Vec<AuditLine> {
        let mut lines = read_lines(&self.path.with_extension("jsonl.1"));
        lines.extend(self.lines());
        lines
    }

    /// What each `adapter:user` spent on `day` (UTC), over every generation of the log.
    pub fn spend_on(&self, day: NaiveDate) -> HashMap<String, f64> {
        let mut spend = HashMap::new();
        for line in self.all_lines() {
            if line.time.date_naive() == day && line.cost_usd > 0.0 {
                *spend
                    .entry(format!("{}:{}", line.adapter, line.user))
                    .or_insert(0.0) += line.cost_usd;
            }
        }
        spend
    }
}

fn read_lines(path: &Path) -> Vec<AuditLine> {
    let Ok(file) = fs::File::open(path) else {
        return Vec::new();
    };
    io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Totals for `planbot sessions`, over every generation of the log.
pub fn summary(state_dir: &Path) -> Option<String> {
    let lines = Audit::new(state_dir).all_lines();
    if lines.is_empty() {
        return None;
    }
    let today = Utc::now().date_naive();
    let cost: f64 = lines.iter().map(|l| l.cost_usd).sum();
    let today_cost: f64 = lines
        .iter()
        .filter(|l| l.time.date_naive() == today)
        .map(|l| l.cost_usd)
        .sum();
    // By /finalize or by the Finalize button alike.
    let finalized = lines.iter().filter(|l| l.outcome == "finalized").count();
    Some(format!(
        "Audit: {} actions, {finalized} plans finalized, ${cost:.2} spent in all, ${today_cost:.2} today.",
        lines.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(action: &str, outcome: &str, cost: f64) -> AuditLine {
        AuditLine {
            time: Utc::now(),
            adapter: "telegram".into(),
            chat: "1".into(),
            user: "7".into(),
            action: action.into(),
            slug: None,
            phase: None,
            outcome: outcome.into(),
            cost_usd: cost,
            duration_ms: 1,
        }
    }

    #[tokio::test]
    async fn appends_are_on_disk_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path());
        for i in 0..200 {
            audit.append(line(&format!("action {i}"), "ok", 0.0));
        }
        audit.flush().await;
        let lines = Audit::new(dir.path()).lines();
        assert_eq!(lines.len(), 200);
        assert_eq!(lines[199].action, "action 199", "in order");
    }

    #[test]
    fn spend_and_totals_survive_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path());
        audit
            .append_blocking(&[line("finalize", "finalized", 1.5)])
            .unwrap();
        fs::rename(
            dir.path().join(AUDIT_FILE),
            dir.path().join("audit.jsonl.1"),
        )
        .unwrap();
        audit
            .append_blocking(&[line("button:fin", "finalized", 0.25)])
            .unwrap();
        let spend = audit.spend_on(Utc::now().date_naive());
        assert_eq!(spend.get("telegram:7"), Some(&1.75));
        let summary = summary(dir.path()).unwrap();
        assert!(
            summary.contains("2 actions, 2 plans finalized"),
            "{summary}"
        );
    }
}
