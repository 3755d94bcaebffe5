//! Folders that survive a power cut. A new folder's name lives in its parent, which is
//! durable only once the parent is fsynced: until then a power cut takes the folder and
//! everything in it, however carefully each file inside was fsynced. Both binaries make
//! their data folders here.

use std::path::Path;

/// Makes renames, creations and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// `create_dir_all` whose new folders are durable: each is made, then its parent fsynced.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let up = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(up) = up {
        create_dir_all(up)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(up.unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn makes_every_missing_level_and_accepts_what_is_there() {
        let tmp = tempfile::tempdir().expect("tmp");
        let deep = tmp.path().join("a/b/c");
        super::create_dir_all(&deep).expect("made");
        assert!(deep.is_dir());
        super::create_dir_all(&deep).expect("again");
        std::fs::write(tmp.path().join("f"), "x").expect("file");
        assert!(
            super::create_dir_all(&tmp.path().join("f")).is_err(),
            "a file is not a folder"
        );
    }
}
