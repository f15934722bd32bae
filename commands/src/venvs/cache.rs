//! Each organization's package cache: `<cache root>/<organization id>`, holding pip's and uv's
//! caches (`pip/`, `uv/`) and downloaded distributions (`wheels/`, which installs look in
//! first). Its figures, clearing it, and moving it between servers as a tar.gz archive.
//!
//! An import is checked whole before anything lands in the cache: a file that is not a gzip'd
//! tar, an entry that is not a plain file or directory (links, devices), a path that is absolute
//! or climbs out (`..`), or sizes past the limits refuse it, and the cache stays as it was. The
//! archive is unpacked into a staging directory beside the caches, then moved in.
//!
//! Everything here is blocking file IO: call it from a blocking thread.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

/// What an import may hold at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The largest file, in bytes.
    pub max_entry_bytes: u64,
    /// All files together, in bytes.
    pub max_total_bytes: u64,
    /// Entries.
    pub max_entries: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_entry_bytes: 2 << 30,
            max_total_bytes: 20 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// An organization's cache, as figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheInfo {
    /// Where it is.
    pub location: String,
    /// Its size, in bytes.
    pub size_bytes: u64,
    /// Files in it.
    pub file_count: u64,
    /// Distributions kept (`.whl`, `.tar.gz`, `.zip` under `wheels/`).
    pub package_count: u64,
    /// The distributions' names.
    pub packages: Vec<String>,
    /// Bytes per part (`pip`, `uv`, `wheels`, `other`).
    pub parts: std::collections::BTreeMap<String, u64>,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a gzip'd tar archive.
    #[error("not a tar.gz archive: {0}")]
    NotAnArchive(String),
    /// An entry the cache does not take.
    #[error("{0}")]
    Refused(String),
    /// The disk failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The caches of every organization, under one root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The caches under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// An organization's cache directory.
    pub fn dir(&self, org_id: Uuid) -> PathBuf {
        self.root.join(org_id.to_string())
    }

    /// An organization's cache, as figures (an empty one if it has none yet).
    pub fn info(&self, org_id: Uuid) -> std::io::Result<CacheInfo> {
        let dir = self.dir(org_id);
        let mut info = CacheInfo {
            location: dir.display().to_string(),
            size_bytes: 0,
            file_count: 0,
            package_count: 0,
            packages: Vec::new(),
            parts: Default::default(),
        };
        if !dir.exists() {
            return Ok(info);
        }
        for file in walk(&dir)? {
            let rel = file.strip_prefix(&dir).unwrap_or(&file).to_path_buf();
            let len = std::fs::symlink_metadata(&file)?.len();
            info.size_bytes += len;
            info.file_count += 1;
            let part = match rel.components().next() {
                Some(Component::Normal(p))
                    if ["pip", "uv", "wheels"].contains(&&*p.to_string_lossy()) =>
                {
                    p.to_string_lossy().into_owned()
                }
                _ => "other".to_owned(),
            };
            if part == "wheels" {
                let name = rel
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.ends_with(".whl") || name.ends_with(".tar.gz") || name.ends_with(".zip") {
                    info.package_count += 1;
                    info.packages.push(name);
                }
            }
            *info.parts.entry(part).or_default() += len;
        }
        info.packages.sort();
        Ok(info)
    }

    /// Empties an organization's cache; the bytes freed.
    pub fn clear(&self, org_id: Uuid) -> std::io::Result<u64> {
        let dir = self.dir(org_id);
        if !dir.exists() {
            return Ok(0);
        }
        let freed = self.info(org_id)?.size_bytes;
        std::fs::remove_dir_all(&dir)?;
        Ok(freed)
    }

    /// Writes an organization's cache as a tar.gz archive (paths relative to the cache; plain
    /// files and directories only).
    pub fn export(&self, org_id: Uuid, out: impl Write) -> std::io::Result<()> {
        let dir = self.dir(org_id);
        let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        if dir.exists() {
            for file in walk(&dir)? {
                let rel = file.strip_prefix(&dir).unwrap_or(&file);
                tar.append_path_with_name(&file, rel)?;
            }
        }
        tar.into_inner()?.finish()?.flush()
    }

    /// Imports a tar.gz archive (as [`Cache::export`] writes) into an organization's cache:
    /// checked whole, then moved in; a refused archive leaves the cache as it was. The files
    /// and bytes imported.
    pub fn import(
        &self,
        org_id: Uuid,
        archive: &Path,
        limits: ImportLimits,
    ) -> Result<(u64, u64), ImportError> {
        std::fs::create_dir_all(&self.root)?;
        let staging = self.root.join(format!(".import-{}", Uuid::now_v7()));
        std::fs::create_dir(&staging)?;
        let unpacked = unpack(archive, &staging, limits);
        let outcome = unpacked.and_then(|counts| {
            merge(&staging, &self.dir(org_id))?;
            Ok(counts)
        });
        let _ = std::fs::remove_dir_all(&staging);
        outcome
    }
}

