//! Fetching a data set's published files into the data directory, verified by SHA-256.
//!
//! Sources are tried in order, cheapest and most local first, and each file is taken from the
//! first source that has it with the published hash:
//!
//! 1. the files already in the target directory;
//! 2. a local directory the user names (`--from`), searched recursively;
//! 3. the Debian package, installed (`/usr/share/datasets/...`) or downloaded with
//!    `apt-get download` and unpacked with `dpkg-deb -x` (or `ar` + `tar`);
//! 4. the data set's canonical URL, with `curl` (a subprocess, not an HTTP client crate: the
//!    library stays free of a TLS stack it would use once).
//!
//! A file whose hash does not match is reported with both hashes and that source is skipped
//! for it. Files are copied into place through a temporary file in the target directory and a
//! rename, hashing while copying, so the target never holds a partial or unverified file.

use super::split::hex;
use super::{atomic, default_data_root, DataError, DatasetKind};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A published file and its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedFile {
    /// File name, as published and as stored.
    pub name: &'static str,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: &'static str,
}

/// Where a fetchable data set can be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRecipe {
    /// The data set.
    pub kind: DatasetKind,
    /// Its files.
    pub files: &'static [PublishedFile],
    /// Debian package shipping the files, and the directory it installs them to.
    pub debian: Option<(&'static str, &'static str)>,
    /// URL prefix; a file is at `base_url` + `/` + name.
    pub base_url: &'static str,
}

/// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): the files `DatasetSpec` reads for
/// `fashion-mnist`.
pub const FASHION_MNIST: FetchRecipe = FetchRecipe {
    kind: DatasetKind::FashionMnist,
    files: &[
        PublishedFile {
            name: "train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        },
        PublishedFile {
            name: "train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        },
        PublishedFile {
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        },
        PublishedFile {
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ],
    debian: Some(("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")),
    base_url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
};

/// The recipe for `kind`, if it can be fetched.
pub fn recipe(kind: DatasetKind) -> Option<&'static FetchRecipe> {
    match kind {
        DatasetKind::FashionMnist => Some(&FASHION_MNIST),
        _ => None,
    }
}

/// Where to put the files and which sources may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Target directory; `None` means `default_data_root()/<name>` (e.g. `./data/fashion-mnist`).
    pub dir: Option<PathBuf>,
    /// A local directory to copy from, searched recursively.
    pub from: Option<PathBuf>,
    /// Whether the Debian package may be used (installed, or downloaded with `apt-get`).
    pub debian: bool,
    /// Whether the canonical URL may be downloaded with `curl`.
    pub download: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { dir: None, from: None, debian: true, download: true }
    }
}

impl FetchOptions {
    /// All sources allowed, default directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only local sources: files already there and `from`. Nothing is downloaded.
    pub fn offline() -> Self {
        FetchOptions { debian: false, download: false, ..Self::default() }
    }

    /// Target directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Local directory to copy from.
    pub fn from(mut self, from: impl Into<PathBuf>) -> Self {
        self.from = Some(from.into());
        self
    }
}

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchSource {
    /// It was already in the target directory, with the right hash.
    AlreadyPresent,
    /// Copied from the local directory given.
    LocalDir(PathBuf),
    /// Copied from the installed Debian package's directory.
    DebianInstalled(PathBuf),
    /// Unpacked from the Debian package, downloaded with `apt-get download`.
    DebianPackage(String),
    /// Downloaded from this URL.
    Download(String),
}

impl fmt::Display for FetchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchSource::AlreadyPresent => f.write_str("already present"),
            FetchSource::LocalDir(p) => write!(f, "local directory {}", p.display()),
            FetchSource::DebianInstalled(p) => write!(f, "installed Debian package files in {}", p.display()),
            FetchSource::DebianPackage(name) => write!(f, "Debian package {name} (apt-get download)"),
            FetchSource::Download(url) => write!(f, "download {url}"),
        }
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The directory now holding all files.
    pub dir: PathBuf,
    /// Each file and the source it was taken from, in the recipe's order.
    pub files: Vec<(String, FetchSource)>,
    /// Sources or files that were skipped, and why (hash mismatches, missing tools, ...).
    pub skipped: Vec<String>,
}

