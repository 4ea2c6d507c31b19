//! The log source: follow access-log files (for places without eBPF, such as Fargate, and for
//! TLS traffic a TC program cannot read) and feed each request to the same pipeline.
//!
//! Rotation is followed both ways logrotate does it:
//! - rename + create: the path now names a new file (another inode); the old file is read to
//!   its end, then the new one from its start;
//! - copytruncate: the file shrank below our position; reading restarts at its start.

pub mod formats;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::LogFormat;
use crate::metrics::Metrics;
use crate::pipeline::{Origin, Pipeline};
use crate::reassembly::RequestMeta;

pub use formats::{LogEntry, parse_line};

/// Longest line accepted; longer ones are skipped (counted as errors).
const MAX_LINE: usize = 64 * 1024;

/// Follows one file across rotations, yielding complete lines.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
    skipping_long_line: bool,
    /// Start at the end of the first file opened (only lines written later are read).
    start_at_end: bool,
}

impl Follower {
    /// Follow `path`; `from_start` reads what the file already holds.
    pub fn new(path: impl Into<PathBuf>, from_start: bool) -> Self {
        Follower {
            path: path.into(),
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
            skipping_long_line: false,
            start_at_end: !from_start,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what is new; `line` gets each complete line (without the newline). Returns the
    /// number of bytes read. A missing file is not an error (it may be being rotated).
    pub fn poll(&mut self, line: &mut impl FnMut(&[u8])) -> Result<u64, Error> {
        let path = self.path.clone();
        let io = move |source| Error::Log {
            path: path.clone(),
            source,
        };
        let mut read = 0;
        if self.file.is_none() && !self.open()? {
            return Ok(0);
        }
        read += self.read_to_end(line).map_err(&io)?;
        // Rotation checks against what the path names now.
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.ino() != self.ino => {
                info!(path = %self.path.display(), "log file rotated (new file); following it");
                // The old file was read to its end above.
                self.flush_partial(line);
                self.file = None;
                self.start_at_end = false;
                if self.open()? {
                    read += self.read_to_end(line).map_err(&io)?;
                }
            }
            Ok(meta) if meta.len() < self.pos => {
                info!(path = %self.path.display(), "log file truncated (copytruncate); reading from its start");
                self.partial.clear();
                self.skipping_long_line = false;
                self.pos = 0;
                if let Some(f) = self.file.as_mut() {
                    f.seek(SeekFrom::Start(0)).map_err(&io)?;
                }
                read += self.read_to_end(line).map_err(&io)?;
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                debug!(path = %self.path.display(), "log file gone; waiting for it to come back");
            }
            Err(err) => return Err(io(err)),
        }
        Ok(read)
    }

    /// Hand out a last line without newline (end of a rotated file).
    pub fn flush_partial(&mut self, line: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() && !self.skipping_long_line {
            line(&self.partial);
        }
        self.partial.clear();
        self.skipping_long_line = false;
    }

    /// Opens the file (false: it does not exist yet, and is read from its start once it
    /// appears).
    fn open(&mut self) -> Result<bool, Error> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.start_at_end = false;
                return Ok(false);
            }
            Err(source) => {
                return Err(Error::Log {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let meta = file.metadata().map_err(|source| Error::Log {
            path: self.path.clone(),
            source,
        })?;
        self.ino = meta.ino();
        self.pos = if self.start_at_end { meta.len() } else { 0 };
        self.start_at_end = false;
        let mut file = file;
        file.seek(SeekFrom::Start(self.pos))
            .map_err(|source| Error::Log {
                path: self.path.clone(),
                source,
            })?;
        self.file = Some(file);
        Ok(true)
    }

    fn read_to_end(&mut self, line: &mut impl FnMut(&[u8])) -> std::io::Result<u64> {
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let mut total = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            self.pos += n as u64;
            let mut rest = &chunk[..n];
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                if self.skipping_long_line {
                    self.skipping_long_line = false;
                } else if self.partial.is_empty() {
                    line(&rest[..nl]);
                } else {
                    self.partial.extend_from_slice(&rest[..nl]);
                    line(&self.partial);
                }
                self.partial.clear();
                rest = &rest[nl + 1..];
            }
            if !self.skipping_long_line {
                self.partial.extend_from_slice(rest);
                if self.partial.len() > MAX_LINE {
                    warn!(path = %self.path.display(), "line longer than the limit; skipped");
                    self.partial.clear();
                    self.skipping_long_line = true;
                }
            }
        }
        Ok(total)
    }
}

/// What a log run did (printed by the one-shot mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogSummary {
    /// Lines read.
    pub lines: u64,
    /// Lines that could not be parsed.
    pub line_errors: u64,
    /// Requests inspected.
    pub requests: u64,
    /// Reports submitted.
    pub reports: u64,
}