/// Every plain file under `dir` (links are neither followed nor listed).
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A path of an archive's entry made safe: relative, only plain components.
fn safe_path(raw: &Path) -> Result<PathBuf, ImportError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ImportError::Refused(format!(
                    "the entry {} leaves the cache: only relative paths inside it are taken",
                    raw.display()
                )));
            }
        }
    }
    Ok(out)
}

fn unpack(archive: &Path, staging: &Path, limits: ImportLimits) -> Result<(u64, u64), ImportError> {
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar
        .entries()
        .map_err(|e| ImportError::NotAnArchive(e.to_string()))?;
    let (mut files, mut bytes, mut count) = (0u64, 0u64, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| ImportError::NotAnArchive(e.to_string()))?;
        count += 1;
        if count > limits.max_entries {
            return Err(ImportError::Refused(format!(
                "the archive holds more than {} entries",
                limits.max_entries
            )));
        }
        let raw = entry
            .path()
            .map_err(|e| ImportError::NotAnArchive(e.to_string()))?
            .into_owned();
        let path = safe_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if !path.as_os_str().is_empty() {
                std::fs::create_dir_all(staging.join(&path))?;
            }
            continue;
        }
        if !kind.is_file() {
            return Err(ImportError::Refused(format!(
                "the entry {} is not a plain file or directory (links and devices are refused)",
                raw.display()
            )));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| ImportError::NotAnArchive(e.to_string()))?;
        if size > limits.max_entry_bytes {
            return Err(ImportError::Refused(format!(
                "the entry {} is {size} bytes, more than {}",
                raw.display(),
                limits.max_entry_bytes
            )));
        }
        bytes += size;
        if bytes > limits.max_total_bytes {
            return Err(ImportError::Refused(format!(
                "the archive unpacks to more than {} bytes",
                limits.max_total_bytes
            )));
        }
        if path.as_os_str().is_empty() {
            return Err(ImportError::Refused("an entry without a name".to_owned()));
        }
        let target = staging.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&target)?;
        // Never more than the header said, whatever the stream holds.
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)?;
        if copied != size {
            return Err(ImportError::NotAnArchive(format!(
                "the entry {} is cut short",
                raw.display()
            )));
        }
        files += 1;
    }
    Ok((files, bytes))
}