/// Puts the published files of `kind` into the target directory, verified.
///
/// `progress` receives a line for each source tried (for a command-line program to print;
/// downloads can take a while). Fails with [`DataError::FetchUnsupported`] for a data set
/// without a recipe and [`DataError::FetchFailed`] when some file could not be had from any
/// allowed source; that error lists what was tried.
pub fn fetch(
    kind: DatasetKind,
    options: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, DataError> {
    let recipe = recipe(kind).ok_or_else(|| DataError::FetchUnsupported {
        name: kind.name().to_string(),
        supported: DatasetKind::ALL
            .into_iter()
            .filter(|k| recipe(*k).is_some())
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let dir = options.dir.clone().unwrap_or_else(|| default_data_root().join(kind.name()));
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let mut run = FetchRun { recipe, dir, files: Vec::new(), skipped: Vec::new(), missing: Vec::new() };

    for file in recipe.files {
        let path = run.dir.join(file.name);
        if !path.exists() {
            run.missing.push(*file);
            continue;
        }
        let found = sha256_file(&path)?;
        if found == file.sha256 {
            run.files.push((file.name.to_string(), FetchSource::AlreadyPresent));
        } else {
            run.skipped.push(
                DataError::HashMismatch { path, expected: file.sha256.into(), found }.to_string()
                    + " (will be replaced)",
            );
            run.missing.push(*file);
        }
    }

    if let Some(from) = &options.from {
        progress(&format!("looking in {}", from.display()));
        if from.is_dir() {
            let found = find_files(from, &run.missing_names());
            run.install_from(&found, FetchSource::LocalDir(from.clone()), true);
        } else {
            run.skipped.push(format!("--from {}: not a directory", from.display()));
        }
    }

    if options.debian {
        if let Some((package, installed)) = recipe.debian {
            if run.any_missing() && Path::new(installed).is_dir() {
                let found = find_files(Path::new(installed), &run.missing_names());
                run.install_from(&found, FetchSource::DebianInstalled(installed.into()), true);
            }
            if run.any_missing() {
                progress(&format!("downloading Debian package {package} with apt-get"));
                match unpack_debian_package(package) {
                    Ok(unpacked) => {
                        let found = find_files(unpacked.path(), &run.missing_names());
                        run.install_from(&found, FetchSource::DebianPackage(package.into()), true);
                    }
                    Err(why) => run.skipped.push(format!("Debian package {package}: {why}")),
                }
            }
        }
    }

    if options.download && run.any_missing() {
        download_missing(&mut run, progress);
    }

    if run.any_missing() {
        let tried = if run.skipped.is_empty() { "no source had the files".to_string() } else { run.skipped.join("; ") };
        let missing = run.missing_names().into_iter().map(String::from).collect();
        return Err(DataError::FetchFailed { dataset: kind.name().into(), dir: run.dir, missing, tried });
    }
    // Report in the recipe's order, whatever order the sources supplied the files in.
    let order = |name: &str| recipe.files.iter().position(|f| f.name == name);
    run.files.sort_by_key(|(name, _)| order(name));
    Ok(FetchReport { dir: run.dir, files: run.files, skipped: run.skipped })
}

/// State of one [`fetch`]: what is installed, what is still missing, what was skipped.
struct FetchRun {
    recipe: &'static FetchRecipe,
    dir: PathBuf,
    files: Vec<(String, FetchSource)>,
    skipped: Vec<String>,
    missing: Vec<PublishedFile>,
}

impl FetchRun {
    fn any_missing(&self) -> bool {
        !self.missing.is_empty()
    }

    fn missing_names(&self) -> Vec<&'static str> {
        self.missing.iter().map(|f| f.name).collect()
    }

    /// Installs each missing file found in `found`; a file that fails verification stays
    /// missing and is reported, and so are files the source lacks when `note_absent`.
    fn install_from(&mut self, found: &HashMap<&'static str, PathBuf>, source: FetchSource, note_absent: bool) {
        let mut still_missing = Vec::new();
        for file in std::mem::take(&mut self.missing) {
            let Some(candidate) = found.get(file.name) else {
                still_missing.push(file);
                continue;
            };
            match install(candidate, &self.dir.join(file.name), file.sha256) {
                Ok(()) => self.files.push((file.name.to_string(), source.clone())),
                Err(e) => {
                    self.skipped.push(format!("{source}: {e}"));
                    still_missing.push(file);
                }
            }
        }
        let absent: Vec<_> = still_missing.iter().filter(|f| !found.contains_key(f.name)).map(|f| f.name).collect();
        if note_absent && !absent.is_empty() {
            self.skipped.push(format!("{source}: does not have {}", absent.join(", ")));
        }
        self.missing = still_missing;
    }
}

/// Copies `from` to `to` through a temporary file next to `to`, hashing on the way; renames it
/// into place only if the hash is `expected`.
fn install(from: &Path, to: &Path, expected: &str) -> Result<(), DataError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let mut input = std::fs::File::open(from).map_err(|e| DataError::io(from, e))?;
    let name = to.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let mut tmp = atomic::temp_file_in(dir, &format!(".{name}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf).map_err(|e| DataError::io(from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| DataError::io(tmp.path(), e))?;
    }
    let found = hex(&hasher.finalize());
    if found != expected {
        // Dropping `tmp` deletes it.
        return Err(DataError::HashMismatch { path: from.to_path_buf(), expected: expected.into(), found });
    }
    tmp.as_file().sync_all().map_err(|e| DataError::io(tmp.path(), e))?;
    tmp.persist(to).map_err(|e| DataError::io(to, e.error))?;
    Ok(())
}

/// Lower-case hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Files named in `names` anywhere under `root` (symbolic links to directories not followed,
/// at most 8 levels down); for a name found more than once, the shallowest, then the first by
/// path, so the choice does not depend on directory listing order.
fn find_files(root: &Path, names: &[&'static str]) -> HashMap<&'static str, PathBuf> {
    let mut found: HashMap<&'static str, PathBuf> = HashMap::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..=8 {
        let mut next = Vec::new();
        level.sort();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let Ok(kind) = entry.file_type() else { continue };
                let path = entry.path();
                if kind.is_dir() {
                    next.push(path);
                } else if let Some(name) = names.iter().find(|n| entry.file_name() == **n) {
                    found.entry(name).or_insert(path);
                }
            }
        }
        if next.is_empty() || found.len() == names.len() {
            break;
        }
        level = next;
    }
    found
}

/// Downloads the Debian package into a temporary directory and unpacks it there.
fn unpack_debian_package(package: &str) -> Result<tempfile::TempDir, String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    run_tool(Command::new("apt-get").args(["download", package]).current_dir(tmp.path()))?;
    let deb = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| "apt-get download produced no .deb file".to_string())?;
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    match run_tool(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root)) {
        Ok(()) => Ok(tmp),
        Err(dpkg_err) => {
            // Without dpkg (a non-Debian machine with apt-get is rare but possible): a .deb is
            // an `ar` archive whose data.tar.* holds the files.
            let ar_dir = tmp.path().join("ar");
            std::fs::create_dir_all(&ar_dir).map_err(|e| e.to_string())?;
            run_tool(Command::new("ar").arg("x").arg(&deb).current_dir(&ar_dir))
                .map_err(|e| format!("dpkg-deb: {dpkg_err}; ar: {e}"))?;
            let data = std::fs::read_dir(&ar_dir)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("data.tar")))
                .ok_or_else(|| "the .deb holds no data.tar.* member".to_string())?;
            run_tool(Command::new("tar").arg("-xf").arg(&data).arg("-C").arg(&root))?;
            Ok(tmp)
        }
    }
}

/// Downloads each missing file with `curl` into a temporary directory and installs it.
fn download_missing(run: &mut FetchRun, progress: &mut dyn FnMut(&str)) {
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            run.skipped.push(format!("download: cannot make a temporary directory: {e}"));
            return;
        }
    };
    let mut found = HashMap::new();
    for name in run.missing_names() {
        let url = format!("{}/{name}", run.recipe.base_url);
        progress(&format!("downloading {url}"));
        let target = tmp.path().join(name);
        match run_tool(Command::new("curl").args(["-fsSL", "--retry", "2", "-o"]).arg(&target).arg(&url)) {
            Ok(()) => {
                found.insert(name, target);
            }
            Err(why) => run.skipped.push(format!("download {url}: {why}")),
        }
    }
    // Failed downloads are already reported with curl's reason.
    run.install_from(&found, FetchSource::Download(run.recipe.base_url.to_string()), false);
}

/// Runs an external tool; an error says whether it is missing or how it failed (last line of
/// its error output).
fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("`{program}` is not installed"),
        _ => format!("cannot run `{program}`: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(format!("`{program}` failed ({}): {last}", output.status))
}
