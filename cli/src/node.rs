//! `ndctl node backup|restore`: a copy of one stopped node (CometBFT's config, keys, block store,
//! state and WAL, and the app's RocksDB store) with a manifest of checksums, and its restore into
//! a fresh home.
//!
//! The node must be stopped while it is backed up. CometBFT's handshake replays the blocks an app
//! lacks when the app is *behind* its block store, but nothing recovers an app that is *ahead* of
//! it; copying the stores of a running node one after the other can give either. A stopped node's
//! files are exactly what its next start sees (as after a crash, which CometBFT recovers from).
//! The backup refuses a node whose stores are locked (its cometbft or neurodata-abci runs) and
//! holds those locks itself while it copies, so a node started meanwhile fails to open its stores
//! instead of changing them under the copy. In a network of several validators, stop one node,
//! back it up and start it again: the others keep the chain going.
//!
//! Layout of a backup directory:
//! - `manifest.json`: chain id, the app's height and hash, every file with its size and SHA-256;
//! - `cometbft/config/`: `config.toml`, `genesis.json`, `node_key.json`,
//!   `priv_validator_key.json` (wherever config.toml or `CMT_*` put them, saved under the
//!   standard names) and the other files of the home's `config/`;
//! - `cometbft/data/`: CometBFT's `db_dir` (block store, state, evidence, tx index),
//!   `priv_validator_state.json` and the consensus WAL in `cs.wal/`;
//! - `app/`: a RocksDB checkpoint of the app's store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use neurodata_abci::storage::Storage;
use serde::{Deserialize, Serialize};

/// Node commands.
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Backs up a STOPPED node: its CometBFT home (config, keys, block store, state, WAL) and its
    /// app's state store, with a manifest of checksums. Refuses a node that is running.
    Backup {
        /// The node's CometBFT home (holding config/config.toml). Files that config.toml (or
        /// CometBFT's CMT_* environment variables) put elsewhere are found there.
        #[arg(long)]
        home: PathBuf,
        /// The app's state store (the directory `neurodata-abci --home` names).
        #[arg(long)]
        app_db: PathBuf,
        /// The new backup directory (absent or empty). It holds the node's keys: keep it as
        /// safe as they are.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restores a backup into a fresh CometBFT home and app store, after checking every file
    /// against the manifest. Leaves out the validator key unless --with-validator-key.
    Restore {
        /// The backup directory (`ndctl node backup --out`).
        #[arg(long)]
        from: PathBuf,
        /// The new CometBFT home (absent or empty).
        #[arg(long)]
        home: PathBuf,
        /// The new app state store (absent or empty).
        #[arg(long)]
        app_db: PathBuf,
        /// Also restore priv_validator_key.json with the sign state saved beside it: only when
        /// this node REPLACES the backed-up one, which must never run again (one validator key
        /// in two running nodes double-signs).
        #[arg(long)]
        with_validator_key: bool,
    },
}

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The layout version this tool writes and reads.
const FORMAT: u32 = 1;

const CONFIG_TOML: &str = "cometbft/config/config.toml";
const GENESIS: &str = "cometbft/config/genesis.json";
const NODE_KEY: &str = "cometbft/config/node_key.json";
const VALIDATOR_KEY: &str = "cometbft/config/priv_validator_key.json";
const SIGN_STATE: &str = "cometbft/data/priv_validator_state.json";
const WAL_DIR: &str = "cometbft/data/cs.wal";
const APP: &str = "app";

/// What a backup holds, written last: a backup without it did not finish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub format: u32,
    /// The tool that wrote it.
    pub tool: String,
    /// When it was written (unix seconds).
    pub created_unix: i64,
    /// The same, RFC 3339 UTC.
    pub created: String,
    /// The genesis's chain id.
    pub chain_id: String,
    /// The app's last commit in the backup.
    pub app: AppPoint,
    /// The last height this node's consensus finished (the WAL's last end-height record): its
    /// block store holds at least this. Absent when the WAL has none (a node that only synced).
    pub consensus_height: Option<u64>,
    /// The validator key's address (hex), when the backup holds the key.
    pub validator_address: Option<String>,
    /// The last vote the validator signed, when the backup holds its sign state.
    pub sign_state: Option<SignState>,
    /// The consensus WAL's head file, relative to a restored home.
    pub wal_file: String,
    /// Every file of the backup but the manifest.
    pub files: Vec<FileEntry>,
}

/// The app store's last commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPoint {
    /// Height.
    pub height: u64,
    /// App hash, hex.
    pub app_hash: String,
}