/// Moves every file of `staging` into `dir` (replacing what has the same path).
fn merge(staging: &Path, dir: &Path) -> std::io::Result<()> {
    for file in walk(staging)? {
        let rel = file.strip_prefix(staging).unwrap_or(&file);
        let target = dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&file, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> Uuid {
        Uuid::from_u128(7)
    }

    fn archive_of(
        build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>),
        at: &Path,
    ) {
        let file = std::fs::File::create(at).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        build(&mut tar);
        tar.into_inner().unwrap().finish().unwrap();
    }

    fn file_entry(
        tar: &mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>,
        path: &str,
        body: &[u8],
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`: write the name as raw bytes, as a hostile archive would.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, body).unwrap();
    }

    #[test]
    fn a_cache_goes_out_and_back_in_with_its_files_and_figures() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path().join("caches"));
        let dir = cache.dir(org());
        std::fs::create_dir_all(dir.join("wheels")).unwrap();
        std::fs::create_dir_all(dir.join("pip/http")).unwrap();
        std::fs::write(dir.join("wheels/six-1.16.0-py2.py3-none-any.whl"), b"wheel").unwrap();
        std::fs::write(dir.join("pip/http/entry"), b"cached").unwrap();
        let info = cache.info(org()).unwrap();
        assert_eq!(
            (info.file_count, info.package_count, info.size_bytes),
            (2, 1, 11)
        );
        assert_eq!(info.packages, ["six-1.16.0-py2.py3-none-any.whl"]);
        let exported = root.path().join("cache.tar.gz");
        cache
            .export(org(), std::fs::File::create(&exported).unwrap())
            .unwrap();
        assert_eq!(cache.clear(org()).unwrap(), 11);
        assert_eq!(cache.info(org()).unwrap().file_count, 0);
        assert_eq!(
            cache
                .import(org(), &exported, ImportLimits::default())
                .unwrap(),
            (2, 11)
        );
        assert_eq!(cache.info(org()).unwrap(), info);
        // Another organization's cache is its own.
        assert_eq!(cache.info(Uuid::from_u128(8)).unwrap().file_count, 0);
    }

    #[test]
    fn hostile_or_broken_archives_are_refused_and_leave_the_cache_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::new(root.path().join("caches"));
        std::fs::create_dir_all(cache.dir(org()).join("wheels")).unwrap();
        std::fs::write(cache.dir(org()).join("wheels/keep.whl"), b"keep").unwrap();
        let before = cache.info(org()).unwrap();
        let at = root.path().join("bad.tar.gz");
        type Write = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Write)> = vec![
            (
                "climbs out",
                Box::new(|p| {
                    archive_of(
                        |t| {
                            file_entry(t, "wheels/ok.whl", b"ok");
                            file_entry(t, "../../escaped", b"x");
                        },
                        p,
                    )
                }),
            ),
            (
                "absolute",
                Box::new(|p| archive_of(|t| file_entry(t, "/etc/escaped", b"x"), p)),
            ),
            (
                "a link",
                Box::new(|p| {
                    archive_of(
                        |t| {
                            let mut header = tar::Header::new_gnu();
                            header.set_entry_type(tar::EntryType::Symlink);
                            header.set_size(0);
                            t.append_link(&mut header, "wheels/link", "/etc/passwd")
                                .unwrap();
                        },
                        p,
                    )
                }),
            ),
            (
                "not an archive",
                Box::new(|p| std::fs::write(p, b"just some text").unwrap()),
            ),
            (
                "gzip of text",
                Box::new(|p| {
                    let mut gz = flate2::write::GzEncoder::new(
                        std::fs::File::create(p).unwrap(),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(&[b'x'; 2000]).unwrap();
                    gz.finish().unwrap();
                }),
            ),
        ];
        for (what, write) in cases {
            write(&at);
            let refused = cache.import(org(), &at, ImportLimits::default());
            assert!(refused.is_err(), "{what}: {refused:?}");
            assert_eq!(cache.info(org()).unwrap(), before, "{what}");
            assert!(!root.path().join("escaped").exists() && !Path::new("/etc/escaped").exists());
        }
        // Absurd sizes: past the limits, nothing lands.
        archive_of(|t| file_entry(t, "wheels/big.whl", &[0u8; 4096]), &at);
        let tight = ImportLimits {
            max_entry_bytes: 1024,
            ..ImportLimits::default()
        };
        assert!(matches!(
            cache.import(org(), &at, tight),
            Err(ImportError::Refused(_))
        ));
        let tight = ImportLimits {
            max_entries: 0,
            ..ImportLimits::default()
        };
        assert!(matches!(
            cache.import(org(), &at, tight),
            Err(ImportError::Refused(_))
        ));
        assert_eq!(cache.info(org()).unwrap(), before);
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(root.path().join("caches"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".import-"))
            .collect();
        assert!(left.is_empty());
    }
}
