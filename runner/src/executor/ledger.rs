//! The process ledger: which process groups a runner's jobs run in, kept on disk until the
//! runner has stopped them, so that a later life of a runner that was killed (SIGKILL, a crash)
//! stops what it left running ([`reap_process_groups`]) before it takes a job.
//!
//! ```text
//! <dir>/life-<pid>-<nanos>   one file per runner life: fixed 32-byte records, one per live
//!                            group: "<pgid> <leader start time>\n" (right-aligned), blanks
//!                            once the group is stopped
//! <dir>/group-<pgid>         the earlier layout, a file per group: still reaped
//! ```
//!
//! # Decisions
//!
//! - **One file per life, records rewritten in place.** A file per group (created, then
//!   removed) cost a directory entry, an inode and their removal per job, about 3 % of a
//!   trivial job's CPU on a runner. Now a group costs one 32-byte `pwrite` when recorded and one
//!   when cleared, at a slot of the file freed by an earlier group: the file never grows past
//!   the most groups alive at once (the runner's concurrency), and nothing is allocated on
//!   disk per job. A record is written whole by one `pwrite` within a page, so a killed runner
//!   leaves records either whole or blank.
//! - **The leader's start time** (from `/proc/PID/stat`) is recorded with the group id: with
//!   it, a restarted runner tells its leader from another process that was given the same pid
//!   since (see [`reap_process_groups`]).
//! - Nothing is synced: what the ledger guards against is the runner process dying, after
//!   which the page cache still holds every write; a machine that reboots has no process left.
//! - The file is opened on the first group, so a runner that never starts one (the docker
//!   executor) writes nothing. A ledger that cannot be written is logged and the job runs:
//!   without a record, a crash of the runner leaves that job's processes running, as it would
//!   with no ledger at all.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, Signal, kill_process_group};

/// Bytes per record: `{pgid:>10} {start:>20}\n`.
const RECORD: usize = 32;

/// Where a runner records its jobs' process groups (see the [module documentation](self)).
/// Cloning shares the ledger.
#[derive(Debug, Clone)]
pub struct ProcessLedger(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: Mutex<Option<LifeFile>>,
}

/// This life's file and which of its record slots are free.
#[derive(Debug)]
struct LifeFile {
    file: File,
    /// Slots blanked by stopped groups, reused first.
    free: Vec<u64>,
    /// Slots in the file.
    len: u64,
}

/// A group's record; blanked when dropped.
#[derive(Debug)]
pub(crate) struct Entry {
    ledger: Arc<Inner>,
    slot: u64,
}

impl ProcessLedger {
    /// A ledger in directory `dir` (created with the first record). Reap what a previous life
    /// left there first ([`reap_process_groups`]): this life's file is new.
    pub fn new(dir: impl Into<PathBuf>) -> ProcessLedger {
        ProcessLedger(Arc::new(Inner { dir: dir.into(), file: Mutex::new(None) }))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// Records the group led by `pgid` (which must have just been started); `None` when the
    /// leader is already gone or the ledger cannot be written (logged).
    pub(crate) fn record(&self, pgid: Pid) -> Option<Entry> {
        let pid = pgid.as_raw_nonzero().get();
        let started = start_time(pid)?;
        let mut guard = self.0.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            match self.open() {
                Ok(file) => *guard = Some(LifeFile { file, free: Vec::new(), len: 0 }),
                Err(e) => {
                    tracing::warn!(ledger = %self.0.dir.display(), error = %e, "cannot record the job's process group");
                    return None;
                }
            }
        }
        let life = guard.as_mut()?;
        let slot = life.free.pop().unwrap_or(life.len);
        let record = format!("{pid:>10} {started:>20}\n");
        debug_assert_eq!(record.len(), RECORD);
        match life.file.write_all_at(record.as_bytes(), slot * RECORD as u64) {
            Ok(()) => {
                life.len = life.len.max(slot + 1);
                Some(Entry { ledger: self.0.clone(), slot })
            }
            Err(e) => {
                life.free.push(slot);
                tracing::warn!(ledger = %self.0.dir.display(), error = %e, "cannot record the job's process group");
                None
            }
        }
    }

