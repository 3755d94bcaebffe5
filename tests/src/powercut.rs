//! A filesystem that loses power, in LazyFS's model (the Jepsen/INESC TEC filesystem used
//! to find data loss in etcd, PostgreSQL and ZooKeeper), for the power-cut tests.
//!
//! A SIGKILL never tests a missing fsync: the kernel still writes out what the process
//! handed it. Here, on FUSE (the `fuser` crate, `/dev/fuse`), the filesystem keeps two
//! states of everything:
//!
//! - what processes see: every write, truncate, create, rename, link and unlink at once;
//! - what a power cut leaves: a file's bytes as of its last `fsync`/`fdatasync`, and a
//!   folder's entries as of its last `fsync` (so a file created, or renamed into place,
//!   without an fsync of its folder may vanish, as POSIX allows and ext4 sometimes does).
//!
//! [`PowerCutFs::cut`] throws the first away, keeps the second, and fails every operation
//! with `EIO` until [`PowerCutFs::remount`], as a machine that lost power would until it
//! rebooted. Nothing is written to a backing folder: the durable state lives in this
//! process, so it survives a remount, not the test. SQLite's `-shm` file needs no
//! durability and, like any file, gets none without an fsync.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const ROOT: u64 = fuser::FUSE_ROOT_ID;
/// No attribute or entry cache in the kernel: every lookup comes here, so what a process
/// sees after a rename or a cut is this filesystem's word.
const TTL: Duration = Duration::ZERO;
const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOTEMPTY: i32 = 39;
/// `renameat2`'s flags.
const RENAME_NOREPLACE: u32 = 1;

#[derive(Debug, Clone)]
enum Content {
    File {
        live: Vec<u8>,
        durable: Vec<u8>,
        dirty: bool,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug, Clone)]
struct Node {
    content: Content,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

/// What one cut threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// Bytes of files that differed from their last fsync.
    pub files_reverted: usize,
    /// Folders whose entries differed from their last fsync.
    pub dirs_reverted: usize,
    /// Files and folders no longer reachable afterwards.
    pub nodes_lost: usize,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Set by a cut, cleared by a remount: every operation fails meanwhile.
    down: bool,
    fsyncs: u64,
}

impl State {
    fn new() -> Self {
        let now = SystemTime::now();
        let root = Node {
            content: Content::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: now,
            ctime: now,
        };
        Self {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            down: false,
            fsyncs: 0,
        }
    }

    fn nlink(&self, ino: u64) -> u32 {
        let links = self
            .nodes
            .values()
            .filter_map(|n| match &n.content {
                Content::Dir { live, .. } => Some(live.values().filter(|&&i| i == ino).count()),
                Content::File { .. } => None,
            })
            .sum::<usize>();
        u32::try_from(links.max(1)).unwrap_or(u32::MAX)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size) = match &node.content {
            Content::File { live, .. } => (FileType::RegularFile, live.len() as u64),
            Content::Dir { live, .. } => (FileType::Directory, live.len() as u64),
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind,
            perm: node.perm,
            nlink: if kind == FileType::Directory {
                2
            } else {
                self.nlink(ino)
            },
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::Dir { live, .. }) => Ok(live),
            Some(Content::File { .. }) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, i32> {
        self.dir(parent)?.get(name).copied().ok_or(ENOENT)
    }

    fn add(
        &mut self,
        parent: u64,
        name: &OsStr,
        content: Content,
        perm: u16,
        req: &Request<'_>,
    ) -> Result<u64, i32> {
        if self.dir(parent)?.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let now = SystemTime::now();
        self.nodes.insert(
            ino,
            Node {
                content,
                perm,
                uid: req.uid(),
                gid: req.gid(),
                mtime: now,
                ctime: now,
            },
        );
        self.dir(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// A new file or folder in `parent`, for `mkdir` and `create`.
    fn make(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        content: Content,
        mode: u32,
    ) -> Result<FileAttr, i32> {
        up(self)?;
        let perm = u16::try_from(mode & 0o7777).unwrap_or(0o600);
        let ino = self.add(parent, name, content, perm, req)?;
        self.touch(parent);
        self.attr(ino).ok_or(ENOENT)
    }

    /// An fsync of a file or a folder: what processes see of it becomes what a cut leaves.
    fn sync(&mut self, ino: u64) -> Result<(), i32> {
        up(self)?;
        self.fsyncs += 1;
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::File {
                live,
                durable,
                dirty,
            }) => {
                if *dirty {
                    durable.clone_from(live);
                    *dirty = false;
                }
                Ok(())
            }
            Some(Content::Dir { live, durable }) => {
                durable.clone_from(live);
                Ok(())
            }
            None => Err(ENOENT),
        }
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
    }