/// CometBFT's `priv_validator_state.json`: the last height, round and step signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignState {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: i64,
    /// Step (1 proposal, 2 prevote, 3 precommit).
    pub step: i64,
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path in the backup, `/`-separated.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Why a backup cannot be taken or restored, with what the operator has to fix.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// CometBFT holds a lock on one of its stores.
    #[error(
        "{path} is locked: the node's cometbft is running. Stop the node (cometbft and \
         neurodata-abci) before backing it up; start it again afterwards"
    )]
    NodeRunning {
        /// The locked file.
        path: PathBuf,
    },
    /// A target directory already holds something.
    #[error("{path} is not empty: restore into a fresh directory (nothing is overwritten)")]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The backup has no manifest.
    #[error("{path} has no {MANIFEST}: it is not a backup, or its backup did not finish")]
    NoManifest {
        /// The backup directory.
        path: PathBuf,
    },
    /// A file the manifest lists is not there.
    #[error("backup file {path} is missing: the backup is incomplete; restore another copy")]
    Missing {
        /// Path in the backup.
        path: String,
    },
    /// A file differs from the manifest.
    #[error(
        "backup file {path} does not match the manifest ({what}): the backup is damaged or \
         was changed; restore another copy"
    )]
    Tampered {
        /// Path in the backup.
        path: String,
        /// What differs.
        what: String,
    },
    /// A file the manifest does not list.
    #[error(
        "backup file {path} is not in the manifest: the backup was changed; restore another copy"
    )]
    Unlisted {
        /// Path in the backup.
        path: String,
    },
    /// The manifest names a path outside the backup's layout.
    #[error("the manifest names {path:?}, which is not a path inside a backup")]
    BadPath {
        /// As written in the manifest.
        path: String,
    },
    /// A file every backup has is not listed.
    #[error("the backup lacks {path}: {why}")]
    Lacks {
        /// Path in the backup.
        path: String,
        /// What it is needed for.
        why: &'static str,
    },
}

/// Where a node keeps what a backup copies, resolved as CometBFT does: config.toml's settings,
/// relative to the home unless absolute, overridden by the `CMT_*` environment variables
/// CometBFT reads (the Helm chart names each replica's keys that way).
#[derive(Debug)]
struct Layout {
    config_dir: PathBuf,
    genesis: PathBuf,
    node_key: PathBuf,
    validator_key: PathBuf,
    sign_state: PathBuf,
    db_dir: PathBuf,
    wal_file: PathBuf,
}

/// (config.toml key, its `CMT_*` environment variable, CometBFT's default, relative to the home).
const GENESIS_FILE: (&str, &str, &str) =
    ("genesis_file", "CMT_GENESIS_FILE", "config/genesis.json");
const NODE_KEY_FILE: (&str, &str, &str) =
    ("node_key_file", "CMT_NODE_KEY_FILE", "config/node_key.json");
const PV_KEY_FILE: (&str, &str, &str) = (
    "priv_validator_key_file",
    "CMT_PRIV_VALIDATOR_KEY_FILE",
    "config/priv_validator_key.json",
);
const PV_STATE_FILE: (&str, &str, &str) = (
    "priv_validator_state_file",
    "CMT_PRIV_VALIDATOR_STATE_FILE",
    "data/priv_validator_state.json",
);
const DB_DIR: (&str, &str, &str) = ("db_dir", "CMT_DB_DIR", "data");
/// `[consensus] wal_file`.
const WAL_FILE: (&str, &str, &str) = ("wal_file", "CMT_CONSENSUS_WAL_FILE", "data/cs.wal/wal");

impl Layout {
    fn resolve(home: &Path, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Layout> {
        let config_dir = home.join("config");
        let path = config_dir.join("config.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: is {} a CometBFT home?",
                path.display(),
                home.display()
            )
        })?;
        let doc: toml_edit::DocumentMut = text
            .parse()
            .with_context(|| format!("{} is not TOML", path.display()))?;
        let consensus = doc.get("consensus");
        let setting = |(key, var, default): (&str, &str, &str), table: Option<&toml_edit::Item>| {
            let value = env(var)
                .or_else(|| {
                    table
                        .and_then(|t| t.get(key))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| default.to_owned());
            // CometBFT's rootify: absolute as is, else under the home.
            let p = PathBuf::from(value);
            if p.is_absolute() { p } else { home.join(p) }
        };
        let top = Some(doc.as_item());
        Ok(Layout {
            genesis: setting(GENESIS_FILE, top),
            node_key: setting(NODE_KEY_FILE, top),
            validator_key: setting(PV_KEY_FILE, top),
            sign_state: setting(PV_STATE_FILE, top),
            db_dir: setting(DB_DIR, top),
            wal_file: setting(WAL_FILE, consensus),
            config_dir,
        })
    }
}

/// Regular files under `dir` (symbolic links followed), as (path relative to `dir`, path),
/// skipping `lost+found` (a volume's root) and Kubernetes' `..data`-style mount internals.
fn walk(dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "lost+found" || name.starts_with("..") {
                continue;
            }
            let path = entry.path();
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                go(root, &path, out)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.push((rel, path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn absent_or_empty(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Size and SHA-256 of `path`, copying it to `to` (a new file) if given.
fn hash_copy(path: &Path, to: Option<(&Path, bool)>) -> anyhow::Result<(u64, String)> {
    let mut src = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut dst = match to {
        Some((to, private)) => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            Some(
                File::options()
                    .write(true)
                    .create_new(true)
                    .mode(if private { 0o600 } else { 0o644 })
                    .open(to)
                    .with_context(|| format!("creating {}", to.display()))?,
            )
        }
        None => None,
    };
    let mut sha = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
        if let Some(d) = dst.as_mut() {
            d.write_all(&buf[..n])?;
        }
    }
    if let Some(d) = dst {
        d.sync_all()?;
    }
    Ok((size, hex::encode(sha.finish())))
}

/// The backup path of a file, `/`-separated.
fn slash(parts: &[&str], rel: &Path) -> String {
    let mut s = parts.join("/");
    for c in rel.components() {
        s.push('/');
        s.push_str(&c.as_os_str().to_string_lossy());
    }
    s
}

fn json(path: &Path) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))
}