    fn open(&self) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.0.dir)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = self.0.dir.join(format!("life-{}-{nanos}", std::process::id()));
        std::fs::OpenOptions::new().write(true).create_new(true).open(path)
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut guard = self.ledger.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(life) = guard.as_mut() else { return };
        let mut blank = [b' '; RECORD];
        blank[RECORD - 1] = b'\n';
        match life.file.write_all_at(&blank, self.slot * RECORD as u64) {
            // A slot that could not be blanked is not reused: its stale record stays harmless
            // (the leader's start time no longer matches once the pid is reused).
            Ok(()) => life.free.push(self.slot),
            Err(e) => tracing::warn!(ledger = %self.ledger.dir.display(), error = %e, "cannot clear a process group's record"),
        }
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, in clock ticks since boot):
/// with the pid, it names one process even after the pid is reused.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process groups a previous life of this runner recorded in `ledger` and never saw
/// end (it was killed with them running), then removes its files; returns how many groups
/// were signalled. A group is signalled when its leader is the recorded process (same start
/// time) or gone (its members keep the group id, which Linux does not hand out again while
/// the group exists); a leader pid now held by another process means the group is gone, and
/// it is left alone.
pub fn reap_process_groups(ledger: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(ledger) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("group-") {
            // The earlier layout: the file's name is the group, its text the start time.
            let recorded = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
            if let (Ok(pid), Some(recorded)) = (pid.parse::<i32>(), recorded) {
                killed += usize::from(reap(pid, recorded));
            }
        } else if name.starts_with("life-") {
            let text = std::fs::read(&path).unwrap_or_default();
            for record in text.chunks(RECORD) {
                let record = String::from_utf8_lossy(record);
                let mut fields = record.split_whitespace();
                if let (Some(Ok(pid)), Some(Ok(recorded))) = (fields.next().map(str::parse), fields.next().map(str::parse)) {
                    killed += usize::from(reap(pid, recorded));
                }
            }
        } else {
            continue;
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(killed)
}

/// Kills group `pid` if its leader is the recorded process or gone; whether it was signalled.
fn reap(pid: i32, recorded: u64) -> bool {
    if pid <= 1 {
        return false;
    }
    let leader = start_time(pid);
    // The recorded leader still runs, or it is gone while its group may live on.
    if leader.is_some() && leader != Some(recorded) {
        return false;
    }
    let Some(pgid) = Pid::from_raw(pid) else { return false };
    if kill_process_group(pgid, Signal::KILL).is_ok() {
        tracing::warn!(pgid = pid, "stopped a job's processes left running by a previous run of this runner");
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        files
    }

    /// A process group of its own running `sleep`, as a job's script would be.
    fn group() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
    }

    fn pid_of(child: &std::process::Child) -> Pid {
        Pid::from_raw(child.id() as i32).unwrap()
    }

    #[test]
    fn records_reuse_freed_slots_and_the_file_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ProcessLedger::new(dir.path().join("ledger"));
        let mut a = group();
        let mut b = group();
        let ea = ledger.record(pid_of(&a)).unwrap();
        let eb = ledger.record(pid_of(&b)).unwrap();
        let files = life_files(ledger.dir());
        assert_eq!(files.len(), 1, "one file per life");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert_eq!(text.len(), 2 * RECORD);
        assert!(text.lines().next().unwrap().trim_start().starts_with(&a.id().to_string()), "{text:?}");
        drop(ea);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text[..RECORD].trim().is_empty(), "a stopped group's record is blanked: {text:?}");
        // Many groups one after another: the file does not grow.
        for _ in 0..50 {
            let mut c = group();
            let e = ledger.record(pid_of(&c)).unwrap();
            drop(e);
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 2 * RECORD as u64);
        drop(eb);
        for child in [&mut a, &mut b] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_later_life_kills_the_recorded_groups_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let ledger = ProcessLedger::new(&path);
        let mut left = group();
        let mut stopped = group();
        // As if the runner were killed: the entry of `left` is never dropped.
        std::mem::forget(ledger.record(pid_of(&left)).unwrap());
        drop(ledger.record(pid_of(&stopped)).unwrap());
        // A record whose pid is now another process (a different start time) is left alone;
        // the earlier layout's files are still read.
        std::fs::write(path.join("group-999999999"), "1").unwrap();
        let mut other = group();
        std::fs::write(path.join(format!("group-{}", other.id())), "1").unwrap();

        assert_eq!(reap_process_groups(&path).unwrap(), 1);
        let status = left.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        assert!(stopped.try_wait().unwrap().is_none(), "a cleared record is not reaped");
        assert!(other.try_wait().unwrap().is_none(), "a reused pid is not killed");
        assert!(life_files(&path).is_empty(), "the files of earlier lives are removed");
        for child in [&mut stopped, &mut other] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(reap_process_groups(&dir.path().join("missing")).unwrap(), 0);
    }
}