/// The followers of `files`, each file that exists opened now: a follower that starts at the
/// end takes the end as of this call, so every line written after it returns is read. The
/// sensor reports ready after this (`GET /readyz`, systemd), not before the files are open.
/// With `exit_at_eof` (a one-shot replay, read from the start) every file must exist and open.
/// Following, a file that cannot be opened yet is retried at each poll (see [`run`]).
pub fn open(
    files: &[PathBuf],
    from_start: bool,
    exit_at_eof: bool,
) -> Result<Vec<Follower>, Error> {
    let mut followers: Vec<Follower> = files
        .iter()
        .map(|p| Follower::new(p.clone(), from_start || exit_at_eof))
        .collect();
    for f in &mut followers {
        match f.open() {
            Ok(false) if exit_at_eof => {
                return Err(Error::Log {
                    path: f.path().to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            // open, or (missing) read from its start once it appears
            Ok(_) => {}
            Err(err) if exit_at_eof => return Err(err),
            Err(err) => {
                warn!(cause = %err, "log file cannot be opened yet; retrying every poll");
            }
        }
    }
    Ok(followers)
}

/// Run each request of `followers`' files (see [`open`]) in `format` through `pipeline`,
/// until `stop` is set, or (with `exit_at_eof`) once every file has been read to its end.
pub fn run(
    mut followers: Vec<Follower>,
    format: LogFormat,
    exit_at_eof: bool,
    poll: Duration,
    pipeline: &Pipeline,
    metrics: &Arc<Metrics>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<LogSummary, Error> {
    let mut summary = LogSummary::default();
    let origin = crate::context::downward_api();
    // Files whose last read failed: warned about once until a read succeeds again.
    let mut failing = vec![false; followers.len()];
    loop {
        let mut read = 0;
        for (f, failing) in followers.iter_mut().zip(failing.iter_mut()) {
            let mut handle =
                |raw: &[u8]| handle_line(raw, format, pipeline, metrics, &origin, &mut summary);
            match f.poll(&mut handle) {
                Ok(n) => {
                    if *failing {
                        info!(path = %f.path().display(), "log file readable again");
                    }
                    *failing = false;
                    read += n;
                }
                // A one-shot replay reads what it was given or fails.
                Err(err) if exit_at_eof => return Err(err),
                // Following: one unreadable file (permissions after a rotation, a flaky
                // volume) must not stop the others; it is retried at the next poll.
                Err(err) => {
                    metrics.log_read_errors.fetch_add(1, Ordering::Relaxed);
                    if !*failing {
                        warn!(cause = %err, "log file read failed; retrying every poll, the other files go on");
                    }
                    *failing = true;
                }
            }
            if exit_at_eof {
                f.flush_partial(&mut handle);
            }
        }
        if exit_at_eof || stop.load(Ordering::Relaxed) {
            break;
        }
        if read == 0 {
            std::thread::sleep(poll);
        }
    }
    Ok(summary)
}

fn handle_line(
    raw: &[u8],
    format: LogFormat,
    pipeline: &Pipeline,
    metrics: &Metrics,
    origin: &Origin,
    summary: &mut LogSummary,
) {
    summary.lines += 1;
    metrics.log_lines.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(raw);
    match parse_line(format, &text) {
        Ok(entry) => {
            summary.requests += 1;
            let reports = pipeline.handle(
                entry.peer,
                &entry.request,
                RequestMeta::WHOLE,
                origin,
                entry.time.unwrap_or_else(Utc::now),
            );
            summary.reports += reports.len() as u64;
        }
        Err(reason) => {
            if !text.trim().is_empty() {
                summary.line_errors += 1;
                metrics.log_line_errors.fetch_add(1, Ordering::Relaxed);
                debug!(reason, "log line skipped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(&mut |l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned()))
            .unwrap();
        out
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_new_lines_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "old\n");
        let mut f = Follower::new(&path, false);
        assert!(collect(&mut f).is_empty(), "starts at the end");
        append(&path, "one\ntw");
        assert_eq!(collect(&mut f), vec!["one"]);
        append(&path, "o\nthree\n");
        assert_eq!(collect(&mut f), vec!["two", "three"]);
    }

    #[test]
    fn opened_followers_read_every_line_written_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let (present, later) = (dir.path().join("a.log"), dir.path().join("b.log"));
        append(&present, "before\n");
        let mut followers = open(&[present.clone(), later.clone()], false, false).unwrap();
        // written after `open` returned (the sensor says ready there), before the first poll
        append(&present, "after\n");
        append(&later, "first\n");
        let [a, b] = &mut followers[..] else {
            panic!("two followers")
        };
        assert_eq!(collect(a), vec!["after"], "the end is taken at open");
        assert_eq!(
            collect(b),
            vec!["first"],
            "a file made later is read from its start"
        );
    }

    #[test]
    fn a_replay_of_a_missing_file_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.log");
        let err = open(std::slice::from_ref(&missing), false, true).unwrap_err();
        assert!(err.to_string().contains("missing.log"), "{err}");
        // following, it is waited for
        assert_eq!(open(&[missing], false, false).unwrap().len(), 1);
    }

    #[test]
    fn follows_rename_and_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "a\n");
        let mut f = Follower::new(&path, true);
        assert_eq!(collect(&mut f), vec!["a"]);
        append(&path, "b\n");
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        // written to the old file after the rename, before the writer reopened
        append(&dir.path().join("access.log.1"), "c\n");
        assert_eq!(collect(&mut f), vec!["b", "c"], "old file read to its end");
        append(&path, "d\n");
        assert_eq!(collect(&mut f), vec!["d"], "new file from its start");
        append(&path, "e\n");
        assert_eq!(collect(&mut f), vec!["e"]);
    }

    #[test]
    fn follows_copytruncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "first line\nsecond line\n");
        let mut f = Follower::new(&path, true);
        assert_eq!(collect(&mut f).len(), 2);
        std::fs::copy(&path, dir.path().join("access.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        append(&path, "x\n");
        assert_eq!(collect(&mut f), vec!["x"]);
    }

    #[test]
    fn an_unreadable_file_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where a log file should be: opening works, every read fails (EISDIR).
        let broken = dir.path().join("broken.log");
        std::fs::create_dir(&broken).unwrap();
        let good = dir.path().join("access.log");
        let line = r#"198.51.100.7 - - [30/Nov/2026:01:00:00 +0000] "GET /?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1" 200 5 "-" "Mozilla/5.0""#;
        append(&good, &format!("{line}\n"));
        let metrics = Arc::new(Metrics::default());
        let pipeline = Pipeline::new(
            crate::detect::Detector::builtin().unwrap(),
            crate::clientip::Attribution::default(),
            "t".into(),
            Duration::from_secs(60),
            metrics.clone(),
            None,
        );
        let stop = std::sync::atomic::AtomicBool::new(false);
        let files = [broken.clone(), good.clone()];
        std::thread::scope(|s| {
            let runner = s.spawn(|| {
                run(
                    open(&files, true, false).expect("following opens what it can"),
                    LogFormat::Nginx,
                    false,
                    Duration::from_millis(5),
                    &pipeline,
                    &metrics,
                    &stop,
                )
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while metrics.requests_parsed.load(Ordering::Relaxed) == 0
                || metrics.log_read_errors.load(Ordering::Relaxed) < 2
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the good file was not read"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
            let summary = runner
                .join()
                .unwrap()
                .expect("following survives a broken file");
            assert_eq!(summary.lines, 1);
        });
        assert!(metrics.detections_total() >= 1);
        // A one-shot replay of a broken file is an error, not a silent success.
        let err = run(
            open(&[broken], true, true).expect("a directory opens; reading it fails"),
            LogFormat::Nginx,
            true,
            Duration::from_millis(5),
            &pipeline,
            &metrics,
            &std::sync::atomic::AtomicBool::new(false),
        );
        assert!(err.is_err());
    }

    #[test]
    fn log_mode_reports_carry_the_downward_api_context() {
        // the environment a sidecar manifest sets (config/kubernetes/fargate/app.yaml)
        let origin = crate::context::downward::from_lookup(|name| {
            Some(
                match name {
                    "POD_NAME" => "web-7d9f8-x2k4q",
                    "POD_NAMESPACE" => "shop",
                    "NODE_NAME" => "fargate-ip-10-0-1-5.ec2.internal",
                    "POD_UID" => "0f5e7c3a-1b2c-4d5e-8f90-123456789abc",
                    "CONTAINER_NAME" => "nginx",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        let line = r#"81.2.69.160 - - [30/Nov/2026:01:00:00 +0000] "GET /?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1" 200 5 "-" "Mozilla/5.0""#;
        let entry = parse_line(LogFormat::Nginx, line).expect("parses");
        let pipeline = Pipeline::new(
            crate::detect::Detector::builtin().expect("rules"),
            crate::clientip::Attribution::default(),
            "t".into(),
            Duration::from_secs(60),
            Arc::new(Metrics::default()),
            None,
        );
        let reports = pipeline.handle(
            entry.peer,
            &entry.request,
            RequestMeta::WHOLE,
            &origin,
            Utc::now(),
        );
        assert!(!reports.is_empty());
        for r in &reports {
            let ctx = r.context.as_ref().expect("context");
            assert_eq!(ctx.pod.as_deref(), Some("web-7d9f8-x2k4q"));
            assert_eq!(ctx.namespace.as_deref(), Some("shop"));
            assert_eq!(
                ctx.node.as_deref(),
                Some("fargate-ip-10-0-1-5.ec2.internal")
            );
            assert_eq!(
                ctx.pod_uid.as_deref(),
                Some("0f5e7c3a-1b2c-4d5e-8f90-123456789abc")
            );
            assert_eq!(ctx.container.as_deref(), Some("nginx"));
            r.validate().expect("on the wire");
        }
    }

    #[test]
    fn missing_file_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut f = Follower::new(&path, false);
        assert!(collect(&mut f).is_empty());
        append(&path, "created\n");
        // A file created after the start is read from its start.
        assert_eq!(collect(&mut f), vec!["created"]);
        append(&path, "more\n");
        assert_eq!(collect(&mut f), vec!["more"]);
    }
}
