//! `audit.jsonl`: one line per action (who, where, what, outcome, cost, duration), appended and
//! fsynced, rotated by size. It is also where a user's spending today is read back at start-up.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The audit log of a state directory; a cheap handle.
#[derive(Clone)]
pub struct Audit {
    path: Arc<PathBuf>,
    /// Serializes appends (and rotation) within this process.
    lock: Arc<std::sync::Mutex<()>>,
}

impl Audit {
    pub fn new(state_dir: &Path) -> Audit {
        Audit {
            path: Arc::new(state_dir.join(AUDIT_FILE)),
            lock: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// Appends a line durably. A failure is logged, never fatal: the audit must not stop planning.
    pub async fn append(&self, line: AuditLine) {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || this.append_blocking(&line)).await;
        if let Ok(Err(e)) | Err(e) = result.map_err(io::Error::other) {
            tracing::error!(error = %e, path = %self.path.display(), "could not append to the audit log");
        }
    }

    fn append_blocking(&self, line: &AuditLine) -> io::Result<()> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| io::Error::other("audit lock poisoned"))?;
        if fs::metadata(&*self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
            fs::rename(&*self.path, self.path.with_extension("jsonl.1"))?;
        }
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
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

    #[test]
    fn spend_and_totals_survive_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path());
        audit
            .append_blocking(&line("finalize", "finalized", 1.5))
            .unwrap();
        fs::rename(
            dir.path().join(AUDIT_FILE),
            dir.path().join("audit.jsonl.1"),
        )
        .unwrap();
        audit
            .append_blocking(&line("button:fin", "finalized", 0.25))
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