    /// Keeps what was fsynced and drops everything else.
    fn cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for node in self.nodes.values_mut() {
            match &mut node.content {
                Content::File {
                    live,
                    durable,
                    dirty,
                } => {
                    if *dirty || live != durable {
                        report.files_reverted += 1;
                    }
                    live.clone_from(durable);
                    *dirty = false;
                }
                Content::Dir { live, durable } => {
                    if live != durable {
                        report.dirs_reverted += 1;
                    }
                    live.clone_from(durable);
                }
            }
        }
        let mut reachable = std::collections::HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Content::Dir { live, .. }) = self.nodes.get(&ino).map(|n| &n.content) {
                for &child in live.values() {
                    if reachable.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reachable.contains(ino));
        report.nodes_lost = before - self.nodes.len();
        self.down = true;
        report
    }
}

/// The FUSE side: every request locks the one state.
struct Fs(Arc<Mutex<State>>);

impl Fs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `Err(EIO)` while the power is off.
fn up(state: &State) -> Result<(), i32> {
    if state.down { Err(EIO) } else { Ok(()) }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request<'_>, _config: &mut KernelConfig) -> Result<(), i32> {
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        let found = up(&s)
            .and_then(|()| s.child(parent, name))
            .and_then(|ino| s.attr(ino).ok_or(ENOENT));
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let s = self.state();
        match up(&s).and_then(|()| s.attr(ino).ok_or(ENOENT)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let done = up(&s).and_then(|()| {
            let node = s.nodes.get_mut(&ino).ok_or(ENOENT)?;
            if let Some(mode) = mode {
                node.perm = u16::try_from(mode & 0o7777).unwrap_or(0o644);
            }
            node.uid = uid.unwrap_or(node.uid);
            node.gid = gid.unwrap_or(node.gid);
            if let Some(size) = size {
                let Content::File { live, dirty, .. } = &mut node.content else {
                    return Err(EISDIR);
                };
                live.resize(usize::try_from(size).map_err(|_| EINVAL)?, 0);
                *dirty = true;
            }
            node.ctime = SystemTime::now();
            node.mtime = match mtime {
                Some(TimeOrNow::SpecificTime(t)) => t,
                Some(TimeOrNow::Now) => SystemTime::now(),
                None => node.mtime,
            };
            s.attr(ino).ok_or(ENOENT)
        });
        match done {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let dir = Content::Dir {
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        match self.state().make(req, parent, name, dir, mode & !umask) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let file = Content::File {
            live: Vec::new(),
            durable: Vec::new(),
            dirty: false,
        };
        match self.state().make(req, parent, name, file, mode & !umask) {
            Ok(attr) => reply.created(&TTL, &attr, 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.state();
        let done = up(&s).and_then(|()| {
            let ino = s.child(parent, name)?;
            if matches!(
                s.nodes.get(&ino).map(|n| &n.content),
                Some(Content::Dir { .. })
            ) {
                return Err(EISDIR);
            }
            s.dir(parent)?.remove(name);
            s.touch(parent);
            Ok(())
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.state();
        let done = up(&s).and_then(|()| {
            let ino = s.child(parent, name)?;
            if !s.dir(ino)?.is_empty() {
                return Err(ENOTEMPTY);
            }
            s.dir(parent)?.remove(name);
            s.touch(parent);
            Ok(())
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let done = up(&s).and_then(|()| {
            if flags & !RENAME_NOREPLACE != 0 {
                return Err(EINVAL);
            }
            let ino = s.child(parent, name)?;
            if let Ok(old) = s.child(newparent, newname) {
                if flags & RENAME_NOREPLACE != 0 {
                    return Err(EEXIST);
                }
                if s.dir(old).is_ok_and(|entries| !entries.is_empty()) {
                    return Err(ENOTEMPTY);
                }
            }
            s.dir(parent)?.remove(name);
            s.dir(newparent)?.insert(newname.to_owned(), ino);
            s.touch(parent);
            s.touch(newparent);
            Ok(())
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let done = up(&s).and_then(|()| {
            if s.dir(newparent)?.contains_key(newname) {
                return Err(EEXIST);
            }
            s.dir(newparent)?.insert(newname.to_owned(), ino);
            s.touch(ino);
            s.attr(ino).ok_or(ENOENT)
        });
        match done {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let s = self.state();
        match up(&s).and_then(|()| s.attr(ino).ok_or(ENOENT)) {
            Ok(_) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let s = self.state();
        let read = up(&s).and_then(|()| match s.nodes.get(&ino).map(|n| &n.content) {
            Some(Content::File { live, .. }) => {
                let start = usize::try_from(offset).map_err(|_| EINVAL)?.min(live.len());
                let end = start.saturating_add(size as usize).min(live.len());
                Ok(live[start..end].to_vec())
            }
            Some(Content::Dir { .. }) => Err(EISDIR),
            None => Err(ENOENT),
        });
        match read {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = self.state();
        let written = up(&s).and_then(|()| {
            let node = s.nodes.get_mut(&ino).ok_or(ENOENT)?;
            let Content::File { live, dirty, .. } = &mut node.content else {
                return Err(EISDIR);
            };
            let start = usize::try_from(offset).map_err(|_| EINVAL)?;
            let end = start + data.len();
            if live.len() < end {
                live.resize(end, 0);
            }
            live[start..end].copy_from_slice(data);
            *dirty = true;
            node.mtime = SystemTime::now();
            Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
        });
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync: nothing becomes durable here.
        let s = self.state();
        match up(&s) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let done = self.state().sync(ino);
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut s = self.state();
        match up(&s).and_then(|()| s.dir(ino).map(|_| ())) {
            Ok(()) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.state();
        let entries: Result<Vec<(u64, OsString)>, i32> =
            up(&s).and_then(|()| Ok(s.dir(ino)?.iter().map(|(n, &i)| (i, n.clone())).collect()));
        let entries = match entries {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let dots = [(ino, OsString::from(".")), (ino, OsString::from(".."))];
        let all = dots.into_iter().chain(entries);
        for (i, (child, name)) in all.enumerate().skip(usize::try_from(offset).unwrap_or(0)) {
            let kind = match s.nodes.get(&child).map(|n| &n.content) {
                Some(Content::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, i64::try_from(i + 1).unwrap_or(i64::MAX), kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let done = match s.nodes.get(&ino).map(|n| &n.content) {
            Some(Content::File { .. }) if !s.down => Err(ENOTDIR),
            _ => s.sync(ino),
        };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // A roomy disk: 64 GiB of 4 KiB blocks, half free.
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }
}

/// A mounted power-cut filesystem on a fresh folder.
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
    mountpoint: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl PowerCutFs {
    /// Mounts it; fails with what to install when FUSE is not there.
    pub fn mount() -> Self {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the power-cut tests need FUSE (apt-get install -y fuse3)"
        );
        let mut fs = Self {
            state: Arc::new(Mutex::new(State::new())),
            mountpoint: tempfile::tempdir().expect("a mount point"),
            session: None,
        };
        fs.attach();
        fs
    }

    fn attach(&mut self) {
        let options = [
            MountOption::FSName("ferry-powercut".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(Fs(self.state.clone()), self.mountpoint.path(), &options)
            .unwrap_or_else(|e| panic!("mounting the power-cut filesystem (FUSE): {e}"));
        self.session = Some(session);
    }

    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// The power goes: what was not fsynced is gone, and every operation fails until
    /// [`PowerCutFs::remount`].
    pub fn cut(&self) -> CutReport {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cut()
    }

    /// The machine comes back: unmounted (the processes that had files open must be gone)
    /// and mounted again on what survived.
    pub fn remount(&mut self) {
        drop(self.session.take());
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .down = false;
        self.attach();
    }

    /// fsyncs of files and folders so far: a test that cuts must see some.
    pub fn fsyncs(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fsyncs
    }

    pub fn join(&self, rest: impl AsRef<Path>) -> PathBuf {
        self.path().join(rest)
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        drop(self.session.take());
    }
}

/// The self-test: the filesystem must lose what a power cut loses, or the power-cut tests
/// prove nothing.
#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &Path, synchronous: &str) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(
            mode, "wal",
            "SQLite in WAL mode on the power-cut filesystem"
        );
        conn.pragma_update(None, "synchronous", synchronous)
            .expect("synchronous");
        conn
    }

    fn sync_dir(dir: &Path) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("fsync of the folder");
    }

    /// Commits `n` rows one transaction each; returns how many a reopened database holds
    /// after a cut.
    fn rows_after_cut(synchronous: &str, n: u32) -> (u32, CutReport) {
        let mut fs = PowerCutFs::mount();
        let db = fs.join("t.db");
        {
            let conn = sqlite(&db, synchronous);
            conn.execute_batch("CREATE TABLE t (n INTEGER)")
                .expect("table");
            // The file's name is durable, as any careful program makes it.
            sync_dir(fs.path());
            for i in 0..n {
                conn.execute("INSERT INTO t VALUES (?1)", [i])
                    .expect("insert");
            }
            let report = fs.cut();
            drop(conn);
            fs.remount();
            let conn = rusqlite::Connection::open(&db).expect("reopen");
            let kept = conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap_or(0);
            (kept, report)
        }
    }

    #[test]
    fn sqlite_keeps_every_commit_with_full_and_loses_them_with_off() {
        let (full, report) = rows_after_cut("FULL", 200);
        println!("synchronous=FULL: 200 commits, {full} after the cut ({report:?})");
        assert_eq!(full, 200, "FULL fsyncs every commit");
        let (off, report) = rows_after_cut("OFF", 200);
        println!("synchronous=OFF: 200 commits, {off} after the cut ({report:?})");
        assert!(off < 200, "OFF never fsyncs: the cut must lose commits");
        assert!(report.files_reverted > 0, "{report:?}");
    }

    #[test]
    fn a_rename_without_a_folder_fsync_may_vanish_and_io_fails_until_remount() {
        let mut fs = PowerCutFs::mount();
        let root = fs.path().to_owned();
        let write_synced = |name: &str, text: &str| {
            let mut f = std::fs::File::create(root.join(name)).expect("create");
            std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
            f.sync_all().expect("fsync");
        };
        write_synced("kept", "old");
        sync_dir(fs.path());
        // Replaced by a rename, the folder not fsynced: the old one is what a cut leaves.
        write_synced("kept.tmp", "new");
        std::fs::rename(fs.join("kept.tmp"), fs.join("kept")).expect("rename");
        // Renamed into place and the folder fsynced: it stays.
        write_synced("synced.tmp", "whole");
        std::fs::create_dir(fs.join("sub")).expect("mkdir");
        write_synced("sub/inner", "lost with its folder");
        // A write without an fsync: lost.
        std::fs::write(fs.join("unsynced"), "gone").expect("write");
        let report = fs.cut();
        assert!(
            std::fs::read(fs.join("kept")).is_err(),
            "every operation fails while the power is off"
        );
        fs.remount();
        assert_eq!(
            std::fs::read_to_string(fs.join("kept")).expect("kept"),
            "old"
        );
        assert!(
            !fs.join("synced.tmp").exists(),
            "its entry was never fsynced"
        );
        assert!(!fs.join("sub").exists() && !fs.join("unsynced").exists());
        println!("a cut after renames without a folder fsync: {report:?}");

        write_synced("b.tmp", "whole");
        std::fs::rename(fs.join("b.tmp"), fs.join("b")).expect("rename");
        sync_dir(fs.path());
        fs.cut();
        fs.remount();
        assert_eq!(std::fs::read_to_string(fs.join("b")).expect("b"), "whole");
        assert!(fs.fsyncs() > 0);
    }
}