fn sign_state_of(path: &Path) -> anyhow::Result<SignState> {
    let v = json(path)?;
    let int = |k: &str| -> Option<i64> {
        v.get(k).and_then(|x| {
            x.as_i64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
    };
    match (int("height"), int("round"), int("step")) {
        (Some(h), Some(round), Some(step)) if h >= 0 => Ok(SignState {
            height: h as u64,
            round,
            step,
        }),
        _ => bail!(
            "{} is not a CometBFT sign state (height, round, step)",
            path.display()
        ),
    }
}

/// Holds CometBFT's store locks (goleveldb's `LOCK` files, taken with flock) while it lives.
struct CometLocks {
    _held: Vec<File>,
}

fn lock_comet_stores(db_dir: &Path) -> anyhow::Result<CometLocks> {
    let mut held = Vec::new();
    for (rel, path) in walk(db_dir)? {
        if rel.file_name().is_none_or(|n| n != "LOCK") {
            continue;
        }
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => held.push(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BackupError::NodeRunning { path }.into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    Ok(CometLocks { _held: held })
}

/// Backs up the stopped node at `home` and `app_db` into `out`. `env` reads CometBFT's `CMT_*`
/// environment variables.
pub fn backup(
    home: &Path,
    app_db: &Path,
    out: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Manifest> {
    if !absent_or_empty(out)? {
        return Err(BackupError::TargetNotEmpty {
            path: out.to_path_buf(),
        }
        .into());
    }
    let layout = Layout::resolve(home, env)?;
    if !layout.db_dir.is_dir() {
        bail!(
            "no CometBFT data directory at {} (db_dir of {})",
            layout.db_dir.display(),
            home.display()
        );
    }
    if !layout.genesis.is_file() {
        bail!(
            "the node's genesis file {} is not there",
            layout.genesis.display()
        );
    }
    let wal_dir = layout.wal_file.parent().unwrap_or(&layout.db_dir);
    let wal_name = layout
        .wal_file
        .file_name()
        .map_or_else(|| "wal".into(), |n| n.to_string_lossy().into_owned());
    // The WAL is saved as `cs.wal/` of the data (its place in a default home), unless it lies
    // in the data directory itself.
    let (wal_backup, wal_file) = if wal_dir == layout.db_dir {
        ("cometbft/data".to_owned(), format!("data/{wal_name}"))
    } else if layout.db_dir.starts_with(wal_dir) {
        bail!(
            "the consensus WAL's directory {} holds the data directory {}: a layout this \
             backup does not know",
            wal_dir.display(),
            layout.db_dir.display()
        );
    } else {
        (WAL_DIR.to_owned(), format!("data/cs.wal/{wal_name}"))
    };
    // Both kinds of locks are held until the copy is done.
    let _comet = lock_comet_stores(&layout.db_dir)?;
    let store = Storage::open_existing(app_db)
        .with_context(|| format!("opening the app store {}", app_db.display()))?;
    let committed = store.committed()?.with_context(|| {
        format!(
            "the app store {} holds no committed state (InitChain never ran): nothing to back up",
            app_db.display()
        )
    })?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The backup holds the node's keys.
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
    store
        .checkpoint(&out.join(APP))
        .with_context(|| format!("writing a checkpoint of {}", app_db.display()))?;

    // Backup path -> source. The named files win over what a directory walk finds.
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (rel, path) in walk(&layout.config_dir)? {
        if rel.components().count() == 1 {
            sources.insert(slash(&["cometbft", "config"], &rel), path);
        }
    }
    let separate_wal = wal_dir != layout.db_dir;
    for (rel, path) in walk(&layout.db_dir)? {
        if (separate_wal && path.starts_with(wal_dir)) || path == layout.sign_state {
            continue;
        }
        sources.insert(slash(&["cometbft", "data"], &rel), path);
    }
    if separate_wal && wal_dir.is_dir() {
        for (rel, path) in walk(wal_dir)? {
            sources.insert(slash(&[&wal_backup], &rel), path);
        }
    }
    let named = [
        (GENESIS, &layout.genesis),
        (NODE_KEY, &layout.node_key),
        (VALIDATOR_KEY, &layout.validator_key),
        (SIGN_STATE, &layout.sign_state),
    ];
    for (name, path) in named {
        if path.is_file() {
            sources.insert(name.to_owned(), path.clone());
        } else {
            sources.remove(name);
        }
    }

    let private = [NODE_KEY, VALIDATOR_KEY, SIGN_STATE];
    let mut files = Vec::new();
    for (name, src) in &sources {
        let (size, sha256) = hash_copy(
            src,
            Some((&out.join(name), private.contains(&name.as_str()))),
        )?;
        files.push(FileEntry {
            path: name.clone(),
            size,
            sha256,
        });
    }
    for (rel, path) in walk(&out.join(APP))? {
        let (size, sha256) = hash_copy(&path, None)?;
        files.push(FileEntry {
            path: slash(&[APP], &rel),
            size,
            sha256,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let genesis = json(&out.join(GENESIS))?;
    let chain_id = genesis
        .get("chain_id")
        .and_then(|c| c.as_str())
        .context("the node's genesis has no chain_id")?
        .to_owned();
    let validator_address = if sources.contains_key(VALIDATOR_KEY) {
        json(&out.join(VALIDATOR_KEY))?
            .get("address")
            .and_then(|a| a.as_str())
            .map(str::to_owned)
    } else {
        None
    };
    let sign_state = if sources.contains_key(SIGN_STATE) {
        Some(sign_state_of(&out.join(SIGN_STATE))?)
    } else {
        None
    };
    let now = crate::now();
    let manifest = Manifest {
        format: FORMAT,
        tool: format!("ndctl {}", env!("CARGO_PKG_VERSION")),
        created_unix: now,
        created: crate::utc(now),
        chain_id,
        app: AppPoint {
            height: committed.height,
            app_hash: hex::encode(committed.app_hash),
        },
        consensus_height: wal::end_height(&out.join(&wal_backup), &wal_name),
        validator_address,
        sign_state,
        wal_file,
        files,
    };
    let tmp = out.join(format!("{MANIFEST}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, out.join(MANIFEST))?;
    File::open(out)?.sync_all()?;
    Ok(manifest)
}

/// Where a backup path goes in a restore; refuses a path outside the backup's layout.
fn target(path: &str, home: &Path, app_db: &Path) -> Result<PathBuf, BackupError> {
    let bad = || BackupError::BadPath { path: path.into() };
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    if let Ok(rest) = p.strip_prefix("cometbft")
        && rest.components().count() >= 2
    {
        Ok(home.join(rest))
    } else if let Ok(rest) = p.strip_prefix(APP)
        && rest.components().count() >= 1
    {
        Ok(app_db.join(rest))
    } else {
        Err(bad())
    }
}

/// Reads and checks a backup's manifest and every file against it, writing nothing.
pub fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join(MANIFEST);
    if !path.is_file() {
        return Err(BackupError::NoManifest {
            path: from.to_path_buf(),
        }
        .into());
    }
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a backup of format {}; this ndctl reads format {FORMAT}",
            from.display(),
            manifest.format
        );
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for (name, why) in [
        (CONFIG_TOML, "CometBFT's configuration"),
        (GENESIS, "the chain's genesis"),
        ("app/CURRENT", "the app's state store"),
    ] {
        if !listed.contains(name) {
            return Err(BackupError::Lacks {
                path: name.into(),
                why,
            }
            .into());
        }
    }
    for f in &manifest.files {
        target(&f.path, Path::new("/"), Path::new("/"))?;
        let p = from.join(&f.path);
        if !p.is_file() {
            return Err(BackupError::Missing {
                path: f.path.clone(),
            }
            .into());
        }
        let (size, sha256) = hash_copy(&p, None)?;
        if size != f.size {
            return Err(BackupError::Tampered {
                path: f.path.clone(),
                what: format!("{size} bytes, the manifest says {}", f.size),
            }
            .into());
        }
        if sha256 != f.sha256 {
            return Err(BackupError::Tampered {
                path: f.path.clone(),
                what: format!("sha256 {sha256}, the manifest says {}", f.sha256),
            }
            .into());
        }
    }
    for (rel, _) in walk(from)? {
        let name = slash(&[], &rel);
        let name = name.trim_start_matches('/');
        if name != MANIFEST && !listed.contains(name) {
            return Err(BackupError::Unlisted { path: name.into() }.into());
        }
    }
    Ok(manifest)
}

/// A config.toml setting a restore changed: (its key, its old value).
pub type Rewritten = (String, String);

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Files written.
    pub files: usize,
    /// Backup files left out (the validator key and its sign state, by default).
    pub left_out: Vec<String>,
    /// config.toml settings set to the restored home's layout.
    pub rewritten: Vec<Rewritten>,
    /// config.toml's `proxy_app`: where CometBFT expects the app.
    pub proxy_app: Option<String>,
}

/// Restores the backup in `from` into the fresh `home` and `app_db`.
pub fn restore(
    from: &Path,
    home: &Path,
    app_db: &Path,
    with_validator_key: bool,
) -> anyhow::Result<Restored> {
    for dir in [home, app_db] {
        if !absent_or_empty(dir)? {
            return Err(BackupError::TargetNotEmpty {
                path: dir.to_path_buf(),
            }
            .into());
        }
    }
    // Everything is checked before anything is written.
    let manifest = verify(from)?;
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let validator_files = [VALIDATOR_KEY, SIGN_STATE];
    if with_validator_key {
        for (name, why) in [
            (
                VALIDATOR_KEY,
                "--with-validator-key restores the validator key",
            ),
            (
                SIGN_STATE,
                "a validator key is only restored with the sign state saved beside it (a \
                 missing or older one would let it sign twice at a height)",
            ),
        ] {
            if !listed.contains(name) {
                return Err(BackupError::Lacks {
                    path: name.into(),
                    why,
                }
                .into());
            }
        }
    }
    let mut left_out = Vec::new();
    let mut written = 0;
    for f in &manifest.files {
        if !with_validator_key && validator_files.contains(&f.path.as_str()) {
            left_out.push(f.path.clone());
            continue;
        }
        let to = target(&f.path, home, app_db)?;
        let private = [NODE_KEY, VALIDATOR_KEY, SIGN_STATE].contains(&f.path.as_str());
        let (size, sha256) =
            hash_copy(&from.join(&f.path), Some((&to, private))).with_context(|| {
                format!(
                    "restoring {} stopped half-way: remove {} and {} before trying again",
                    f.path,
                    home.display(),
                    app_db.display()
                )
            })?;
        // Checked again as copied: the backup may have changed since it was verified.
        if size != f.size || sha256 != f.sha256 {
            return Err(BackupError::Tampered {
                path: f.path.clone(),
                what: "changed while it was restored".into(),
            }
            .into());
        }
        written += 1;
    }
    std::fs::create_dir_all(home.join("data"))?;
    let (rewritten, proxy_app) =
        standard_paths(&home.join("config/config.toml"), &manifest.wal_file)?;

    let store = Storage::open_existing(app_db)
        .with_context(|| format!("opening the restored app store {}", app_db.display()))?;
    let got = store
        .committed()?
        .map(|c| (c.height, hex::encode(c.app_hash)));
    if got != Some((manifest.app.height, manifest.app.app_hash.clone())) {
        bail!(
            "the restored app store {} is at {got:?}, the manifest says height {} hash {}",
            app_db.display(),
            manifest.app.height,
            manifest.app.app_hash
        );
    }
    Ok(Restored {
        manifest,
        files: written,
        left_out,
        rewritten,
        proxy_app,
    })
}

/// Points config.toml's file settings at the restored home's own files (a backed-up node may
/// have had its keys and genesis elsewhere, as the Helm chart mounts them); returns what changed
/// and `proxy_app`.
fn standard_paths(
    config: &Path,
    wal_file: &str,
) -> anyhow::Result<(Vec<Rewritten>, Option<String>)> {
    let text = std::fs::read_to_string(config)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not TOML", config.display()))?;
    let mut changed = Vec::new();
    for (key, _, default) in [
        GENESIS_FILE,
        NODE_KEY_FILE,
        PV_KEY_FILE,
        PV_STATE_FILE,
        DB_DIR,
    ] {
        if let Some(old) = doc.get(key).and_then(|v| v.as_str()).map(str::to_owned)
            && old != default
        {
            doc[key] = toml_edit::value(default);
            changed.push((key.to_owned(), old));
        }
    }
    if let Some(consensus) = doc.get_mut("consensus").and_then(|c| c.as_table_like_mut())
        && let Some(old) = consensus
            .get(WAL_FILE.0)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
        && old != wal_file
    {
        consensus.insert(WAL_FILE.0, toml_edit::value(wal_file));
        changed.push((format!("consensus.{}", WAL_FILE.0), old));
    }
    if !changed.is_empty() {
        std::fs::write(config, doc.to_string())?;
    }
    let proxy_app = doc
        .get("proxy_app")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Ok((changed, proxy_app))
}

/// The last end-height record of CometBFT's consensus WAL (v0.38 `consensus/wal.go`: records of
/// CRC-32C ‖ length ‖ protobuf `TimedWALMessage`, in the head file and older `head.NNN` ones).
mod wal;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs a node command.
pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Backup { home, app_db, out } => {
            let m = backup(&home, &app_db, &out, &|var| std::env::var(var).ok())?;
            let total: u64 = m.files.iter().map(|f| f.size).sum();
            let count = |prefix: &str| {
                m.files
                    .iter()
                    .filter(|f| f.path.starts_with(prefix))
                    .count()
            };
            println!(
                "backed up the node of chain {} at app height {} (app hash {}) into {}",
                m.chain_id,
                m.app.height,
                m.app.app_hash,
                out.display()
            );
            println!(
                "  {} files, {}: config {}, CometBFT data {}, app store {}",
                m.files.len(),
                mib(total),
                count("cometbft/config/"),
                count("cometbft/data/"),
                count("app/")
            );
            match m.consensus_height {
                Some(h) => println!("  consensus finished height {h} (its WAL)"),
                None => println!("  consensus height unknown (no end-height record in its WAL)"),
            }
            match (&m.validator_address, m.sign_state) {
                (Some(a), Some(s)) => println!(
                    "  validator key {a}, last signed height {} round {} step {}: keep this \
                     backup as safe as the key itself",
                    s.height, s.round, s.step
                ),
                (Some(a), None) => println!("  validator key {a} (no sign state found)"),
                _ => println!("  no validator key found (not in the backup)"),
            }
            if !m.files.iter().any(|f| f.path == NODE_KEY) {
                println!("  no node key found (not in the backup)");
            }
            println!(
                "the node may be started again. Check a copy anywhere with `ndctl node restore` \
                 into scratch directories, or compare files with {MANIFEST}"
            );
        }
        NodeCommand::Restore {
            from,
            home,
            app_db,
            with_validator_key,
        } => {
            let r = restore(&from, &home, &app_db, with_validator_key)?;
            let m = &r.manifest;
            println!(
                "restored {} checked files of the node backup of chain {} (app height {}, app \
                 hash {}, taken {})",
                r.files, m.chain_id, m.app.height, m.app.app_hash, m.created
            );
            println!("  CometBFT home {}", home.display());
            println!("  app store     {}", app_db.display());
            for (key, old) in &r.rewritten {
                println!("  config.toml: {key} now names the restored home's file (was {old:?})");
            }
            if with_validator_key {
                let s = m.sign_state.map_or_else(String::new, |s| {
                    format!(
                        ", last signed height {} round {} step {}",
                        s.height, s.round, s.step
                    )
                });
                println!(
                    "  validator key {} restored with its sign state{s}",
                    m.validator_address.as_deref().unwrap_or("?")
                );
            } else if !r.left_out.is_empty() {
                println!(
                    "  left out: {} (without --with-validator-key, CometBFT makes a new key on \
                     its first start and this node runs as a full node)",
                    r.left_out.join(", ")
                );
            }
            if !m.files.iter().any(|f| f.path == NODE_KEY) {
                println!(
                    "  the backup had no node key: CometBFT makes one, a new node id for the \
                     other nodes' persistent_peers"
                );
            }
            let proxy_app = r.proxy_app.as_deref().unwrap_or("<proxy_app>");
            println!("next:");
            println!(
                "  1. check {}'s addresses for this machine (proxy_app {proxy_app}, p2p, rpc)",
                home.join("config/config.toml").display()
            );
            println!(
                "  2. start the app: neurodata-abci --home {} --listen {proxy_app} (with \
                 --validator-key and --verdicts as before, for a validator that attests)",
                app_db.display()
            );
            println!(
                "  3. start CometBFT: cometbft start --home {} (its handshake replays the blocks \
                 the app lacks, then it catches up from its peers)",
                home.display()
            );
            if with_validator_key {
                println!(
                    "  never start the backed-up node again while this one runs: one validator \
                     key in two nodes double-signs. If it ran after the backup was taken, copy \
                     its newer data/priv_validator_state.json over this one before step 3"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use neurodata_abci::state::StateRead as _;

    const KEY: &str = r#"{"address":"AB12","pub_key":{"type":"tendermint/PubKeyEd25519","value":"x"},"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"y"}}"#;

    /// A stopped node: a CometBFT home as `cometbft init` makes it plus stores, and an app
    /// store committed at height 2.
    struct Node {
        dir: tempfile::TempDir,
        app_hash: [u8; 32],
    }

    impl Node {
        fn new(config_toml: &str) -> Node {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home");
            let w = |rel: &str, bytes: &[u8]| {
                let p = home.join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            };
            w("config/config.toml", config_toml.as_bytes());
            w("config/genesis.json", br#"{"chain_id":"test-chain"}"#);
            w("config/node_key.json", b"{\"priv_key\":{}}");
            w("config/priv_validator_key.json", KEY.as_bytes());
            w(
                "data/priv_validator_state.json",
                br#"{"height":"5","round":1,"step":3}"#,
            );
            w("data/blockstore.db/LOCK", b"");
            w("data/blockstore.db/000001.log", b"blocks");
            w("data/state.db/LOCK", b"");
            w("data/state.db/CURRENT", b"MANIFEST-000000\n");
            let mut wal = wal::record_end_height(6);
            wal.extend(wal::record_end_height(7));
            wal.extend(b"\x00\x01torn"); // a crash's torn write
            w("data/cs.wal/wal", &wal);
            let s = Storage::open(&dir.path().join("app")).unwrap();
            let put = |h: u64, genesis: bool| {
                let writes = [(format!("k{h}"), Some(vec![h as u8]))]
                    .into_iter()
                    .collect();
                s.commit(s.prepare(h, genesis, writes).unwrap()).unwrap()
            };
            put(0, true);
            put(1, false);
            let app_hash = put(2, false).app_hash;
            Node { dir, app_hash }
        }

        fn home(&self) -> PathBuf {
            self.dir.path().join("home")
        }
        fn app(&self) -> PathBuf {
            self.dir.path().join("app")
        }
        fn out(&self) -> PathBuf {
            self.dir.path().join("backup")
        }

        fn backup(&self) -> Manifest {
            backup(&self.home(), &self.app(), &self.out(), &|_| None).unwrap()
        }

        fn restore(&self, to: &str, key: bool) -> anyhow::Result<Restored> {
            let to = self.dir.path().join(to);
            restore(&self.out(), &to.join("home"), &to.join("app"), key)
        }
    }

    fn kind(e: anyhow::Error) -> BackupError {
        e.downcast().unwrap()
    }

    #[test]
    fn the_manifest_round_trips_and_a_restore_is_the_node() {
        let n = Node::new("");
        let m = n.backup();
        let on_disk: Manifest =
            serde_json::from_slice(&std::fs::read(n.out().join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(on_disk, m);
        assert_eq!(m.chain_id, "test-chain");
        assert_eq!(m.app.height, 2);
        assert_eq!(m.app.app_hash, hex::encode(n.app_hash));
        assert_eq!(m.consensus_height, Some(7));
        assert_eq!(m.validator_address.as_deref(), Some("AB12"));
        let s = SignState {
            height: 5,
            round: 1,
            step: 3,
        };
        assert_eq!(m.sign_state, Some(s));
        let paths: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        for p in [
            CONFIG_TOML,
            GENESIS,
            NODE_KEY,
            VALIDATOR_KEY,
            SIGN_STATE,
            "cometbft/data/blockstore.db/000001.log",
            "cometbft/data/cs.wal/wal",
            "app/CURRENT",
        ] {
            assert!(paths.contains(p), "{p} in {paths:?}");
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&n.out()), 0o700);
        assert_eq!(mode(&n.out().join(VALIDATOR_KEY)), 0o600);

        let r = n.restore("r", true).unwrap();
        assert_eq!(r.files, m.files.len());
        assert!(r.left_out.is_empty() && r.rewritten.is_empty());
        let to = n.dir.path().join("r/home");
        for rel in [
            "config/priv_validator_key.json",
            "data/priv_validator_state.json",
            "data/cs.wal/wal",
            "data/state.db/CURRENT",
        ] {
            assert_eq!(
                std::fs::read(to.join(rel)).unwrap(),
                std::fs::read(n.home().join(rel)).unwrap(),
                "{rel}"
            );
        }
        let app = Storage::open_existing(&n.dir.path().join("r/app")).unwrap();
        assert_eq!(app.committed().unwrap().unwrap().app_hash, n.app_hash);
        assert_eq!(app.get_raw("k1").unwrap(), Some(vec![1]));
    }

    #[test]
    fn the_validator_key_and_sign_state_are_left_out_by_default() {
        let n = Node::new("");
        n.backup();
        let r = n.restore("r", false).unwrap();
        assert_eq!(
            r.left_out,
            vec![VALIDATOR_KEY.to_owned(), SIGN_STATE.to_owned()]
        );
        let to = n.dir.path().join("r/home");
        assert!(!to.join("config/priv_validator_key.json").exists());
        assert!(!to.join("data/priv_validator_state.json").exists());
        assert!(to.join("config/node_key.json").is_file());
        assert!(to.join("data/blockstore.db/000001.log").is_file());
    }

    #[test]
    fn a_tampered_file_is_refused_by_name_and_nothing_is_written() {
        let n = Node::new("");
        n.backup();
        let sst = walk(&n.out().join(APP))
            .unwrap()
            .into_iter()
            .find(|(r, _)| r.extension().is_some_and(|e| e == "sst"))
            .map(|(r, p)| (slash(&[APP], &r), p))
            .unwrap();
        let mut bytes = std::fs::read(&sst.1).unwrap();
        bytes[0] ^= 1;
        // A hard link of the live store: replace, never change it in place.
        std::fs::remove_file(&sst.1).unwrap();
        std::fs::write(&sst.1, &bytes).unwrap();
        let e = n.restore("r", true).unwrap_err();
        assert!(e.to_string().contains(&sst.0), "{e}");
        assert!(matches!(kind(e), BackupError::Tampered { path, .. } if path == sst.0));
        assert!(!n.dir.path().join("r").exists());

        // Same size, other bytes, in a small file.
        let n = Node::new("");
        n.backup();
        std::fs::write(n.out().join(GENESIS), br#"{"chain_id":"evil-chain"}"#).unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(
            matches!(e, BackupError::Tampered { ref path, .. } if path == GENESIS),
            "{e}"
        );
    }

    #[test]
    fn a_missing_or_unlisted_file_or_manifest_is_refused() {
        let n = Node::new("");
        n.backup();
        let wal = n.out().join("cometbft/data/cs.wal/wal");
        let bytes = std::fs::read(&wal).unwrap();
        std::fs::remove_file(&wal).unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(
            matches!(e, BackupError::Missing { ref path } if path == "cometbft/data/cs.wal/wal"),
            "{e}"
        );
        std::fs::write(&wal, bytes).unwrap();
        std::fs::write(n.out().join("app/000099.sst"), b"extra").unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(
            matches!(e, BackupError::Unlisted { ref path } if path == "app/000099.sst"),
            "{e}"
        );
        std::fs::remove_file(n.out().join("app/000099.sst")).unwrap();
        n.restore("ok", false).unwrap();

        std::fs::remove_file(n.out().join(MANIFEST)).unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(matches!(e, BackupError::NoManifest { .. }), "{e}");
        assert!(!n.dir.path().join("r").exists());
    }

    #[test]
    fn a_manifest_path_outside_the_backup_is_refused() {
        let n = Node::new("");
        let mut m = n.backup();
        m.files.push(FileEntry {
            path: "cometbft/../../etc/passwd".into(),
            size: 0,
            sha256: String::new(),
        });
        std::fs::write(n.out().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(matches!(e, BackupError::BadPath { .. }), "{e}");
    }

    #[test]
    fn a_non_empty_target_is_refused() {
        let n = Node::new("");
        n.backup();
        let to = n.dir.path().join("r");
        std::fs::create_dir_all(to.join("app")).unwrap();
        std::fs::write(to.join("app/precious"), b"x").unwrap();
        let e = kind(n.restore("r", false).unwrap_err());
        assert!(matches!(e, BackupError::TargetNotEmpty { ref path } if path == &to.join("app")));
        assert_eq!(std::fs::read(to.join("app/precious")).unwrap(), b"x");
        assert!(!to.join("home").exists());
        // Nor does a backup go into a non-empty directory.
        let e = backup(&n.home(), &n.app(), &to, &|_| None).unwrap_err();
        assert!(matches!(kind(e), BackupError::TargetNotEmpty { .. }));
    }

    #[test]
    fn a_running_node_is_refused() {
        let n = Node::new("");
        // CometBFT holds its stores' flocks.
        let lock = File::open(n.home().join("data/state.db/LOCK")).unwrap();
        lock.lock().unwrap();
        let e = backup(&n.home(), &n.app(), &n.out(), &|_| None).unwrap_err();
        assert!(e.to_string().contains("Stop the node"), "{e}");
        assert!(matches!(kind(e), BackupError::NodeRunning { .. }));
        drop(lock);
        // The app holds its RocksDB lock.
        let app = Storage::open(&n.app()).unwrap();
        let e = backup(&n.home(), &n.app(), &n.out(), &|_| None).unwrap_err();
        assert!(format!("{e:#}").contains("in use"), "{e:#}");
        drop(app);
        n.backup();
    }

    #[test]
    fn with_the_validator_key_the_sign_state_is_required() {
        let n = Node::new("");
        std::fs::remove_file(n.home().join("data/priv_validator_state.json")).unwrap();
        let m = n.backup();
        assert_eq!(m.sign_state, None);
        let e = kind(n.restore("r", true).unwrap_err());
        assert!(
            matches!(e, BackupError::Lacks { ref path, .. } if path == SIGN_STATE),
            "{e}"
        );
        n.restore("r2", false).unwrap();
    }

    #[test]
    fn files_named_outside_the_home_are_backed_up_and_the_restored_home_holds_them() {
        // As the Helm chart runs a node: genesis and keys mounted elsewhere, each replica's key
        // named by CMT_PRIV_VALIDATOR_KEY_FILE over config.toml's.
        let elsewhere = tempfile::tempdir().unwrap();
        let e = elsewhere.path();
        std::fs::write(e.join("genesis.json"), br#"{"chain_id":"helm-chain"}"#).unwrap();
        std::fs::write(e.join("priv_validator_key-0.json"), b"{\"address\":\"00\"}").unwrap();
        std::fs::write(e.join("priv_validator_key-1.json"), KEY).unwrap();
        std::fs::write(e.join("node_key-1.json"), b"{\"n\":1}").unwrap();
        let config = format!(
            "genesis_file = \"{g}\"\npriv_validator_key_file = \"{k0}\"\nnode_key_file = \
             \"{n1}\"\n\n[consensus]\nwal_file = \"data/cs.wal/wal\"\n",
            g = e.join("genesis.json").display(),
            k0 = e.join("priv_validator_key-0.json").display(),
            n1 = e.join("node_key-1.json").display(),
        );
        let n = Node::new(&config);
        // The stale default-named files of `cometbft init` are not what the node uses.
        std::fs::write(
            n.home().join("config/genesis.json"),
            br#"{"chain_id":"stale"}"#,
        )
        .unwrap();
        let key1 = e.join("priv_validator_key-1.json").display().to_string();
        let m = backup(&n.home(), &n.app(), &n.out(), &|v| {
            (v == "CMT_PRIV_VALIDATOR_KEY_FILE").then(|| key1.clone())
        })
        .unwrap();
        assert_eq!(m.chain_id, "helm-chain");
        assert_eq!(m.validator_address.as_deref(), Some("AB12"));
        let r = n.restore("r", true).unwrap();
        let keys: Vec<&str> = r.rewritten.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["genesis_file", "node_key_file", "priv_validator_key_file"]
        );
        let to = n.dir.path().join("r/home");
        assert_eq!(
            std::fs::read(to.join("config/priv_validator_key.json")).unwrap(),
            KEY.as_bytes()
        );
        assert_eq!(
            std::fs::read(to.join("config/node_key.json")).unwrap(),
            b"{\"n\":1}"
        );
        let restored = std::fs::read_to_string(to.join("config/config.toml")).unwrap();
        assert!(
            restored.contains("genesis_file = \"config/genesis.json\""),
            "{restored}"
        );
        assert!(!restored.contains(&e.display().to_string()), "{restored}");
    }
}
