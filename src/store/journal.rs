//! `planning.json.journal`: the updates since the file was last written whole, one session a
//! line after a header naming the file's generation (see [`super::file`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::StoreError;
use super::file::journal_path;
use super::format::journal_header;
use crate::durable::sync_dir;

/// `planning.json.journal`, open for appending.
pub(super) struct Journal {
    file: File,
    /// Its length, as synced.
    pub(super) len: u64,
    /// The header's length: a journal no longer than it holds no record.
    header: u64,
    /// Whether the file is known to hold exactly `len` whole bytes of the current generation;
    /// if not, the next update writes the whole state instead.
    pub(super) sound: bool,
}

impl Journal {
    pub(super) fn open(dir: &Path) -> Result<Journal, StoreError> {
        let path = journal_path(dir);
        let open = || -> io::Result<File> {
            let file = OpenOptions::new().append(true).create(true).open(&path)?;
            sync_dir(dir)?;
            Ok(file)
        };
        let file = open().map_err(|source| StoreError::Write { path, source })?;
        Ok(Journal {
            file,
            len: 0,
            header: 0,
            sound: false,
        })
    }

    pub(super) fn has_records(&self) -> bool {
        !self.sound || self.len > self.header
    }

    /// Empties the journal and starts it for the file of `generation`.
    pub(super) fn restart(&mut self, generation: u64) -> io::Result<()> {
        self.sound = false;
        let header = journal_header(generation);
        self.file.set_len(0)?;
        self.file.write_all(&header)?;
        self.file.sync_data()?;
        self.len = header.len() as u64;
        self.header = self.len;
        self.sound = true;
        Ok(())
    }

    /// Appends `records` and syncs them; on failure, cuts the journal back to what it held.
    pub(super) fn append(&mut self, records: &[u8]) -> io::Result<()> {
        let written = self
            .file
            .write_all(records)
            .and_then(|()| self.file.sync_data());
        if written.is_ok() {
            self.len += records.len() as u64;
        } else if self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
            .is_err()
        {
            self.sound = false;
        }
        written
    }
}
